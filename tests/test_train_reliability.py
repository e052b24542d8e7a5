"""Training at the edges: options checked up front, a diverged run keeps its last good checkpoint,
a checkpoint is one unit whatever write a kill lands after, a full disk, ``--out`` on a file.

Models are tiny (one layer, width 16-32) so each run costs little more than its JIT compile.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

from conftest import run_cli

from npgpt import files
from npgpt.cli.flags import as_flags
from npgpt.config import GPT2Config
from npgpt.errors import NpgptError, NpgptWarning
from npgpt.formats import load_checkpoint, npgpt_format
from npgpt.params import flatten
from npgpt.sampling import SamplingParams
from npgpt.train import data as D
from npgpt.train import loop, start
from npgpt.train.checkpoint import STATE_FILE, load_state, model_step
from npgpt.train.loop import train
from npgpt.train.settings import TrainSettings

RUN = dict(
    n_layer=1,
    n_embd=16,
    n_head=2,
    n_ctx=16,
    steps=4,
    batch_size=2,
    seq_len=8,
    lr=3e-3,
    warmup=1,
    seed=1,
    eval_interval=4,
    checkpoint_interval=2,
    val_fraction=0.2,
)


def corpus() -> str:
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    rng = np.random.default_rng(0)
    return "\n".join(" ".join(rng.choice(words, size=6)) for _ in range(30)) + "\n"


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "t.txt"
    path.write_text(corpus())
    return path


@pytest.fixture(scope="module")
def reference(text, tmp_path_factory):
    """An uninterrupted run's model file."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(text, out, TrainSettings(**RUN))
    return npgpt_format.load(out / npgpt_format.MODEL_FILE)[1]


def assert_same_params(got, want):
    for name, value in flatten(want).items():
        np.testing.assert_array_equal(flatten(got)[name], value, err_msg=name)


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=float("nan")), "lr must be a finite number more than 0, got nan"),
        (dict(lr=-1.0), "lr must be a finite number more than 0, got -1"),
        (dict(lr=0.0), "lr must be"),
        (dict(lr=float("inf")), "lr must be"),
        (dict(warmup=-1), "warmup must be 0 or more, got -1"),
        (dict(seed=-3), "seed must be 0 or more"),
        (dict(steps=0), "steps must be at least 1, got 0"),
        (dict(batch_size=-2), "batch_size must be at least 1"),
        (dict(grad_accum=0), "grad_accum must be at least 1"),
        (dict(seq_len=0), "seq_len must be at least 1"),
        (dict(log_interval=0), "log_interval must be at least 1"),
        (dict(eval_batches=0), "eval_batches must be at least 1"),
        (dict(n_layer=0), "n_layer must be at least 1"),
        (dict(weight_decay=-0.1), "weight_decay must be"),
        (dict(clip=float("nan")), "clip must be"),
        (dict(val_fraction=1.0), "val_fraction must be below 1"),
        (dict(val_fraction=-0.1), "val_fraction must be"),
        (dict(steps=2.5), "steps must be a whole number"),
        (dict(steps=True), "steps must be a whole number, got True"),
        (dict(tokenizer="bpe"), "tokenizer must be one of gpt2, char"),
        (dict(lr=10**400), "lr must be a finite number"),  # an OverflowError before
        # finite in Python, inf in the float32 step: the run took its steps and ended "the loss became nan"
        (dict(lr=1e39), r"lr must be a number float32 holds \(the step computes in float32\), at most 3.403e\+38"),
        (dict(weight_decay=1e300), "weight_decay must be a number float32 holds"),
        (dict(clip=10**39), "clip must be a number float32 holds"),
        (dict(steps=np.float64(2.5)), "steps must be a whole number"),
        (dict(steps=np.True_), "steps must be a whole number"),
        (dict(lr="0.1"), "lr must be a finite number more than 0, got '0.1'"),
    ],
)
def test_nonsense_options_are_refused_on_construction(kwargs, message):
    with pytest.raises(NpgptError, match=message) as err:
        TrainSettings(**kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda v: TrainSettings(lr=v),
        lambda v: TrainSettings(steps=-v),
        lambda v: TrainSettings(n_layer=[v]),
        lambda v: SamplingParams(top_p=v),
        lambda v: SamplingParams(max_new_tokens=-v),
        lambda v: GPT2Config(n_embd=-v),
        lambda v: GPT2Config(n_embd=v + 1, n_head=2),
    ],
)
def test_a_huge_integer_is_named_not_printed(make):
    """TrainSettings(lr=10**5000) crashed writing its own error: str() of an int past 4300 digits is Python's
    ValueError "Exceeds the limit ... for integer string conversion". Such a number is now named by its length."""
    with pytest.raises(ValueError) as err:
        make(10**5000)
    assert "5001-digit" in str(err.value) or "too large to show" in str(err.value)
    assert "integer string conversion" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("value", [3, np.int64(3), 2.5, np.float32(2.5), 10**400, True, np.True_, "3", float("nan")])
def test_training_and_sampling_agree_on_what_a_number_is(value):
    """TrainSettings had its own twin of sampling's number checks; both now judge with errors.is_integer and
    is_finite_number, so a value passes as a count, or as a rate, in both or in neither."""
    from npgpt.sampling import SamplingParams

    def accepts(make):
        try:
            make()
        except NpgptError:
            return False
        return True

    assert accepts(lambda: TrainSettings(seed=value)) == accepts(lambda: SamplingParams(seed=value))
    rate_ok = accepts(lambda: SamplingParams(temperature=value))
    assert accepts(lambda: TrainSettings(clip=value)) == (rate_ok and value > 0)


def test_numpy_scalars_are_numbers():
    """np.float32(1e-3) was refused as "lr must be a number"; NumPy's scalars are stored as Python's."""
    s = TrainSettings(lr=np.float32(0.5), steps=np.int64(3), val_fraction=np.float64(0.2))
    assert (s.lr, s.steps, s.val_fraction) == (0.5, 3, 0.2)
    assert type(s.lr) is float and type(s.steps) is int


