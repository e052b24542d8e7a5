"""The Python API: ``npgpt.load(...)`` and the model object it returns."""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, overload

import numpy as np

from .added_hooks import AddedHooks, refuse_with_added
from .backends import AUTO, Backend, check_dtype, get_backend
from .config import GPT2Config
from .engine import Engine
from .errors import NpgptError, is_integer, shown
from .generate import Event, events
from .lens_modules import LENS_MODULES, accumulated_bias, loss_fn
from .lens_names import (
    DEVICE_AT_LOAD,
    ELSEWHERE,
    MODEL_ATTRIBUTES_NOT_HERE,
    TAKES,
    ModelAttributeError,
    check_reset_hooks,
    refuse_lens_options,
)
from .lens_weights import WEIGHT_SHAPES, lens_weight, weight_write_error
from .params import check_params, head_name, host_params
from .sampling import FOREIGN_OPTIONS, SamplingParams, check_finite, log_softmax
from .score import Score, score
from .token_ids import as_ids, check_token_ids, count_tokens
from .tokenizer import Tokenizer

if TYPE_CHECKING:  # the measurement is imported only when dtype="auto" asks for it
    from .autotune import Choice


@dataclass
class Completion:
    """One finished completion, with what the OpenAI API reports about it."""

    text: str
    tokens: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    finish_reason: str = "length"


_CHAT = (
    "GPT-2 is no chat model: with npgpt.chat's chat_prompt and chat_stop, messages = [(role, text), ...] are a "
    "transcript to continue, model.generate(chat_prompt(messages), stop=chat_stop(messages), "
    "skip_leading_space=True), as npgpt chat and the server's /v1/chat/completions answer them"
)
# The methods llama-cpp-python's Llama and vLLM's LLM are used by (their READMEs' first lines) -> npgpt's way
_METHODS_ELSEWHERE = {
    "create_completion": "model.completions(prompt, max_new_tokens=16, ...) gives each completion's text, tokens and "
    "logprobs (model.generate(prompt, ...): the text alone)",
    "create_chat_completion": _CHAT,
    "chat": _CHAT,
    "tokenize": "model.tokenizer.encode(text) (text as a str: decode bytes first; allow_special=True reads a literal "
    "<|endoftext|> as the token)",
    "detokenize": "model.tokenizer.decode(ids) gives the text, model.tokenizer.decode_bytes(ids) its bytes",
    "n_ctx": "npgpt's is model.config.n_ctx, an attribute",
    "n_vocab": "npgpt's is model.config.n_vocab, an attribute (model.tokenizer.n_vocab: the tokenizer's tokens)",
    "get_tokenizer": "npgpt's is model.tokenizer, an attribute",
}

_MISSING: Any = object()  # no prompt given (None is a prompt, refused as what it is)


