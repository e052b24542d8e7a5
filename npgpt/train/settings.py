"""What a training run is asked to do: :class:`TrainSettings`, its defaults and the resume rules.

A field left ``None`` takes its default in a new run, or the checkpoint's value when resuming:
:meth:`TrainSettings.for_new_run` and :meth:`TrainSettings.for_resume` give the :class:`RunSettings`
the loop runs with, every field filled in.
The run settings (``RUN_DEFAULTS``) decide which numbers the run computes, so a resumed run must
keep them: an explicit different value is refused, as is a model shape (``n_layer``, ...) other
than the checkpoint's. The monitoring settings (``MONITORING_DEFAULTS``)
say how the run is watched and may change on ``resume=True``; so may ``steps``, which then stretches
the cosine schedule to the new end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from ..config import GPT2Config
from ..errors import CheckpointError, NpgptError, is_finite_number, is_integer, shown

SCRATCH = {"n_layer": 6, "n_embd": 384, "n_head": 6, "n_ctx": 256}  # from-scratch default shape, ~30M
MODEL_SHAPE = tuple(SCRATCH)  # the options that give a fresh model's shape (GPT2Config's names)
DEFAULT_STEPS = 1000
TOKENIZERS = ("gpt2", "char")  # GPT-2's BPE; one token per character of the training text
RUN_DEFAULTS: dict[str, Any] = {
    "batch_size": 8,
    "seq_len": None,
    "grad_accum": 1,
    "lr": 3e-4,
    "warmup": None,
    "weight_decay": 0.1,
    "clip": 1.0,
    "seed": 0,
    "val_fraction": 0.1,
}  # seq_len None: min(256, n_ctx); warmup None: min(100, steps // 10)
MONITORING_DEFAULTS: dict[str, Any] = {
    "eval_interval": 100,
    "eval_batches": 8,
    "checkpoint_interval": None,
    "log_interval": 10,
}
POSITIVE = (
    "steps",
    "batch_size",
    "grad_accum",
    "seq_len",
    "eval_interval",
    "eval_batches",
    "checkpoint_interval",
    "log_interval",
    "n_layer",
    "n_embd",
    "n_head",
    "n_ctx",
)
NON_NEGATIVE = ("warmup", "seed")
# The keyword arguments of TrainSettings and train() that messages name as ``seq_len=512`` or ``lower lr=``; the
# ``npgpt train`` options of the same names print them as flags (NpgptError.keywords).
_OPTIONS = ("init", *MODEL_SHAPE, "tokenizer", "steps", *RUN_DEFAULTS, *MONITORING_DEFAULTS, "out", "resume")
KEYWORDS = (*_OPTIONS, "model_parallel")  # train()'s own
# name -> (lowest allowed, whether the lowest itself is allowed): checked finite, too.
FLOAT32_MAX = 3.4028234663852886e38  # np.finfo(np.float32).max
REAL_RANGES = {"lr": (0.0, False), "weight_decay": (0.0, True), "clip": (0.0, False), "val_fraction": (0.0, True)}


@dataclass(frozen=True)
class TrainSettings:
    """One run's settings (see the module docstring for ``None``); checked on construction.

    ``init`` is a checkpoint path or model name to start from; otherwise ``n_layer``, ``n_embd``,
    ``n_head``, ``n_ctx`` give a fresh model's shape (defaults ``SCRATCH``) and ``tokenizer`` its
    vocabulary: ``"gpt2"`` (GPT-2's 50,257 tokens, the default) or ``"char"`` (the characters of
    the training text, :mod:`npgpt.char_tokenizer`).
    One step is one AdamW update on ``grad_accum * batch_size`` windows of ``seq_len`` tokens; the
    learning rate warms up over ``warmup`` steps to ``lr``, then follows a cosine to ``lr / 10``.
    Every ``eval_interval`` steps the loss on the held-out last ``val_fraction`` of the tokens is
    measured (``eval_batches`` batches); for nanoGPT's ``train.bin`` with its ``val.bin`` beside it, on
    ``val.bin`` unless ``val_fraction`` is given (``TrainResult.held_out`` says which); every
    ``checkpoint_interval`` steps (default: ``eval_interval``) and at the end the run folder is updated;
    ``log_interval`` says how often a step is worth a log line (``Progress.log``). Raises NpgptError,
    naming the option, for a count below 1, a negative ``warmup`` or ``seed``, an ``lr`` or ``clip`` that
    is not a finite number above 0, a ``weight_decay`` below 0, a real number past float32's range (the step's), a
    ``val_fraction`` outside [0, 1), a wrong type.
    """

    init: str | Path | None = None
    n_layer: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    n_ctx: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    seq_len: int | None = None
    grad_accum: int | None = None
    lr: float | None = None
    warmup: int | None = None
    weight_decay: float | None = None
    clip: float | None = None
    seed: int | None = None
    val_fraction: float | None = None
    eval_interval: int | None = None
    eval_batches: int | None = None
    checkpoint_interval: int | None = None
    log_interval: int | None = None
    tokenizer: str | None = None

    MUST_MATCH_ON_RESUME: ClassVar[tuple[str, ...]] = (*RUN_DEFAULTS, "tokenizer")
    MAY_CHANGE_ON_RESUME: ClassVar[tuple[str, ...]] = ("steps", *MONITORING_DEFAULTS)

    def __post_init__(self) -> None:
        """Every option checked here, before any work: a wrong type, a count below 1, a negative
        warm-up or seed, a learning rate that is not a positive finite number."""
        # The numbers are judged as SamplingParams judges its own: NumPy's scalars count (np.float32(1e-3) was
        # "lr must be a number") and are kept as Python's; a bool is no number.
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.name in ("init", "tokenizer"):
                continue
            if f.name in REAL_RANGES:
                low, inclusive = REAL_RANGES[f.name]
                if not (is_finite_number(value) and (value >= low if inclusive else value > low)):
                    bound = f"{'at least' if inclusive else 'more than'} {low:g}"
                    raise NpgptError(f"{f.name} must be a finite number {bound}, got {shown(value)}", f.name, KEYWORDS)
                if value > FLOAT32_MAX:  # finite here, inf in the float32 step: the run diverged at its first step
                    raise NpgptError(
                        f"{f.name} must be a number float32 holds (the step computes in float32), at most "
                        f"{FLOAT32_MAX:.4g}, got {shown(value)}",
                        f.name,
                        KEYWORDS,
                    )
                object.__setattr__(self, f.name, float(value))
            elif is_integer(value):
                object.__setattr__(self, f.name, int(value))
            else:
                raise NpgptError(f"{f.name} must be a whole number, got {shown(value)}", f.name, KEYWORDS)
        for name in POSITIVE:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise NpgptError(f"{name} must be at least 1, got {shown(value)}", name, KEYWORDS)
        for name in NON_NEGATIVE:
            value = getattr(self, name)
            if value is not None and value < 0:
                raise NpgptError(f"{name} must be 0 or more, got {shown(value)}", name, KEYWORDS)
        if self.val_fraction is not None and self.val_fraction >= 1:
            raise NpgptError(
                f"val_fraction must be below 1 (the share of tokens held out), got {shown(self.val_fraction)}",
                "val_fraction",
                KEYWORDS,
            )
        if self.tokenizer is not None and self.tokenizer not in TOKENIZERS:
            raise NpgptError(
                f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {shown(self.tokenizer)}", "tokenizer", KEYWORDS
            )

    def model(self, n_vocab: int | None = None) -> tuple[GPT2Config, Any]:
        """The model to train: ``(config, params)`` loaded from ``init``, or a fresh config (of
        ``n_vocab`` tokens if given, else GPT-2's vocabulary) and None."""
        shape = {k: getattr(self, k) for k in MODEL_SHAPE}
        given: dict[str, Any] = {k: v for k, v in shape.items() if v is not None}  # GPT2Config's keyword arguments
        if self.init is not None:
            if given:
                named = ", ".join(f"{k}=" for k in given)
                raise NpgptError(f"pass init= or a model shape ({named}), not both", keywords=KEYWORDS)
            if self.tokenizer not in (None, "gpt2"):
                raise NpgptError(
                    f"tokenizer={shown(self.tokenizer)} is for training from scratch; an init= model keeps its own "
                    "tokenizer",
                    keywords=KEYWORDS,
                )
            from .checkpoint import load_init

            return load_init(self.init)
        if n_vocab is not None:
            given["n_vocab"] = n_vocab
        try:
            return GPT2Config(**{**SCRATCH, **given}), None
        except ValueError as e:
            # GPT2Config names its fields as "n_embd (32)"; here they are this function's keyword arguments, which a
            # message names as "n_embd=32" (the CLI: --n-embd 32)
            message = re.sub(rf"\b({'|'.join(MODEL_SHAPE)}) \(([^()\s]*)\)", r"\1=\2", str(e))
            raise NpgptError(message, keywords=KEYWORDS) from None

    def for_new_run(self, config: GPT2Config) -> RunSettings:
        """Every run and monitoring setting filled in from the defaults, for a run of ``config``."""
        steps = DEFAULT_STEPS if self.steps is None else self.steps
        filled = {
            k: default if getattr(self, k) is None else getattr(self, k)
            for k, default in {**RUN_DEFAULTS, **MONITORING_DEFAULTS}.items()
        }
        filled["seq_len"] = self.seq_len or min(256, config.n_ctx)
        filled["warmup"] = min(100, steps // 10) if self.warmup is None else self.warmup
        init = None if self.init is None else str(self.init)
        return RunSettings(steps=steps, tokenizer=self.tokenizer or "gpt2", **filled, init=init)

    def for_resume(self, saved: dict[str, Any], saved_steps: int, config: GPT2Config) -> RunSettings:
        """The checkpoint's settings (``saved``, from :meth:`to_meta`), with the changes allowed.

        Raises NpgptError naming a run setting, or a dimension of the model (``config``, the
        checkpoint's), given with a value other than the checkpoint's: the same command with
        ``resume=True`` passes, a different shape is never silently trained as the old one.
        CheckpointError if ``saved`` lacks a run setting or holds one that is not valid.
        """
        for key in MODEL_SHAPE:
            given, held = getattr(self, key), getattr(config, key)
            if given is not None and given != held:
                raise NpgptError(
                    f"cannot resume with {key}={given}: the model in out= has {held}; "
                    "pass the same value or start a new run (another out=)",
                    keywords=KEYWORDS,
                )
        saved = {"tokenizer": "gpt2", **saved}  # runs from before the tokenizer choice used GPT-2's
        _check_saved(saved)
        for key in self.MUST_MATCH_ON_RESUME:
            given = getattr(self, key)
            if given is not None and given != saved[key]:
                raise NpgptError(
                    f"cannot resume with {key}={shown(given)}: the run in out= used {shown(saved[key])}; "
                    "pass the same value or start a new run (another out=)",
                    keywords=KEYWORDS,
                )
        monitoring = {
            k: saved.get(k, default) if getattr(self, k) is None else getattr(self, k)
            for k, default in MONITORING_DEFAULTS.items()
        }
        # The model the run started from: a different --init with --resume was silently ignored. Runs
        # saved before it was recorded (no "init" key) cannot tell, and are resumed as before.
        if self.init is not None and "init" in saved and saved["init"] != str(self.init):
            started = "scratch" if saved["init"] is None else f"init={shown(saved['init'])}"
            raise NpgptError(
                f"cannot resume with init={shown(str(self.init))}: the run in out= started from {started}; "
                "pass the same value or start a new run (another out=)",
                keywords=KEYWORDS,
            )
        steps = saved_steps if self.steps is None else self.steps
        return RunSettings(
            steps=steps,
            tokenizer=saved["tokenizer"],
            **{k: saved[k] for k in RUN_DEFAULTS},
            **monitoring,
            init=saved.get("init"),
        )


def _check_saved(saved: dict[str, Any]) -> None:
    """A checkpoint's settings judged as the command line's are (a hand-edited lr of -1, a missing
    batch_size): CheckpointError, not a KeyError or a run on nonsense numbers."""
    # the settings' own names are the checkpoint's keys here, not options: only out= is the user's to change
    damaged = "the training state in out= is damaged: restore it from a backup or start a new run (another out=)"
    if missing := [k for k in RUN_DEFAULTS if saved.get(k) is None]:
        raise CheckpointError(f"its settings lack {', '.join(missing)}; {damaged}", keywords=["out"])
    try:
        TrainSettings(**{k: saved[k] for k in (*RUN_DEFAULTS, *MONITORING_DEFAULTS, "tokenizer") if k in saved})
    except NpgptError as e:
        raise CheckpointError(f"its settings say {e}; {damaged}", keywords=["out"]) from None


@dataclass(frozen=True)
class RunSettings:
    """The settings a run goes by: :class:`TrainSettings` with every default or saved value filled in.

    Made by :meth:`TrainSettings.for_new_run` or :meth:`TrainSettings.for_resume` (from values already
    checked there or in the checkpoint), so no field but ``checkpoint_interval`` is ``None``; that one
    keeps ``None`` for "every ``eval_interval`` steps", as the checkpoint stores it. ``tokenizer`` is
    ``"gpt2"`` or ``"char"``. The fields mean what :class:`TrainSettings`' do.
    """

    steps: int
    batch_size: int
    seq_len: int
    grad_accum: int
    lr: float
    warmup: int
    weight_decay: float
    clip: float
    seed: int
    val_fraction: float
    eval_interval: int
    eval_batches: int
    checkpoint_interval: int | None
    log_interval: int
    tokenizer: str
    init: str | None = None  # the --init the run started from, as given; None: from scratch

    def __post_init__(self) -> None:
        """Refuse a step whose token ids alone outgrow this machine's memory: they are gathered on the host at once
        (``grad_accum`` micro-batches of ``batch_size`` windows of ``seq_len + 1`` ids, int32), so such a run can
        never take a step. ``batch_size=10**20`` ended "internal error: Maximum allowed size exceeded" while the
        held-out windows were laid out, ``10**9`` in minutes of work before it."""
        from ..score import physical_memory

        ids = self.grad_accum * self.batch_size * (self.seq_len + 1)
        memory = physical_memory()
        if memory is not None and ids * 4 > memory:
            raise NpgptError(
                f"a step's batch is {shown(ids)} token ids (grad_accum={self.grad_accum} x batch_size="
                f"{shown(self.batch_size)} windows of seq_len={self.seq_len} + 1), {shown(ids * 4 // 2**30)} GiB as "
                f"int32, more than this machine's {memory // 2**30} GiB of memory; lower batch_size=, grad_accum= or "
                "seq_len=",
                keywords=KEYWORDS,
            )

    def to_meta(self) -> dict[str, Any]:
        """The run and monitoring settings as the checkpoint stores them (JSON-ready)."""
        return {k: getattr(self, k) for k in (*RUN_DEFAULTS, *MONITORING_DEFAULTS, "tokenizer", "init")}