def test_cli_refuses_bad_options_and_an_out_that_is_a_file(text, tmp_path):
    for args, message in [
        (["--lr", "nan"], "lr must be a finite number"),
        (["--warmup", "-1"], "warmup must be"),
        (["--steps", "0"], "steps must be at least 1"),
    ]:
        r = run_cli("train", str(text), "--out", str(tmp_path / "run"), *args)
        assert r.returncode == 1 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_cli("train", str(text), "--out", str(text), "--n-layer", "1", "--n-embd", "16", "--n-head", "2")
    assert r.returncode == 1 and "is a file" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "run").exists()  # refused before any work


@pytest.mark.parametrize("resume", [False, True])
def test_a_model_in_out_that_no_run_wrote_is_not_overwritten(text, tmp_path, resume):
    """npgpt convert bundled conv/model.safetensors, then npgpt train t.txt --out conv --init conv: the first
    checkpoint silently replaced the converted model (or a downloaded one, --out ~/.cache/npgpt/124M) with the
    fine-tune. A run folder is refused as out= without resume; a model without a run is now refused too."""
    from npgpt.formats import save_checkpoint
    from npgpt.params import init_params

    out = tmp_path / "conv"
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, n_ctx=16, n_vocab=50257)
    model = save_checkpoint(out / "model.safetensors", config, init_params(config))
    before = model.read_bytes()
    settings = {k: v for k, v in RUN.items() if k not in ("n_layer", "n_embd", "n_head", "n_ctx")}
    with pytest.raises(NpgptError) as e:
        train(text, out, TrainSettings(**settings, init=str(out)), resume=resume)
    assert f"{out} holds a model (model.safetensors) that no training run wrote" in str(e.value), str(e.value)
    assert f"choose another --out (the run can start from that model: --init {out})" in as_flags(e.value)
    assert model.read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["model.safetensors"]


@pytest.mark.parametrize("content", [b"", b"\xff\xfe not text", b"alpha beta"])
def test_a_run_refused_for_its_text_leaves_no_folder_behind(tmp_path, content):
    """Empty text, text that is not UTF-8, text too short for --seq-len: the --out folder the run
    made for itself was left behind, empty or holding only the token cache."""
    data = tmp_path / "t.txt"
    data.write_bytes(content)
    with pytest.raises(NpgptError):
        train(data, tmp_path / "new" / "run", TrainSettings(**RUN))
    assert not (tmp_path / "new").exists()  # nor the parent folder it made for it
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("keep")
    with pytest.raises(NpgptError):
        train(data, kept, TrainSettings(**RUN))
    assert (kept / "notes.txt").read_text() == "keep"  # a folder that was there stays


def test_a_one_step_run_reports_its_rate(text, tmp_path):
    """The rate is the median over the steps after the first (which compiles); with one step there
    are none, and `npgpt train --steps 1` ended on "0 tokens/s"."""
    result = train(text, tmp_path / "run", TrainSettings(**{**RUN, "steps": 1}))
    assert result.step == 1 and result.tokens_per_s > 0


def test_resuming_with_steps_not_above_the_step_reached_says_so(text, tmp_path):
    """`--resume --steps 2` on a run at step 4 did nothing and reported it as done; the same command
    once the run had finished printed its last loss at "0 tokens/s"."""
    out = tmp_path / "run"
    train(text, out, TrainSettings(**RUN))
    with pytest.raises(NpgptError, match="already at step 4; give steps= above that"):
        train(text, out, TrainSettings(steps=2), resume=True)
    args = ["train", str(text), "--out", str(out), "--resume"]
    r = run_cli(*args)
    assert r.returncode == 0 and "already reached step 4 of 4; nothing to do" in r.stdout, r.stdout + r.stderr
    assert "tokens/s" not in r.stdout
    r = run_cli(*args, "--steps", "3")
    assert r.returncode == 1 and r.stderr.strip().endswith("give --steps above that to train on"), r.stderr


# --- divergence ----------------------------------------------------------------------------


@pytest.mark.parametrize("poison", ["loss", "params", "opt_state"])
def test_a_non_finite_step_stops_the_run_and_keeps_the_last_good_checkpoint(text, tmp_path, monkeypatch, poison):
    """A NaN injected after step 3 (in the loss, or only in the weights with a finite loss): the
    run ends with one NpgptError, and the checkpoint of step 2 stays as it was."""
    import jax

    real = loop.make_train_step

    def poisoned(*args, **kwargs):
        step_fn, calls = real(*args, **kwargs), []

        def step(params, opt_state, batch):
            params, opt_state, metrics = step_fn(params, opt_state, batch)
            calls.append(1)
            if len(calls) == 3 and poison == "opt_state":  # AdamW's moments only (the gradient squared overflows)
                opt_state = jax.tree.map(lambda x: x * np.inf if x.dtype.kind == "f" else x, opt_state)
            elif len(calls) == 3:
                params = {**params, "wte": params["wte"] * np.nan}
                if poison == "loss":
                    metrics = {**metrics, "loss": metrics["loss"] * np.nan}
            return params, opt_state, metrics

        return step

    monkeypatch.setattr(loop, "make_train_step", poisoned)
    out = tmp_path / "run"
    settings = TrainSettings(**{**RUN, "steps": 6, "checkpoint_interval": 1 if poison != "loss" else 2})
    with pytest.raises(NpgptError, match="step 3") as err:
        train(text, out, settings)
    assert "\n" not in str(err.value) and "kept" in str(err.value)
    assert load_state(out / STATE_FILE)[3]["step"] == 2 and model_step(out) == 2
    load_checkpoint(out)  # finite: refuses NaN weights