class GPT2:
    """A loaded GPT-2: ``generate``, ``stream``, ``logits``, ``tokenizer`` and ``config``.

    A facade over an :class:`~npgpt.engine.Engine` (``.engine``: config, weights on the backend,
    forward passes) and a :class:`~npgpt.tokenizer.Tokenizer` (``.tokenizer``).

    ``dtype="auto"`` picks the fastest of the backend's storages on this host for decoding
    ``auto_rows`` rows at once (:func:`npgpt.autotune.choose_dtype`, measured once and cached);
    ``.dtype`` is then the storage picked and ``.dtype_choice`` the measurement behind it.
    """

    def __init__(
        self,
        config: GPT2Config,
        params: dict[str, Any],
        tokenizer: Tokenizer | None = None,
        backend: str = "numpy",
        source: str | None = None,
        notice: str | None = None,
        dtype: Any = "float32",
        auto_rows: int = 1,
    ) -> None:
        if not isinstance(config, GPT2Config):
            hint = (
                "GPT2Config.from_dict(d) reads hparams.json's or config.json's names"
                if isinstance(config, dict)
                else "npgpt.load(name) loads a model by name"
            )
            raise NpgptError(
                f"config must be a GPT2Config (npgpt.GPT2Config(n_layer=..., ...), or a size's: "
                f"npgpt.config.PRESETS['124M']), got {type(config).__name__}; {hint}",
                param="config",
            )
        check_params(params, config)  # hand-built weights: a missing or misshapen tensor failed deep in NumPy
        params = host_params(params)  # another library's arrays as NumPy's (a torch model's .params)
        if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
            raise NpgptError(
                f"tokenizer must be an npgpt Tokenizer (npgpt.tokenizer.Tokenizer()), or None for GPT-2's, got "
                f"{type(tokenizer).__name__}",
                param="tokenizer",
            )
        b = get_backend(backend)
        dtype = check_dtype(dtype, allow_auto=True)  # a name, or a library's dtype object (np.float16)
        _check_auto_rows(auto_rows)
        self.dtype_choice: Choice | None = None  # what dtype="auto" measured (npgpt/autotune.py)
        if dtype == AUTO:
            from .autotune import choose_dtype

            self.dtype_choice = choose_dtype(b, config, rows=auto_rows)
            dtype = self.dtype_choice.dtype
        self.engine = Engine.load_params(config, params, b, dtype)
        self.tokenizer = tokenizer or Tokenizer()
        self.source = source
        self.notice = notice
        # TransformerLens's switches for its optional input hooks (set_use_attn_in ...): on, names_filter None and
        # functions of names reach them too, as there (npgpt.hook_points.INPUT_SWITCHES); a name reaches them anyway
        self.use_attn_in = False
        self.use_split_qkv_input = False
        self.use_hook_mlp_in = False
        # ... and for blocks.{i}.attn.hook_result: on here (TransformerLens's is off), as npgpt has always cached it
        self.use_attn_result = True
        self._added_hooks = AddedHooks()  # model.add_hook's and model.hooks(...)'s: they run in every hooked run

    def __copy__(self) -> GPT2:
        """A shallow copy (the weights shared) with hooks of its own: copy.copy's default shared the added hooks, so
        a hook added to the copy changed the original's runs."""
        copied = object.__new__(type(self))
        copied.__dict__.update(self.__dict__, _added_hooks=copy.copy(self._added_hooks))
        return copied

    @property
    def config(self) -> GPT2Config:
        return self.engine.config

    @property
    def cfg(self) -> GPT2Config:
        """``config``, by TransformerLens's name; it answers TransformerLens's ``cfg`` names too (``n_layers``,
        ``d_model``, ``n_heads``, ``d_head``, ``d_vocab``, ``d_mlp``, ``n_ctx``)."""
        return self.engine.config

    @property
    def params(self) -> dict[str, Any]:
        """The weights as the backend holds them (see ``Backend.put_params``)."""
        return self.engine.params

    @property
    def backend(self) -> Backend:
        return self.engine.backend

    @property
    def dtype(self) -> str:
        return self.engine.dtype

    def __getattr__(self, name: str) -> Any:  # only for attributes the class has not
        if name in WEIGHT_SHAPES and not name.startswith("_"):  # W_Q, W_U ...: TransformerLens's, made when read
            return lens_weight(self, name)
        if name in LENS_MODULES:  # embed, ln_final, unembed: TransformerLens's model parts, as functions
            return functools.partial(LENS_MODULES[name], self)
        if name in _METHODS_ELSEWHERE:  # llama-cpp-python's Llama and vLLM's LLM methods: npgpt's way to the same end
            raise ModelAttributeError(f"npgpt's model has no {name}; {_METHODS_ELSEWHERE[name]}")
        if name in MODEL_ATTRIBUTES_NOT_HERE:
            hint = MODEL_ATTRIBUTES_NOT_HERE[name].replace("{head}", head_name(self.params))
            tl = f"TransformerLens's HookedTransformer.{name}"
            raise ModelAttributeError(f"npgpt's model has no {name} ({tl}); {hint}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in WEIGHT_SHAPES:  # model.W_U = x would shadow the weight with an array the model never reads
            raise weight_write_error(name)
        super().__setattr__(name, value)

    @classmethod
    def from_pretrained(cls, name_or_path: Any = None, *args: Any, **kwargs: Any) -> GPT2:
        """Refused, naming :func:`load`: transformers' and nanoGPT's ``from_pretrained("gpt2")`` is npgpt's
        ``npgpt.load("gpt2")`` (a name, a path, or nothing for the default)."""
        call = "npgpt.load()" if name_or_path is None else f"npgpt.load({shown(name_or_path)})"
        raise NpgptError(
            f"npgpt loads a model with {call}, not GPT2.from_pretrained: a name (124M, gpt2, a downloaded "
            "Hugging Face repo), a checkpoint path, or nothing for the default; backend= and dtype= choose the "
            "device and the weights' storage"
        )

    def __repr__(self) -> str:
        return f"GPT2({self.config}, backend={self.backend.name!r}, dtype={self.dtype!r}, source={self.source!r})"

    def logits(self, ids: Any, attention_mask: Any = None, **other: Any) -> np.ndarray:
        """Float32 logits [B, T, V] for integer ids [B, T]; see :meth:`Engine.logits`."""
        _check_options("logits", other, ("ids", "attention_mask"))
        refuse_with_added(self, "model.logits")
        return self.engine.logits(ids, attention_mask)

    def __call__(
        self,
        input: Any,
        return_type: str | None = "logits",
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        attention_mask: Any = None,
        **other: Any,
    ) -> Any:
        """TransformerLens's ``model(input)`` (its ``forward``): float32 logits [B, T, V] of token ids or text
        (read as there, ``<|endoftext|>`` first), or with ``return_type`` the loss, both or None; the hooked
        pass of :meth:`run_with_hooks` with no hooks, so its numbers are the cache's. ``logits`` is npgpt's own.
        nanoGPT's ``logits, loss = model(idx, targets)`` is refused in one line: its targets would land on
        ``return_type``, and logits returned alone would unpack a batch of two into two rows."""
        if return_type is not None and not isinstance(return_type, str):
            raise NpgptError(
                "model(ids, ...) is TransformerLens's forward, whose second argument is return_type, not nanoGPT's "
                "targets; for the loss of the ids' own next tokens: model(ids, return_type='loss') or "
                "model(ids, return_type='both') for (logits, loss); model.score(text) for a text's",
                param="return_type",
            )
        _refuse_generation_options(other)
        refuse_lens_options(other, "model")
        return self.run_with_hooks(
            input,
            (),
            attention_mask,
            prepend_bos=prepend_bos,
            padding_side=padding_side,
            return_type=return_type,
            loss_per_token=loss_per_token,
            **other,
        )

    forward = __call__  # TransformerLens's model.forward(...), as model(...)

    def run_with_cache(
        self,
        ids: Any = _MISSING,
        names_filter: Any = None,
        attention_mask: Any = None,
        fwd_hooks: Any = (),
        host: bool = True,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        return_type: str | None = "logits",
        loss_per_token: bool = False,
        remove_batch_dim: bool = False,
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
        pos_slice: Any = None,
        **other: Any,
    ) -> tuple[Any, dict[str, Any]]:
        """``(logits, cache)`` with TransformerLens's hook names and shapes; see ``hooks.run_with_cache``.
        ``ids`` (or TransformerLens's ``input=``) may be text, read as TransformerLens reads it: ``<|endoftext|>`` first
        (:meth:`to_tokens`);
        ``return_type`` "loss", "both" or None in place of the logits, as there."""
        from .hooks import run_with_cache

        ids = _lens_input(ids, other, "run_with_cache")
        fwd_hooks, keep = _kept_hooks(other, fwd_hooks)
        if str(other.get("device")) == "cpu":  # TransformerLens's device="cpu": the cache on the CPU, host's NumPy
            del other["device"]
            host = True
        plain = other.get("return_cache_object") is False  # TransformerLens's: the cache as a plain dict
        if plain:
            del other["return_cache_object"]
        refuse_lens_options(other, "run_with_cache")
        out = run_with_cache(
            self,
            ids,
            names_filter,
            attention_mask,
            fwd_hooks,
            host,
            prepend_bos=prepend_bos,
            padding_side=padding_side,
            return_type=return_type,
            loss_per_token=loss_per_token,
            remove_batch_dim=remove_batch_dim,
            stop_at_layer=stop_at_layer,
            start_at_layer=start_at_layer,
            pos_slice=pos_slice,
        )
        for name, fn in keep:  # reset_hooks_end=False: the run's hooks stay added, as TransformerLens's
            self.add_hook(name, fn)
        return (out[0], dict(out[1])) if plain else out

    def run_with_hooks(
        self,
        ids: Any = _MISSING,
        fwd_hooks: Any = (),
        attention_mask: Any = None,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        return_type: str | None = "logits",
        loss_per_token: bool = False,
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
        **other: Any,
    ) -> Any:
        """Logits of a forward pass with ``fwd_hooks`` [(name, fn(activation, name))]; see ``hooks.run_with_hooks``.
        ``ids`` may be text, and ``return_type`` "loss", "both" or None, as in :meth:`run_with_cache`."""
        from .hooks import run_with_hooks

        ids = _lens_input(ids, other, "run_with_hooks")
        fwd_hooks, keep = _kept_hooks(other, fwd_hooks)
        refuse_lens_options(other, "run_with_hooks")
        out = run_with_hooks(
            self,
            ids,
            fwd_hooks,
            attention_mask,
            prepend_bos=prepend_bos,
            padding_side=padding_side,
            return_type=return_type,
            loss_per_token=loss_per_token,
            stop_at_layer=stop_at_layer,
            start_at_layer=start_at_layer,
        )
        for name, fn in keep:  # reset_hooks_end=False: the run's hooks stay added, as TransformerLens's
            self.add_hook(name, fn)
        return out

    # -- TransformerLens's switches for its optional input hook points --------------------------
    def _switch(self, flag: str, use: Any) -> None:
        if not isinstance(use, (bool, np.bool_)):
            raise NpgptError(f"set_{flag} takes True or False, got {shown(use)}")
        setattr(self, flag, bool(use))

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        """TransformerLens's: with it on, names_filter None and functions of names reach ``blocks.{i}.hook_attn_in``
        (a name reaches it anyway)."""
        self._switch("use_attn_in", use_attn_in)

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """TransformerLens's: with it on, names_filter None and functions of names reach ``blocks.{i}.hook_q_input``,
        ``hook_k_input`` and ``hook_v_input`` (a name reaches them anyway)."""
        self._switch("use_split_qkv_input", use_split_qkv_input)

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """TransformerLens's: on (npgpt's default), names_filter None and functions of names reach
        ``blocks.{i}.attn.hook_result``, each head's output [B, T, H, C]; off, only its name does, and a run with
        names_filter None keeps none of them (TransformerLens's default, H times the memory of ``hook_z`` saved)."""
        self._switch("use_attn_result", use_attn_result)

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        """TransformerLens's: with it on, names_filter None and functions of names reach ``blocks.{i}.hook_mlp_in``
        (a name reaches it anyway)."""
        self._switch("use_hook_mlp_in", use_hook_mlp_in)

    # -- TransformerLens's hooks that outlast one call (npgpt/added_hooks.py) -------------------
    def add_hook(
        self,
        name: Any,
        hook: Any,
        dir: str = "fwd",
        is_permanent: bool = False,
        level: Any = None,
        prepend: bool = False,
    ) -> None:
        """TransformerLens's: ``hook`` (``fn(activation, hook)``, as in ``fwd_hooks``) runs at ``name`` (a hook name,
        a list of them or a function of names) in every hooked run of this model (``model(...)``, ``run_with_hooks``,
        ``run_with_cache``), before the run's own hooks, until :meth:`reset_hooks` (``is_permanent``: until
        ``reset_hooks(including_permanent=True)``). ``logits``, ``generate`` and ``score`` run no hook: with one
        added they refuse. ``dir='bwd'`` names npgpt's gradients (JAX's)."""
        self._added_hooks.add(self, name, hook, dir, is_permanent, level, prepend)

    def add_perma_hook(self, name: Any, hook: Any, dir: str = "fwd") -> None:
        """TransformerLens's: :meth:`add_hook` with ``is_permanent=True``."""
        self._added_hooks.add(self, name, hook, dir, is_permanent=True)

    def hooks(
        self, fwd_hooks: Any = (), bwd_hooks: Any = (), reset_hooks_end: bool = True, clear_contexts: bool = False
    ) -> AbstractContextManager[GPT2]:
        """TransformerLens's ``with model.hooks(fwd_hooks=[(name, fn)]): model(input)``: the hooks run in every hooked
        run inside the block (as :meth:`add_hook`'s), and are removed at its end (``reset_hooks_end``, the default)."""
        check_reset_hooks("hooks", "both", reset_hooks_end=reset_hooks_end, clear_contexts=clear_contexts)
        return self._added_hooks.context(self, fwd_hooks, bwd_hooks, reset_hooks_end)

    def reset_hooks(
        self, clear_contexts: bool = True, direction: str = "both", including_permanent: bool = False, level: Any = None
    ) -> None:
        """TransformerLens's: the hooks added by :meth:`add_hook` removed (the permanent ones with
        ``including_permanent``; those of ``level`` only, where given); a hook given to one run lasts for that run
        anyway. npgpt's hooks keep no ``hook.ctx`` to clear."""
        check_reset_hooks(
            "reset_hooks", direction, clear_contexts=clear_contexts, including_permanent=including_permanent
        )
        if direction != "bwd":  # npgpt has no backward hooks to remove
            self._added_hooks.reset(including_permanent, level)

    def remove_all_hook_fns(
        self, direction: str = "both", including_permanent: bool = False, level: Any = None
    ) -> None:
        """TransformerLens's: as :meth:`reset_hooks`."""
        check_reset_hooks("remove_all_hook_fns", direction, including_permanent=including_permanent)
        if direction != "bwd":
            self._added_hooks.reset(including_permanent, level)

    def to(self, device_or_dtype: Any, print_details: bool = True) -> GPT2:
        """nn.Module's and TransformerLens's: on the NumPy backend ``to("cpu")`` is the model itself, where it runs
        already; any other device or dtype is chosen at load, and refused here in one line."""
        if str(device_or_dtype) == "cpu" and self.backend.name == "numpy":
            return self
        raise NpgptError(f"npgpt's model does not move (model.to({shown(device_or_dtype)})); {DEVICE_AT_LOAD}")

    def cpu(self) -> GPT2:
        """nn.Module's: ``to("cpu")``."""
        return self.to("cpu")

    def eval(self) -> GPT2:
        """nn.Module's, which TransformerLens's and transformers' models are, called by habit after loading: npgpt's
        model has no training mode (no dropout) and always computes as ``eval()`` would; it returns the model."""
        return self

    def train(self, mode: bool = True) -> GPT2:
        """nn.Module's: ``train(False)`` is :meth:`eval`; ``train()`` is refused, npgpt's model having no training
        mode (no dropout): ``npgpt.train.train`` (``npgpt train``) trains one."""
        if mode is not False:
            raise NpgptError(
                "npgpt's model has no training mode (no dropout): its forward passes compute as eval() would; "
                "npgpt.train.train(...) (npgpt train on the command line) trains a model"
            )
        return self

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> np.ndarray:
        """TransformerLens's: the output biases of blocks 0..layer-1 summed [C] (:mod:`npgpt.lens_modules`)."""
        return accumulated_bias(self, layer, mlp_input, include_mlp_biases)

    def loss_fn(self, logits: Any, tokens: Any, attention_mask: Any = None, per_token: bool = False) -> Any:
        """TransformerLens's: the next-token loss of ``tokens`` under ``logits`` (:mod:`npgpt.lens_modules`)."""
        return loss_fn(self, logits, tokens, attention_mask, per_token)

    # -- TransformerLens's tokenizer helpers: text as its run_with_cache reads it ----------------
    def to_tokens(
        self,
        input: str | list[str],
        prepend_bos: bool | None = True,
        padding_side: str | None = "right",
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> np.ndarray:
        """Int64 ids [B, T] of a text or list of texts (``input``, by TransformerLens's name) as TransformerLens's
        ``to_tokens`` makes them for GPT-2:
        ``<|endoftext|>`` first (``prepend_bos``; ``tokenizer.encode`` adds nothing), rows padded with
        ``<|endoftext|>`` on ``padding_side``, and cut to the context (``truncate``: the first ``n_ctx`` tokens,
        as there). Ids run as given, pads as tokens (in TransformerLens too): run the texts themselves, or pass
        the mask of ``hooks.to_tokens``, for each row's unpadded activations. ``move_to_device`` is taken, as
        TransformerLens's, and changes nothing: the ids are NumPy, and each run puts them on its backend."""
        from .hooks import to_tokens

        if not isinstance(move_to_device, (bool, np.bool_)):
            raise NpgptError(f"move_to_device must be True or False, got {shown(move_to_device)}")
        return to_tokens(self, input, prepend_bos, padding_side, truncate)[0]

    def to_str_tokens(
        self, input: Any, prepend_bos: bool | None = True, padding_side: str | None = "right"
    ) -> list[str] | list[list[str]]:
        """Each token as text (TransformerLens's ``to_str_tokens``): of a text (``<|endoftext|>`` first, as
        :meth:`to_tokens`), of token ids [T] (or [1, T]), or a list of one or the other per item."""
        if isinstance(input, list) and input and not _is_one_prompt(input):
            return [self.to_str_tokens(item, prepend_bos, padding_side) for item in input]  # type: ignore[return-value]
        if isinstance(input, str) and not input and prepend_bos is False:
            return []  # no token, as TransformerLens's (to_tokens refuses it: there is nothing to run)
        if isinstance(input, str):
            ids = self.to_tokens(input, prepend_bos, padding_side)[0]
        else:
            ids = as_ids(input, "to_str_tokens' input", "a text, token ids [T] or a list of them")
            ids = ids.reshape(-1) if ids.size == 1 else np.squeeze(ids)
            if ids.ndim != 1:
                raise NpgptError(f"to_str_tokens takes token ids of one row [T], got shape {ids.shape}")
        return [self.tokenizer.decode([int(t)]) for t in ids]

    def to_string(self, tokens: Any) -> str | list[str]:
        """The text of token ids [T], or a list of texts for [B, T] (TransformerLens's ``to_string``); of one id too."""
        ids = as_ids([tokens] if is_integer(tokens) else tokens, "to_string's input", "token ids [T] or [B, T]")
        if ids.ndim > 2:
            raise NpgptError(f"to_string takes token ids [T] or [B, T], got shape {ids.shape}")
        if ids.ndim == 2:
            return [self.tokenizer.decode(row) for row in ids.tolist()]
        return self.tokenizer.decode(ids.reshape(-1).tolist())

    def to_single_token(self, string: str) -> int:
        """The id of a text that is one token, such as ``' cat'`` (TransformerLens's ``to_single_token``)."""
        from .hook_io import to_single_token

        return to_single_token(self, string)

    def get_token_position(
        self,
        single_token: Any,
        input: Any,
        mode: str = "first",
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
    ) -> int:
        """Where a token (a one-token text or an id) first, or ``mode="last"`` last, occurs in a text or token ids
        (TransformerLens's ``get_token_position``; a text is read as :meth:`to_tokens` reads it)."""
        from .hook_io import get_token_position

        return get_token_position(self, single_token, input, mode, prepend_bos, padding_side)

    def tokens_to_residual_directions(self, tokens: Any) -> np.ndarray:
        """Each token's unembedding direction ``W_U[:, token]``, [..., C] for tokens of any shape (a one-token text,
        an id or an array of ids): TransformerLens's ``tokens_to_residual_directions``."""
        from .lens_weights import tokens_to_residual_directions

        return tokens_to_residual_directions(self, tokens)

    # -- generation -----------------------------------------------------------------------------
    def _rows(self, prompts: str | Sequence[int] | Sequence[str | Sequence[int]]) -> list[list[int]]:
        """Token ids per prompt; a string or a flat sequence of ids is one prompt, never one per item.

        A literal ``<|endoftext|>`` in a text prompt is the special token, id 50256, GPT-2's document
        separator, as in the CLI, the server's completions, transformers, llama.cpp and vLLM; to read it
        as text, pass ``model.tokenizer.encode(text)``. (A chat message's is text: ``npgpt.chat``.)"""
        prompts = _listed(prompts)  # a generator of prompts (or of one prompt's ids), as generate and stream take it
        if _is_vllm_prompt(prompts):  # one of vLLM's prompt dicts: one prompt, as there
            prompts = [cast(Any, prompts)]
        if isinstance(prompts, str):
            items: Sequence[Any] = [prompts]
        elif _is_sequence(prompts) and not _is_one_prompt(prompts):
            if prompts and all(_is_number(t) for t in prompts):  # one prompt's ids, a bool or float among them
                n_vocab = self.config.n_vocab
                check_token_ids(prompts, n_vocab, count_tokens(n_vocab, self.tokenizer), "prompt")
            items = prompts  # a list of prompts, each text or ids
        else:  # one prompt of ids [T], or a batch of them [B, T] (a tokenizer's return_tensors="pt")
            _refuse_array_of_texts(prompts)
            ids = as_ids(prompts, "prompts", "a string, integer token ids or a list of them", "prompt")
            if ids.ndim not in (1, 2):
                raise NpgptError(
                    f"prompts of token ids must be [T] (one prompt) or [B, T] (B prompts), got shape {ids.shape}",
                    param="prompt",
                )
            items = [ids] if ids.ndim == 1 else list(ids)
        items = [_vllm_prompt(p, i) if _is_vllm_prompt(p) else p for i, p in enumerate(items)]
        return [
            self.tokenizer.encode(p, allow_special=True) if isinstance(p, str) else _token_ids(p, i)
            for i, p in enumerate(items)
        ]

    def events(
        self, prompts: str | Sequence[int] | Sequence[str | Sequence[int]] = _MISSING, *positional: Any, **sampling: Any
    ) -> Iterator[Event]:
        """The raw token iterator over a batch of prompts (text or token ids); see ``generate.events``.

        The options are :class:`~npgpt.sampling.SamplingParams`' fields, by name; an unknown one raises
        NpgptError naming the closest valid one (``max_tokens`` -> ``max_new_tokens``).
        """
        refuse_with_added(self, "model.events")
        sampling = _check_call("events", prompts, positional, sampling)
        params = SamplingParams.from_options(sampling)
        return events(self.engine, self.tokenizer, self._rows(prompts), params)

    def completions(
        self, prompts: str | Sequence[int] | Sequence[str | Sequence[int]] = _MISSING, *positional: Any, **sampling: Any
    ) -> list[Completion]:
        """Run a batch to the end; one :class:`Completion` per prompt, in order.

        ``prompts``: a list of prompts (each text or token ids); a single string or a flat list of
        token ids is one prompt (a list of one Completion).
        """
        refuse_with_added(self, "model.completions")
        sampling = _check_call("completions", prompts, positional, sampling)
        rows = self._rows(prompts)
        out = [Completion("") for _ in rows]
        for ev in self.events(rows, **sampling):
            c = out[ev.row]
            c.text += ev.text
            if ev.token is not None:
                c.tokens.append(ev.token)
                if ev.logprob is not None:
                    c.token_logprobs.append(ev.logprob)
                    c.top_logprobs.append(ev.top)
            if ev.finish_reason:
                c.finish_reason = ev.finish_reason
        return out

    @overload
    def generate(self, prompt: str, *positional: Any, **sampling: Any) -> str: ...
    @overload
    def generate(self, prompt: list[str], *positional: Any, **sampling: Any) -> list[str]: ...

    def generate(self, prompt: Any = _MISSING, *positional: Any, **sampling: Any) -> str | list[str]:
        """The completion of ``prompt`` (without the prompt), or a list for a list of prompts.

        Options are :class:`~npgpt.sampling.SamplingParams`' fields, with its defaults:
        ``max_new_tokens``, ``temperature`` (0 = greedy), ``top_k``, ``top_p``, ``min_p``,
        ``repetition_penalty``, ``presence_penalty``, ``frequency_penalty``, ``logit_bias`` ({id: bias}),
        ``seed``, ``stop`` (string or list), ``stop_at_eot``, ``skip_leading_space`` (``logprobs``: see
        :meth:`completions`). A list of prompts runs in batches of at most 256 rows and 16,384 padded prompt tokens
        (:func:`npgpt.generate.batches`), each row's text what one batch of all would give.
        """
        refuse_with_added(self, "model.generate")
        sampling = _check_call("generate", prompt, positional, sampling)
        texts = [c.text for c in self.completions(_listed(prompt), **sampling)]
        return texts[0] if isinstance(prompt, str) else texts

    def stream(self, prompt: Any = _MISSING, *positional: Any, **sampling: Any) -> Iterator[Any]:
        """Text deltas as they are generated (never half a character); same options as ``generate``.

        For a string prompt yields ``str``; for a list, ``(prompt_index, str)`` pairs. A request that cannot
        run raises NpgptError at the call, before the first delta (as ``events`` does).
        """
        refuse_with_added(self, "model.stream")
        sampling = _check_call("stream", prompt, positional, sampling)
        evs = self.events(_listed(prompt), **sampling)
        return (ev.text if isinstance(prompt, str) else (ev.row, ev.text) for ev in evs if ev.text)

    def score(
        self,
        text: str | Sequence[int],
        allow_special: bool = False,
        window: int | None = None,
        stride: int | None = None,
        **other: Any,
    ) -> Score:
        """Per-token log-probabilities of ``text`` (a string or token ids), its log-likelihood and perplexity.

        The first token's logprob is None (nothing predicts it). Each token's rank (1: greedy) and character offset
        come with them, and ``.loglikelihood(start)`` is lm-evaluation-harness's (log-likelihood, is_greedy) of the
        continuation from token ``start``. A text longer than the context is
        scored in sliding windows (``window``, ``stride``: see :func:`npgpt.score.token_nlls`).
        ``allow_special``: a literal ``<|endoftext|>`` is the special token. See :class:`npgpt.score.Score`.
        """
        _check_options("score", other, ("text", "allow_special", "window", "stride"))
        refuse_with_added(self, "model.score")
        return score(self, text, window=window, stride=stride, allow_special=allow_special)

    def next_tokens(self, prompt: str | Sequence[int], k: int = 10, **other: Any) -> list[tuple[int, str, float]]:
        """The ``k`` most likely next tokens after ``prompt`` (text or token ids): (id, text, probability), the
        probability being the model's own (``exp`` of :meth:`score`'s logprob of that token after ``prompt``).

        A prompt longer than the model's context is read from its last ``n_ctx`` tokens (what the model
        would see next when generating on), not refused: the playground's live bars follow typing past it.
        """
        _check_options("next_tokens", other, ("prompt", "k"))
        refuse_with_added(self, "model.next_tokens")
        if not is_integer(k) or k < 1:
            raise NpgptError(f"k must be an integer >= 1 (how many tokens to list), got {shown(k)}", param="k")
        rows = self._rows(prompt)  # text or token ids, as generate takes them
        if len(rows) != 1:
            raise NpgptError(f"next_tokens takes one prompt, got {len(rows)}", param="prompt")
        ids = rows[0]
        if not ids:
            raise NpgptError("prompt is empty; give at least one token of text", param="prompt")
        n_tokens = count_tokens(self.config.n_vocab, self.tokenizer)
        check_token_ids(ids, self.config.n_vocab, n_tokens, "prompt")  # as generate's (check_request)
        # The softmax over the model's full output (as score and a generated token's logprob take it, and
        # transformers' and TransformerLens's); the tokens listed are tokens only: a padded id has no text.
        logits = self.logits([ids[-self.config.n_ctx :]])[0, -1]
        check_finite(logits)  # NaN logits (broken weights) listed NaN probabilities, in id order
        probs = np.exp(log_softmax(logits.astype(np.float64)))  # float64, as score's: a tiny one is not 0
        top = np.argsort(-probs[:n_tokens], kind="stable")[:k]
        return [(int(i), self.tokenizer.decode([int(i)]), float(probs[i])) for i in top]


# Other tools' names for generate's prompt: transformers' input_ids/inputs, TransformerLens' input, nanoGPT's idx;
# and the other method's own name (generate's prompt=, completions' prompts=), the OpenAI API's prompt, text
_PROMPT_NAMES = ("input_ids", "inputs", "input", "idx", "prompt", "prompts", "text")


def _kept_hooks(other: dict[str, Any], fwd_hooks: Any) -> tuple[Any, list[Any]]:
    """``(fwd_hooks, kept)``: the run's hooks (a generator read into a list) and those it leaves added to the model,
    all with TransformerLens's ``reset_hooks_end=False`` (taken out of ``other``), else none."""
    reset = other.pop("reset_hooks_end", True)
    if not isinstance(reset, bool):
        raise NpgptError(f"reset_hooks_end must be True or False, got {shown(reset)}", param="reset_hooks_end")
    if reset or isinstance(fwd_hooks, (str, bytes)) or not isinstance(fwd_hooks, Iterable):  # the run refuses those
        return fwd_hooks, []
    fwd_hooks = list(fwd_hooks)
    return fwd_hooks, fwd_hooks


def _check_call(method: str, prompt: Any, positional: tuple[Any, ...], options: dict[str, Any]) -> dict[str, Any]:
    """The sampling options of a call: by name, or one :class:`SamplingParams` as vLLM's ``LLM.generate(prompts,
    sampling_params)`` takes its own (second, or ``sampling_params=``). Refuse other options by position
    (nanoGPT's ``generate(idx, max_new_tokens, temperature, top_k)``) and a prompt missing or under another tool's
    name (transformers' ``input_ids=``), in one line each, where Python's TypeError named neither the options' names
    nor the prompt's place."""
    if len(positional) == 1 and isinstance(positional[0], SamplingParams) and "sampling_params" not in options:
        options, positional = {**options, "sampling_params": positional[0]}, ()
    if isinstance(params := options.get("sampling_params"), SamplingParams):
        if len(options) > 1:
            other = next(name for name in options if name != "sampling_params")
            raise NpgptError(
                f"{method} takes a SamplingParams or options by name, not both (got {other}= too); "
                f"dataclasses.replace(params, {other}=...) changes one option of a SamplingParams",
                param=other,
            )
        options = params.options()
    if positional:
        given = ", ".join(shown(a) if len(shown(a)) <= 20 else type(a).__name__ for a in positional)
        raise NpgptError(
            f"{method} takes the prompt, then options by name: model.{method}(prompt, max_new_tokens=20, "
            f"temperature=0.8, top_k=40); got {len(positional)} more positional argument(s) ({given})"
        )
    for name in _PROMPT_NAMES:
        if name in options:
            raise NpgptError(
                f"pass the prompt first, not as {name}=: model.{method}(ids, max_new_tokens=20), the ids [T] or "
                "rows [B, T] unpadded (a list of id lists of any lengths: npgpt pads and masks them), or the text",
                param="prompt",
            )
    if prompt is _MISSING:
        raise NpgptError(f"{method} needs a prompt: model.{method}(prompt, max_new_tokens=20)", param="prompt")
    return options


# Other libraries' options for the same calls (transformers' forward, the OpenAI API's) -> npgpt's, by method
_K = "npgpt's is k (how many tokens to list)"
_OPTIONS_FOREIGN: dict[str, dict[str, str]] = {
    "logits": {
        "position_ids": "npgpt builds the position ids from attention_mask (each row counts its own tokens, as "
        "transformers' generate does): left-pad the rows and pass attention_mask",
        "mask": "npgpt's is attention_mask (1 = token, 0 = padding)",
        "labels": "model(ids, return_type='loss') gives the loss of the ids' own next tokens",
    },
    "score": {},
    "next_tokens": {"top_k": _K, "n": _K, "logprobs": _K, "top_logprobs": _K},
}


def _check_options(method: str, other: dict[str, Any], valid: tuple[str, ...]) -> None:
    """NpgptError naming npgpt's option for one ``method`` does not take (transformers' ``position_ids=``, a
    misspelling), where Python's TypeError ("unexpected keyword argument") named none."""
    import difflib

    for name in other:
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"{method} takes {', '.join(valid)}"
        raise NpgptError(f"unknown option {name!r}; {_OPTIONS_FOREIGN[method].get(name, hint)}", param=name)


# llama-cpp-python's Llama.__call__ (its create_completion) options that are not npgpt's option names: with them,
# model(prompt, ...) asks for generated text, not TransformerLens's forward
_LLAMA_CPP_OPTIONS = (
    "max_tokens", "echo", "stream", "suffix", "repeat_penalty", "typical_p", "tfs_z", "mirostat_mode", "mirostat_tau",
    "mirostat_eta", "grammar", "logits_processor", "stopping_criteria",
)  # fmt: skip


def _refuse_generation_options(other: dict[str, Any]) -> None:
    """NpgptError for a generation option given to ``model(...)``: llama-cpp-python's ``llm(prompt, max_tokens=32,
    stop=[...], echo=True)`` (and a sampling option of npgpt's own or of transformers') asks for text, where
    ``model(...)`` is TransformerLens's forward, whose logits take none of them; "unknown option 'max_tokens'; valid:
    return_type, ..." named no way to the text. A name ``model(...)`` takes (``attention_mask``) is left to it, and so
    is a forward option of transformers' (``output_hidden_states``, ``use_cache``), which asks for no text:
    :func:`refuse_lens_options` names npgpt's way to it."""
    generation = {f.name for f in fields(SamplingParams)} | set(FOREIGN_OPTIONS) | set(_LLAMA_CPP_OPTIONS)
    name = next((n for n in other if n in generation and n not in TAKES["model"] and n not in ELSEWHERE), None)
    if name is not None:
        raise NpgptError(
            f"model(...) is TransformerLens's forward, which gives logits and takes no {name}; to generate text as "
            "llama-cpp-python's llm(prompt, max_tokens=32, stop=[...]) does: model.generate(prompt, "
            "max_new_tokens=32, stop=[...]) (echo: prompt + that text), or model.completions(...) for each token's "
            "id and logprob too",
            param=name,
        )


def _lens_input(ids: Any, other: dict[str, Any], method: str) -> Any:
    """The input of a hooked run: by position, or by TransformerLens's keyword ``input=`` (taken out of ``other``)."""
    if "input" in other:
        if ids is not _MISSING:
            raise NpgptError(f"{method} got the input twice, by position and as input=; pass it once", param="input")
        return other.pop("input")
    if ids is _MISSING:
        raise NpgptError(
            f"{method} needs the input: model.{method}(text or token ids [B, T] or [T], ...)", param="input"
        )
    return ids


def _check_auto_rows(auto_rows: Any) -> None:
    if not (is_integer(auto_rows) and auto_rows >= 1):
        raise NpgptError(
            f"auto_rows must be a whole number >= 1 (the rows decoded at once that dtype='auto' times), "
            f"got {shown(auto_rows)}",
            param="auto_rows",
        )


def _listed(prompt: Any) -> Any:
    """A generator of prompts as a list; anything else as it is, for :meth:`GPT2._rows` to read or refuse
    (``list(5)`` was a TypeError)."""
    return list(prompt) if isinstance(prompt, Iterator) else prompt


def _is_sequence(x: Any) -> bool:
    return isinstance(x, Sequence) and not isinstance(x, (bytes, bytearray))


def _token_ids(prompt: Any, i: int) -> list[int]:
    """Prompt ``i`` as a list of int ids; NpgptError for anything else (int(1.5) would silently be id 1)."""
    expected = "text or a flat list of integer token ids"
    ids = as_ids(prompt, f"prompt {i}", expected, "prompt")
    if ids.ndim != 1:
        raise NpgptError(f"prompt {i} must be {expected}, got shape {ids.shape}", param="prompt")
    return ids.tolist()


def _refuse_array_of_texts(prompts: Any) -> None:
    """NpgptError for an array of texts (NumPy's str array, a pandas Series of str) given as prompts: as_ids said
    "encode each text first", but a list of the texts is what generate takes (as transformers' tokenizers and
    vLLM take a list, not an array)."""
    kind = getattr(getattr(prompts, "dtype", None), "kind", None)  # NumPy's and pandas' dtypes; torch's has none
    if kind not in ("U", "O") or not hasattr(prompts, "tolist"):
        return
    items = prompts.tolist()
    if any(isinstance(t, str) for t in (items if isinstance(items, list) else [items])):
        what = "NumPy array" if isinstance(prompts, np.ndarray) else type(prompts).__name__
        raise NpgptError(
            f"prompts must be a string, integer token ids or a list of them, got a {what} of texts; pass them as "
            "a list: prompts.tolist()",
            param="prompt",
        )


def _is_vllm_prompt(x: Any) -> bool:
    """A dict given as a prompt, read as vLLM's (not Hugging Face's tokenizer output, whose input_ids as_ids
    answers with its own way)."""
    return isinstance(x, Mapping) and "input_ids" not in x


def _vllm_prompt(prompt: Mapping[str, Any], i: int) -> Any:
    """vLLM's ``{"prompt": text}`` (TextPrompt) or ``{"prompt_token_ids": ids}`` (TokensPrompt, its ids winning
    where both are given, as there) as the text or ids it holds, for ``LLM.generate``'s callers; NpgptError
    naming a key npgpt has no use for (``multi_modal_data``) rather than dropping it."""
    key = "prompt_token_ids" if "prompt_token_ids" in prompt else "prompt" if "prompt" in prompt else None
    if key is None:
        raise NpgptError(
            f"prompt {i} is a dict with {', '.join(map(shown, prompt)) or 'no keys'}; a prompt is a text or token "
            "ids, or vLLM's {'prompt': text} or {'prompt_token_ids': ids}",
            param="prompt",
        )
    extra = [k for k in prompt if k not in ("prompt", "prompt_token_ids")]
    if extra:
        raise NpgptError(
            f"prompt {i} has {shown(extra[0])}, which npgpt has no use for (GPT-2 reads text only); give "
            f"{{{key!r}: ...}} alone",
            param="prompt",
        )
    return prompt[key]


def _is_scalar_array(x: Any) -> bool:
    """A 0-d array of some library: what ``list(ids)`` holds for a PyTorch tensor, JAX or NumPy array of ids."""
    return getattr(x, "ndim", None) == 0 and hasattr(x, "__array__")


def _is_number(x: Any) -> bool:
    """A number of any kind (a bool, a NumPy scalar, a 0-d array too): an item of one prompt's ids, not a prompt."""
    return isinstance(x, (int, float, complex, np.number, np.bool_)) or _is_scalar_array(x)  # int: bool too


def _is_id(x: Any) -> bool:
    """An integer (not a bool), a NumPy one, or a 0-d integer array of any library (``list(torch.tensor(ids))``)."""
    if isinstance(x, (int, np.integer)):
        return not isinstance(x, bool)
    return _is_scalar_array(x) and np.asarray(x).dtype.kind in "iu"


def _is_one_prompt(prompts: Sequence[Any]) -> bool:
    """A flat sequence of token ids (not a list of prompts)."""
    return len(prompts) > 0 and all(_is_id(t) for t in prompts)


_DEVICE = "npgpt picks the device with backend=: 'numpy' runs on the CPU; 'torch', 'jax' and 'cupy' on a GPU they see"
# Other libraries' loading options (transformers' from_pretrained, torch's .to(device), nanoGPT's device=) -> npgpt's
_LOAD_FOREIGN = {
    "device": _DEVICE,
    "device_map": _DEVICE,
    "torch_dtype": "npgpt's is dtype ('float32', 'float16', 'bfloat16', 'int8' or 'auto')",
}
_LOAD_OPTIONS = ("name_or_path", "backend", "dtype", "auto_rows")


def _check_load_options(other: dict[str, Any]) -> None:
    """NpgptError naming npgpt's way for an option load does not take, where Python's TypeError named none."""
    import difflib

    for name in other:
        close = difflib.get_close_matches(name, _LOAD_OPTIONS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"load takes {', '.join(_LOAD_OPTIONS)}"
        raise NpgptError(f"unknown option {name!r}; {_LOAD_FOREIGN.get(name, hint)}", param=name)


def load(
    name_or_path: str | Path | None = None,
    backend: str = "numpy",
    dtype: Any = "float32",
    auto_rows: int = 1,
    **other: Any,
) -> GPT2:
    """Load a model: a checkpoint path, a downloaded name (``"124M"``), or None for the default.

    The default is the first downloaded GPT-2, else the small model bundled with npgpt (the
    returned object's ``notice`` then says how to get real GPT-2). ``dtype`` "float16" or
    "bfloat16" keeps the weight matrices in 16 bits (half the memory; torch, jax, cupy), "int8" in 8
    bits (about a quarter: llama.cpp's Q8_0 blocks through ONNX Runtime on NumPy, npgpt/q8_0.py;
    per-output-channel scales on torch, npgpt/int8.py);
    computation stays float32 apart from the narrow matrix products. ``dtype="auto"`` measures which of
    the backend's storages decodes fastest on this host at ``auto_rows`` rows (once, then cached: see
    :func:`npgpt.autotune.choose_dtype`); the default stays float32, the same numbers on every host.
    """
    from .char_tokenizer import tokenizer_from_spec
    from .formats import load_with_tokenizer
    from .registry import resolve

    _check_load_options(other)  # device="cuda", torch_dtype=...: npgpt's own way, not a TypeError
    if not (name_or_path is None or isinstance(name_or_path, (str, os.PathLike))):
        # str() made load(5) "'5' is not a file or a known model" and load(b"gpt2") "\"b'gpt2'\" is not ..."
        hint = "; decode the bytes first" if isinstance(name_or_path, (bytes, bytearray)) else ""
        raise NpgptError(
            f"name_or_path must be a model's name or a checkpoint's path (a string or a Path), or None for the "
            f"default; got {type(name_or_path).__name__}{hint}",
            param="name_or_path",
        )
    dtype = check_dtype(dtype, allow_auto=True)  # before the (slow) load; np.float16, torch.bfloat16: their names
    _check_auto_rows(auto_rows)
    path, notice = resolve(None if name_or_path is None else str(name_or_path))
    # A GGUF's Q8_0 matrices go to a backend whose int8 product is Q8_0's as the file's own blocks:
    # no float32 copy of the model at load (124M Q8_0 GGUF: peak 986 -> 358 MB).
    # With "auto" too: if it picks another dtype, put_params dequantizes them then.
    wants_blocks = dtype in ("int8", AUTO) and get_backend(backend).from_q8_0 is not None
    # a model trained with --tokenizer char names its own; a fine-tune saved with its tokenizer, the tokens added
    config, params, spec = load_with_tokenizer(path, q8_0_blocks=wants_blocks)
    tokenizer = tokenizer_from_spec(spec)
    if spec is not None and tokenizer.n_vocab > config.n_vocab:
        raise NpgptError(
            f"{path}: its tokenizer has {tokenizer.n_vocab} tokens, the model only {config.n_vocab} rows; "
            "resize the model's embeddings to the tokenizer's length and save it again"
        )
    return GPT2(
        config, params, tokenizer, backend=backend, source=str(path), notice=notice, dtype=dtype, auto_rows=auto_rows
    )