def test_a_diverging_learning_rate_ends_with_one_line_and_no_nan_model(text, tmp_path):
    out = tmp_path / "run"
    r = run_cli(
        "train",
        str(text),
        "--out",
        str(out),
        "--n-layer",
        "1",
        "--n-embd",
        "16",
        "--n-head",
        "2",
        "--n-ctx",
        "16",
        "--seq-len",
        "8",
        "--batch-size",
        "2",
        "--steps",
        "30",
        "--lr",
        "1e6",
        "--warmup",
        "0",
        "--eval-interval",
        "1",
    )
    assert r.returncode == 1 and "diverged" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    if (out / npgpt_format.MODEL_FILE).exists():
        load_checkpoint(out)  # whatever was saved is finite


@pytest.mark.parametrize(
    "change, advice",
    [
        ({"weight_decay": 1e30}, "lower weight_decay= or lr=: with weight_decay=1e+30 and lr=0.003 the decay"),
        ({"lr": 1e30, "weight_decay": 0.0}, "lower lr= (or warmup= more steps)"),
    ],
)
def test_a_diverged_run_names_what_made_it_diverge(text, tmp_path, change, advice):
    """A decay that flips the weights' sign each step (lr x weight_decay >= 1) diverged with the advice
    to lower --lr alone, where --weight-decay was what the user had set too high."""
    with pytest.raises(NpgptError, match="the run diverged") as e:
        train(text, tmp_path / "run", TrainSettings(**{**RUN, **change}))
    assert advice in str(e.value) and "\n" not in str(e.value), str(e.value)


# --- a checkpoint is one unit --------------------------------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: nothing in npgpt catches it."""


def count_writes(text, tmp_path) -> list[str]:
    names: list[str] = []
    real = files.publish

    def publish(tmp, path):
        real(tmp, path)
        names.append(Path(path).name)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(files, "publish", publish)
        train(text, tmp_path / "count", TrainSettings(**RUN))
    return names


@pytest.mark.slow
def test_a_kill_after_any_write_resumes_to_the_uninterrupted_model(text, reference, tmp_path, monkeypatch):
    """Kill the run right after each file it writes (tokens, state, model, plot, at every
    checkpoint), then ``--resume``: the model is always the uninterrupted run's, never a stale one."""
    writes = count_writes(text, tmp_path)
    assert writes.count(STATE_FILE) == 2 and writes.count(npgpt_format.MODEL_FILE) == 2
    real = files.publish
    for k, name in enumerate(writes):
        out = tmp_path / f"kill{k}"
        done = []

        def publish(tmp, path, k=k, done=done):
            real(tmp, path)
            done.append(path)
            if len(done) == k + 1:
                raise Killed

        monkeypatch.setattr(files, "publish", publish)
        with pytest.raises(Killed):
            train(text, out, TrainSettings(**RUN))
        monkeypatch.setattr(files, "publish", real)
        result = train(text, out, TrainSettings(**RUN), resume=True)  # killed before any state: starts afresh
        assert result.step == RUN["steps"], (k, name)
        assert model_step(out) == RUN["steps"], (k, name)
        assert_same_params(npgpt_format.load(out / npgpt_format.MODEL_FILE)[1], reference)


def test_resume_rewrites_a_model_left_behind_by_a_kill(text, reference, tmp_path, monkeypatch):
    """The case of issue 17: killed between the final state and the final model; ``--resume``
    has no step left to run, and still ends with the final model, not the stale one."""
    out = tmp_path / "run"
    real, done = npgpt_format.save, []

    def save(*args, **kwargs):
        done.append(1)
        if len(done) == 2:  # the second checkpoint's model: its state (step 4) is already written
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(npgpt_format, "save", save)
    with pytest.raises(Killed):
        train(text, out, TrainSettings(**RUN))
    monkeypatch.setattr(npgpt_format, "save", real)
    assert load_state(out / STATE_FILE)[3]["step"] == 4 and model_step(out) == 2  # stale
    result = train(text, out, resume=True)
    assert result.step == 4 and model_step(out) == 4
    assert_same_params(npgpt_format.load(out / npgpt_format.MODEL_FILE)[1], reference)


# --- a full disk ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):  # a 2 MiB tmpfs
    from conftest import small_disk

    with small_disk(tmp_path / "disk", "2m") as mnt:
        yield mnt


def test_a_checkpoint_onto_a_full_disk_is_one_line_and_keeps_the_previous_one(text, small_disk):
    out = small_disk / "run"
    train(text, out, TrainSettings(**{**RUN, "steps": 2, "tokenizer": "char"}))  # small files: 32 characters
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    free = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 4096))  # leave one page
    r = run_cli("train", str(text), "--out", str(out), "--resume", "--steps", "4")
    assert r.returncode == 1, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "No space left on device" in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # intact, and no temp file left
    assert load_state(out / STATE_FILE)[3]["step"] == 2 and model_step(out) == 2


def test_a_resume_in_a_read_only_folder_is_refused_before_its_first_step(text, small_disk):
    """train(resume=True) on a run in a read-only folder (a mounted backup, a shared read-only disk) trained up to
    its first checkpoint (checkpoint_interval steps: hours for a large run) and only then said 'cannot write
    run/train_state.safetensors: read-only file system'; the npgpt train command checked first, the library did not.
    The start now checks that the run's folder can be written, before any step, and says how to go on."""
    import subprocess

    out = small_disk / "run"
    train(text, out, TrainSettings(**{**RUN, "steps": 2, "tokenizer": "char"}))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    steps = []
    with pytest.raises(NpgptError) as e:
        train(text, out, TrainSettings(steps=4), resume=True, progress=steps.append)
    assert steps == []
    assert str(e.value) == (
        f"cannot write {out / STATE_FILE}: read-only file system; copy the run to a folder you can write to"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# --- a damaged training state --------------------------------------------------------------


def saved_state(path: Path, **changes) -> Path:
    """A training state as a run of RUN writes it (no optimiser leaves: they are checked later),
    its JSON metadata changed by ``changes`` (None deletes an entry; ``raw`` replaces the whole)."""
    from npgpt.params import init_params
    from npgpt.train.checkpoint import save_state

    config = GPT2Config(n_vocab=40, n_ctx=16, n_embd=16, n_head=2, n_layer=1)
    meta = {
        "step": 2,
        "steps": 4,
        "history": {"step": [1, 2], "loss": [3.0, 2.9], "val_step": [], "val_loss": []},
        "rng": np.random.default_rng([1, 1]).bit_generator.state,
        "settings": TrainSettings(**RUN).for_new_run(config).to_meta(),
        "config": config.to_dict(),
        "tokenizer": None,
    }
    for key, value in changes.items():
        if key == "raw":
            continue
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    save_state(path, init_params(config, 0), [], meta)
    if "raw" in changes:  # the metadata itself replaced
        from safetensors.numpy import load_file, save_file

        save_file(load_file(path), path, metadata={"format": "npgpt-train-state-v1", "meta": changes["raw"]})
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(raw="{not json"), "its metadata is missing or not a JSON object"),
        (dict(raw="[" * 100_000), "its metadata is missing or not a JSON object"),  # deeper than the parser recurses
        (dict(rng=None), "'rng' is missing"),
        (dict(rng={"bit_generator": "MT19937"}), "'rng' is not the state of the batch random generator"),
        (dict(step="2"), "'step' is missing or not a whole number"),
        (dict(step=9), "step 9 is not between 0 and its steps"),
        (dict(history={"step": []}), "'history' is missing or lacks"),
        (dict(config={"n_layer": "one"}), "n_layer"),
        (dict(tokenizer="abc"), "'tokenizer' is neither null nor a tokenizer npgpt reads"),
        (dict(tokenizer={"type": "gpt2", "added_tokens": [], "eos_token_id": [10**6]}), "'tokenizer' is neither"),
    ],
)
def test_a_damaged_training_state_is_named_before_the_run(tmp_path, changes, message):
    path = saved_state(tmp_path / STATE_FILE, **changes)
    with pytest.raises(NpgptError, match="training state is damaged: restore it from a backup") as e:
        load_state(path)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lr": -1}, "its settings say lr must be a finite number more than 0, got -1"),
        ({"batch_size": None}, "its settings lack batch_size"),
        ({"seq_len": 2.5}, "its settings say seq_len must be a whole number"),
    ],
)
def test_damaged_saved_settings_are_named_on_resume(changes, message):
    """A hand-edited lr of -1 was trained with; a missing one was a KeyError."""
    config = GPT2Config(n_vocab=40, n_ctx=16, n_embd=16, n_head=2, n_layer=1)
    saved = {**TrainSettings(**RUN).for_new_run(config).to_meta(), **changes}
    saved = {k: v for k, v in saved.items() if v is not None}
    with pytest.raises(NpgptError, match="training state in out= is damaged: restore it from a backup") as e:
        TrainSettings().for_resume(saved, 4, config)
    assert str(e.value).startswith(message)


def test_a_state_of_another_npgpt_version_is_not_called_garbage_to_delete(tmp_path):
    """A training state of a newer format was called "not an npgpt training state; delete it": a user who did
    would lose a sound run. It names the format and says to resume with the npgpt that wrote it."""
    from safetensors.numpy import load_file, safe_open, save_file

    path = saved_state(tmp_path / STATE_FILE)
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
    for fmt, said in [
        ("npgpt-train-state-v2", "format 'npgpt-train-state-v2', which this npgpt"),
        ("other", "move it away"),
    ]:
        save_file(load_file(path), path, metadata={**meta, "format": fmt})
        with pytest.raises(NpgptError, match=said) as e:
            load_state(path)
        assert "delete" not in str(e.value) and "\n" not in str(e.value)


def test_a_sound_training_state_loads_and_a_truncated_one_says_how_to_recover(tmp_path):
    path = saved_state(tmp_path / STATE_FILE)
    assert load_state(path)[3]["step"] == 2
    path.write_bytes(path.read_bytes()[:-100])
    restore = r"restore it from a backup or start a new run \(another out=\)$"
    with pytest.raises(NpgptError, match=rf"truncated .*; {restore}") as e:
        load_state(path)
    assert as_flags(e.value).endswith("start a new run (another --out)")  # the CLI's user gave --out


# --- out of memory -------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["step", "eval"])
def test_running_out_of_memory_is_one_line_naming_the_batch(text, tmp_path, monkeypatch, where):
    import jax

    oom = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 44224002372 bytes.")

    def failing(*args, **kwargs):
        def run(*a):
            raise oom

        return run

    monkeypatch.setattr(loop, "make_train_step" if where == "step" else "make_eval_loss", failing)
    out = tmp_path / "run"
    with pytest.raises(NpgptError) as e:
        train(text, out, TrainSettings(**RUN))
    message = str(e.value)
    step = 1 if where == "step" else RUN["eval_interval"]
    assert message.startswith(f"out of memory at step {step} (Out of memory allocating 44224002372 bytes) ")
    assert "batch_size=2 and seq_len=8" in message and "lower batch_size=" in message, message
    kept = "no checkpoint was written" if where == "step" else "the checkpoint of step 2 is kept"
    assert kept in message and "\n" not in message


@pytest.mark.parametrize("where", ["init", "place"])
def test_a_model_too_large_for_memory_is_one_line_naming_its_size(text, tmp_path, monkeypatch, where):
    """npgpt train --n-embd 200000 (from scratch) said "internal error: out of memory (Unable to allocate 37.4 GiB
    ...)": making the random weights, or placing them and AdamW's moments on the devices, ran out of memory
    outside the steps' check. One line now names the model's size and what to lower; no run folder is left."""
    import jax

    if where == "init":
        error: Exception = MemoryError("Unable to allocate 37.4 GiB for an array with shape (50257, 200000)")
        target, name = start, "init_params"
    else:
        error = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 44224002372 bytes.")
        target, name = loop.S, "shard_params"

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(target, name, failing)
    out = tmp_path / "run"
    with pytest.raises(NpgptError) as e:
        train(text, out, TrainSettings(**RUN))
    message = str(e.value)
    detail = str(error).removeprefix("RESOURCE_EXHAUSTED: ").rstrip(".")
    assert message.startswith(f"out of memory for the model ({detail}): "), message
    assert "parameters are" in message and message.endswith("lower n_embd= or n_layer=") and "\n" not in message
    assert "--n-embd" in as_flags(e.value) and not out.exists()


def test_held_out_text_too_short_for_one_window_is_said_not_silent(text, tmp_path):
    """--val-fraction held out a few tokens, fewer than one window: no held-out loss was ever computed and
    nothing said so. The result says why, and the CLI's last line does."""
    result = train(text, tmp_path / "a", TrainSettings(**{**RUN, "val_fraction": 0.02}))
    assert result.history["val_loss"] == [] and result.no_held_out_loss is not None
    assert "no held-out loss" in result.no_held_out_loss and "seq_len=8 + 1" in result.no_held_out_loss
    assert train(text, tmp_path / "b", TrainSettings(**RUN)).no_held_out_loss is None  # scored: nothing to say
    args = ["--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--n-ctx", "16", "--seq-len", "8"]
    r = run_cli("train", str(text), "--out", str(tmp_path / "c"), *args, "--steps", "2", "--val-fraction", "0.02")
    assert r.returncode == 0, r.stderr
    assert "no held-out loss: the held-out" in r.stdout.strip().splitlines()[-1] and "raise --val-fraction" in r.stdout


def test_resume_with_another_init_is_refused_not_ignored(text, tmp_path):
    """``--resume`` with an --init other than the run's was silently ignored (the run went on from its
    own checkpoint): now refused naming both, as other settings are; the same --init still resumes."""
    scratch = tmp_path / "scratch"
    train(text, scratch, TrainSettings(**{**RUN, "steps": 2}))
    init = str(scratch / "model.safetensors")
    tuned = tmp_path / "tuned"
    run = {k: v for k, v in RUN.items() if k not in ("n_layer", "n_embd", "n_head", "n_ctx")}
    train(text, tuned, TrainSettings(**{**run, "steps": 2}, init=init))
    assert train(text, tuned, TrainSettings(init=init, steps=3), resume=True).step == 3  # the same command
    with pytest.raises(
        NpgptError, match=rf"cannot resume with init='gpt2': the run in out= started from init={re.escape(repr(init))}"
    ):
        train(text, tuned, TrainSettings(init="gpt2", steps=4), resume=True)
    with pytest.raises(NpgptError, match=r"started from scratch; pass the same value or start a new run \(another"):
        train(text, scratch, TrainSettings(init=init, steps=4), resume=True)


def test_a_batch_too_large_for_the_host_names_grad_accum_too(text, tmp_path, monkeypatch):
    """--grad-accum multiplies what a step holds on the host at once: a batch of 2 x 10**10 windows is
    refused in one line naming all three sizes (the advice was to raise --grad-accum). Where the system does not
    say its memory (no up-front check), the step's MemoryError."""
    import npgpt.score

    monkeypatch.setattr(npgpt.score, "physical_memory", lambda: None)
    with pytest.raises(NpgptError) as e:
        train(text, tmp_path / "run", TrainSettings(**{**RUN, "grad_accum": 10**10}))
    message = str(e.value)
    assert message.startswith("out of memory at step 1 ") and "\n" not in message
    assert "batch_size=2, grad_accum=10000000000 and seq_len=8" in message
    assert "lower batch_size=, grad_accum= or seq_len=" in message, message


@pytest.mark.parametrize("sizes", [dict(batch_size=10**20), dict(batch_size=10**8), dict(grad_accum=10**8)])
def test_a_batch_no_memory_holds_is_refused_before_any_work(text, tmp_path, monkeypatch, sizes):
    """batch_size=10**20 ended "internal error: Maximum allowed size exceeded" (laying out the held-out windows),
    10**9 in minutes of work before a MemoryError: a step's token ids alone past the machine's memory are refused
    at the start, in one line naming the sizes, with no folder left behind."""
    import npgpt.score

    monkeypatch.setattr(npgpt.score, "physical_memory", lambda: 2**30)  # 1 GiB: the same on every machine
    with pytest.raises(NpgptError, match=r"^a step's batch is \d+ token ids \(grad_accum=") as e:
        train(text, tmp_path / "run", TrainSettings(**{**RUN, **sizes}))
    assert "more than this machine's 1 GiB of memory; lower batch_size=, grad_accum= or seq_len=" in str(e.value)
    assert as_flags(e.value).endswith("lower --batch-size, --grad-accum or --seq-len")
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()


def test_a_batch_is_its_windows_in_order():
    """random_batch's one gather gives each row the seq_len + 1 tokens from its random start."""
    tokens = np.arange(100, dtype=np.uint16) * 3
    rng = np.random.default_rng(0)
    starts = np.random.default_rng(0).integers(0, 100 - 4, size=(2, 3))
    batch = D.random_batch(tokens, (2, 3), 4, rng)
    assert batch.shape == (2, 3, 5) and batch.dtype == np.int32
    assert (batch == (starts[..., None] + np.arange(5)) * 3).all()


def test_held_out_windows_are_gathered_a_batch_at_a_time_not_laid_out_first():
    """A batch that fits memory but is huge (batch_size=250000 of seq_len 8, on 2M held-out tokens) laid out its
    held-out windows one by one in a Python loop, seconds before the first step (and before that step's own
    out-of-memory line), and held all eight batches (eval_batches) at once. Only the starts are laid out now; each
    batch is one gather when it is scored, its windows the same evenly spaced ones."""

    class Counted(np.ndarray):
        gathers = 0

        def __getitem__(self, key):
            type(self).gathers += 1
            return super().__getitem__(key)

    tokens = (np.arange(1000, dtype=np.uint16) * 7).view(Counted)
    windows = D.eval_windows(tokens, batch_size=4, seq_len=9, n_batches=3)
    assert Counted.gathers == 0 and len(windows) == 3 and windows.shape == (3, 4, 10)
    batches = list(windows)
    assert Counted.gathers == 3  # one gather a batch
    starts = np.linspace(0, 1000 - 9 - 1, 12).astype(np.int64).reshape(3, 4)
    for batch, first in zip(batches, starts, strict=True):
        assert batch.shape == (4, 10) and batch.dtype == np.int32
        assert (batch == (first[:, None] + np.arange(10)) * 7).all()


def test_another_xla_error_is_not_called_out_of_memory(text, tmp_path, monkeypatch):
    import jax

    def failing(*args, **kwargs):
        def run(*a):
            raise jax.errors.JaxRuntimeError("INTERNAL: something else")

        return run

    monkeypatch.setattr(loop, "make_train_step", failing)
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        train(text, tmp_path / "run", TrainSettings(**RUN))


# --- the run folder inside the text folder -------------------------------------------------


@pytest.mark.parametrize("tokenizer", ["gpt2", "char"])
def test_a_run_folder_inside_the_text_folder_is_not_read_as_text(tmp_path, tokenizer):
    """``npgpt train data --out data/run``: resuming read data/run/loss.png as text ("not UTF-8")."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "t.txt").write_text(corpus())
    settings = TrainSettings(**{**RUN, "tokenizer": tokenizer})
    train(data, data / "run", settings, stop_after=2)
    assert train(data, data / "run", settings, resume=True).step == 4
    (data / "run2").mkdir()
    (data / "run2" / "notes.txt").write_text("x")  # another folder in the text still is text
    assert [p.name for p in D.text_files(data, data / "run")] == ["notes.txt", "t.txt"]


@pytest.mark.parametrize("tokenizer", ["gpt2", "char"])
def test_a_run_whose_folder_is_the_text_folder_resumes_on_the_same_text(tmp_path, reference, tokenizer):
    """``npgpt train data --out data``: the first run read data's text, and its resume read the run's own files as
    text ("data/tokens.bin is a token file, not text ...; move it out of the folder", the model and state next):
    a run could never be resumed. The run's own files are no text; the resumed run's model is an uninterrupted
    one's, and other files in the folder still are text."""
    from npgpt.train.checkpoint import PLOT_FILE

    data = tmp_path / "data"
    data.mkdir()
    (data / "t.txt").write_text(corpus())
    settings = TrainSettings(**{**RUN, "tokenizer": tokenizer})
    train(data, data, settings, stop_after=2)
    result = train(data, data, settings, resume=True)
    assert result.step == 4
    if tokenizer == "gpt2":  # a folder of one text is that text's tokens: the reference run's model
        assert_same_params(result.params, reference)
    assert {STATE_FILE, PLOT_FILE, npgpt_format.MODEL_FILE} <= set(D.RUN_FILES)
    (data / "notes.txt").write_text("x")
    assert [p.name for p in D.text_files(data, data)] == ["notes.txt", "t.txt"]


def test_resume_in_a_folder_of_another_trainers_checkpoint_is_refused_not_a_fresh_start(text, tmp_path):
    """nanoGPT resumes from its out_dir's ckpt.pt (init_from='resume'); `npgpt train data --out out-dir --resume` on
    such a folder found no npgpt state and trained a fresh model from scratch beside ckpt.pt, exit 0. A folder
    holding another trainer's model is now refused in one line naming it and the way on from its weights (init=);
    nothing is written, and an empty folder still starts fresh (one command survives restarts)."""
    import shutil

    out = tmp_path / "out-shakespeare"
    out.mkdir()
    shutil.copy(Path(__file__).parent / "fixtures" / "nanogpt_nobias" / "ckpt.pt", out)
    with pytest.raises(NpgptError) as e:
        train(text, out, TrainSettings(**RUN), resume=True)
    assert str(e.value).startswith(
        f"{out} holds nanoGPT's checkpoint (ckpt.pt), not an npgpt training state, so there is no npgpt run to resume;"
    )
    assert as_flags(e.value).endswith(f"train on from its weights as a new run: --init {out} with another --out")
    assert [p.name for p in out.iterdir()] == ["ckpt.pt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train(text, empty, TrainSettings(**{**RUN, "steps": 1}), resume=True).step == 1


# --- one run per folder ----------------------------------------------------------------------


def test_a_second_run_into_the_same_out_is_refused_while_the_first_runs(text, tmp_path):
    """Two `npgpt train --out run` at once both trained and wrote run/'s checkpoints over each other's, each
    exit 0. The run holds a lock on its folder: the second is one line, and writes nothing."""
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # flock locks belong to the open file, so this "is" another process
        with pytest.raises(NpgptError, match="another training run is writing to") as e:
            train(text, out, TrainSettings(**RUN))
        assert "--out" in as_flags(e.value) and "\n" not in str(e.value)
        with pytest.raises(NpgptError, match="another training run is writing to"):
            train(text, out, TrainSettings(**RUN), resume=True)
        r = run_cli("train", str(text), "--out", str(out), "--n-layer", "1", "--n-embd", "16", "--n-head", "2")
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "another training run is writing to" in r.stderr and "--out" in r.stderr
    finally:
        os.close(fd)
    assert list(out.iterdir()) == []
    train(text, out, TrainSettings(**RUN))  # the lock is the run's: free again once it ended
    assert (out / STATE_FILE).is_file()


@pytest.mark.parametrize("where", ["params.wte", "opt.00001"])
def test_a_training_state_holding_nan_is_refused_on_resume_not_called_a_divergence(text, tmp_path, where):
    """A NaN in the saved state (a flipped bit, a damaged disk) loaded, and the resumed run's next step said "the
    loss became nan at step 3: the run diverged; lower --lr": the advice to change a setting that was never wrong.
    It is refused on resume, naming the tensor, as damage to restore."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from npgpt.errors import CheckpointError

    out = tmp_path / "run"
    train(text, out, TrainSettings(**RUN), stop_after=2)
    path = out / STATE_FILE
    with safe_open(str(path), framework="numpy") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    assert tensors[where].dtype == np.float32 and tensors[where].size > 1
    tensors[where] = tensors[where].copy()
    tensors[where].reshape(-1)[1] = np.nan
    save_file(tensors, path, metadata=metadata)
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as e:
        train(text, out, TrainSettings(**RUN), resume=True)
    said = str(e.value)
    assert f"tensor {where!r} holds NaN or infinite values" in said and "restore it from a backup" in said, said
    assert "diverged" not in said and "\n" not in said and "--out" in as_flags(e.value)
    assert path.read_bytes() == before and model_step(out) == 2


@pytest.mark.parametrize("damage", ["truncated", "header-only"])
def test_a_resume_repairs_a_damaged_model_of_the_same_step(text, tmp_path, reference, damage):
    """The model file cut short (a copy or a disk that failed) while the training state was whole: the resume
    checked only the step in its header, said "already reached step 4 of 4; nothing to do; model in
    run/model.safetensors", and that model did not load ("truncated; re-download or re-convert it")."""
    out = tmp_path / "run"
    train(text, out, TrainSettings(**RUN))
    model = out / npgpt_format.MODEL_FILE
    data = model.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    model.write_bytes(data[: len(data) - 100] if damage == "truncated" else data[:header_end])
    result = train(text, out, TrainSettings(**RUN), resume=True)
    assert result.step == RUN["steps"] and not result.tokens_per_s  # nothing trained, the model rewritten
    assert_same_params(load_checkpoint(out)[1], reference)


# --- non-essential writes ------------------------------------------------------------------


def test_a_loss_plot_that_cannot_be_written_warns_and_the_run_goes_on(text, tmp_path, reference):
    """``loss.png`` is a picture of what the state holds: a failed write of it (here a folder in its place; a full
    disk likewise) stopped the run after its state and model were saved. It is now one warning line, and the run
    ends as an uninterrupted one."""
    out = tmp_path / "run"
    (out / "loss.png").mkdir(parents=True)
    with pytest.warns(NpgptWarning, match=r"loss\.png: it is a directory.*the run goes on") as caught:
        result = train(text, out, TrainSettings(**RUN))
    assert result.step == RUN["steps"] and all("\n" not in str(w.message) for w in caught)
    assert_same_params(npgpt_format.load(out / npgpt_format.MODEL_FILE)[1], reference)
    r = run_cli("train", str(text), "--out", str(out), "--resume", "--steps", "6")
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "loss.png" in line]
    assert warned and all(line.startswith("warning: cannot write") for line in warned), r.stderr
    assert "Traceback" not in r.stderr and model_step(out) == 6


@pytest.mark.parametrize("where", ["params.wte", "opt.00001", "meta"])
def test_a_flipped_bit_that_leaves_values_finite_is_refused_on_resume(tmp_path, where):
    """A bit flipped in the saved state (a disk or memory fault) that leaves every value finite loaded, and the run
    went on from a weight that was never trained: each tensor and the metadata are checked against the CRC-32 they
    were written with, and the damage is named in one line."""
    from npgpt.errors import CheckpointError

    path = saved_state(tmp_path / STATE_FILE)
    header, n, _ = npgpt_format.read_header(path)
    data = bytearray(path.read_bytes())
    if where == "meta":  # a digit of the loss history: still JSON, still a number
        at = data.index(b"2.9", 8, 8 + n) + 2
        data[at] ^= 0x01  # "9" -> "8"
    else:
        if where.startswith("opt."):  # saved_state writes no optimiser leaves: add one
            from npgpt.train.checkpoint import save_state

            config, params, _, meta = load_state(path)
            save_state(path, params, [np.zeros(3, np.int32), np.full(5, 0.5, np.float32)], meta)
            header, n, _ = npgpt_format.read_header(path)
            data = bytearray(path.read_bytes())
        data[8 + n + header[where]["data_offsets"][0] + 4] ^= 0x01  # the lowest bit of a mantissa
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        load_state(path)
    said = str(e.value)
    what = "its metadata" if where == "meta" else f"tensor {where!r}"
    assert f"{what} does not match the checksum it was written with" in said and "restore it from a backup" in said
    assert "\n" not in said


def test_a_state_written_before_checksums_still_loads(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    path = saved_state(tmp_path / STATE_FILE)
    with safe_open(str(path), framework="numpy") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    assert "crc32" in metadata
    save_file(tensors, path, metadata={k: v for k, v in metadata.items() if k != "crc32"})
    assert load_state(path)[3]["step"] == 2
    save_file(tensors, path, metadata={**metadata, "crc32": "[1, 2]"})
    with pytest.raises(NpgptError, match="its checksums .* are damaged"):
        load_state(path)


def test_a_model_replaced_while_it_is_read_is_read_whole_from_one_file(tmp_path, monkeypatch):
    """``npgpt generate --model run/`` while ``npgpt train --out run`` checkpoints: the reader took the header from
    the file of step 99 and the data from the file of step 100 that a checkpoint renamed over it meanwhile, whose
    header is a byte longer, so every weight was read one byte off: finite garbage, loaded and generated from.
    A file replaced during the read is read again, header and data from the one file."""
    from npgpt.params import init_params

    config = GPT2Config(n_vocab=40, n_ctx=16, n_embd=16, n_head=2, n_layer=1)
    old, new = init_params(config, 0), init_params(config, 1)
    path = tmp_path / npgpt_format.MODEL_FILE
    npgpt_format.save(path, config, old, metadata={"step": "99"})
    validate, replaced = npgpt_format._validate, []

    def checkpoint_meanwhile(*args):
        if not replaced:  # after the header was read, before the data is mapped
            npgpt_format.save(path, config, new, metadata={"step": "100"})
            replaced.append(True)
        return validate(*args)

    monkeypatch.setattr(npgpt_format, "_validate", checkpoint_meanwhile)
    tensors, metadata = npgpt_format.read_safetensors(path)
    assert replaced
    for name, value in flatten(new if metadata["step"] == "100" else old).items():
        np.testing.assert_array_equal(tensors[name], value, err_msg=name)
    monkeypatch.setattr(os.path, "exists", lambda p, real=os.path.exists: not str(p).startswith("/proc") and real(p))
    replaced.clear()  # where the open file has no name (not Linux): validated by name, read again once replaced
    tensors, metadata = npgpt_format.read_safetensors(path)
    assert replaced and metadata["step"] == "100"
    for name, value in flatten(new).items():
        np.testing.assert_array_equal(tensors[name], value, err_msg=name)


def test_a_tokens_sidecar_that_cannot_be_written_warns_and_never_vouches_for_other_tokens(tmp_path):
    """``tokens.bin.json`` only lets the next run reuse ``tokens.bin``: a failed write of it stopped the run. And
    the old sidecar, left beside the new tokens by that failure, vouched for them as the old text's: the next run
    on the old text trained on the new one's tokens. The old sidecar is removed before the tokens are replaced,
    and a failed write is one warning."""
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("alpha beta gamma\n" * 20)
    second.write_text("delta epsilon zeta eta\n" * 20)
    out = tmp_path / "run"
    out.mkdir()
    tokens = D.tokenize_to_file(first, out / "tokens.bin")
    want = np.fromfile(tokens, np.uint16)
    real = files.publish

    def no_sidecar(tmp, path):
        if Path(path).name == "tokens.bin.json":
            raise OSError(28, "No space left on device")
        real(tmp, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(files, "publish", no_sidecar)
        with pytest.warns(NpgptWarning, match=r"tokens\.bin\.json: No space left.*tokenised again next time"):
            D.tokenize_to_file(second, out / "tokens.bin")
    assert not (out / "tokens.bin.json").exists()
    np.testing.assert_array_equal(np.fromfile(D.tokenize_to_file(first, out / "tokens.bin"), np.uint16), want)


@pytest.mark.timeout(120)  # a bound on a hang (opening a FIFO that no one writes), not a speed threshold
def test_a_tokens_sidecar_that_is_a_fifo_is_not_waited_on(tmp_path):
    """``tokens.bin.json`` a FIFO beside ``tokens.bin``: the next run (``npgpt train --resume``, or a new run into
    the folder) waited for a writer for ever, before its first step. It is a sidecar that cannot be read: the text
    is tokenised again and the FIFO replaced by the sidecar."""
    source = tmp_path / "a.txt"
    source.write_text("alpha beta gamma\n" * 20)
    out = tmp_path / "run"
    out.mkdir()
    want = np.fromfile(D.tokenize_to_file(source, out / "tokens.bin"), np.uint16)
    (out / "tokens.bin.json").unlink()
    os.mkfifo(out / "tokens.bin.json")
    np.testing.assert_array_equal(np.fromfile(D.tokenize_to_file(source, out / "tokens.bin"), np.uint16), want)
    assert (out / "tokens.bin.json").is_file()


@pytest.mark.timeout(120)  # a bound on a hang (opening a FIFO that no one writes), not a speed threshold
def test_a_training_state_that_is_a_fifo_is_refused_not_waited_on(text, tmp_path):
    """``train_state.safetensors`` a FIFO (``mkfifo``, a pipe a script left): ``npgpt train --resume`` waited for a
    writer for ever, and SIGTERM (``timeout 60``) did not end the wait. It is refused in one line, at once."""
    from npgpt.errors import CheckpointError

    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / STATE_FILE)
    with pytest.raises(CheckpointError, match="a FIFO .*not a regular file; restore it from a backup") as e:
        train(text, out, TrainSettings(**RUN), resume=True)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="a FIFO"):
        npgpt_format.read_header(out / STATE_FILE)


@pytest.mark.timeout(120)  # a bound on a hang (a FIFO that no one writes), not a speed threshold
@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_a_token_file_that_is_no_regular_file_is_named_not_called_missing(tmp_path, kind):
    """The run's ``tokens.bin`` a FIFO, a folder or a link to /dev/zero, with the sidecar vouching for the text:
    the sidecar was trusted and the run ended "tokens.bin: no such token file", though it is there. It is named as
    what it is, in one line, before any read; so is a token file given as data through open_tokens."""
    source = tmp_path / "a.txt"
    source.write_text("alpha beta gamma\n" * 20)
    out = tmp_path / "run"
    out.mkdir()
    tokens = D.tokenize_to_file(source, out / "tokens.bin")
    tokens.unlink()
    {"fifo": os.mkfifo, "folder": os.mkdir, "device": lambda p: os.symlink("/dev/zero", p)}[kind](tokens)
    what = {"fifo": "a FIFO (named pipe)", "folder": "a directory", "device": "a character device"}[kind]
    with pytest.raises(NpgptError, match=re.escape(f"{tokens}: {what}, not a regular file, where the tokenised")) as e:
        D.load_tokens(source, out)
    assert str(e.value).endswith("remove it and run again") and "\n" not in str(e.value)
    with pytest.raises(NpgptError, match=re.escape(f"{tokens}: {what}, not a regular file; pass a uint16 token")):
        D.open_tokens(tokens)
