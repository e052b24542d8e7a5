"""GPT-2 hyperparameters: a frozen dataclass with OpenAI's names, and the four released sizes.

Besides the shape, the config carries every field of Hugging Face's ``GPT2Config`` that changes
the math (``n_inner``, ``activation_function``, ``layer_norm_epsilon``, the attention scaling,
``tie_word_embeddings``) and nanoGPT's ``bias``, each with GPT-2's default, so a checkpoint that
sets one is either computed as written or refused at load -- never silently run as plain GPT-2.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .activations import NAMES as ACTIVATIONS
from .errors import NpgptError, is_finite_number, is_integer, json_kind, shown

_INTS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
_BOOLS = (
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
    "reorder_and_upcast_attn",
    "tie_word_embeddings",
    "bias",
)


class ConfigAttributeError(NpgptError, AttributeError):
    """A TransformerLens ``cfg`` name that is no config's here (a switch of the model's, the device), with the way."""


# TransformerLens's cfg names that are the model's state in npgpt -> where it is
_MODEL_STATE = {
    **{
        flag: f"the switch is the model's: model.{flag}, set with model.set_{flag}(True) (the config is the shape)"
        for flag in ("use_attn_result", "use_split_qkv_input", "use_attn_in", "use_hook_mlp_in")
    },
    "device": "the device is the backend's, chosen at load: model.backend.name (the hooks' arrays are host NumPy)",
    "dtype": "the weights' storage is the model's: model.dtype (the hooks' activations are float32)",
}


@dataclass(frozen=True)
class GPT2Config:
    """Shape and math of a GPT-2 model. Names follow OpenAI's ``hparams.json``, then HF's ``GPT2Config``.

    ``reorder_and_upcast_attn`` is accepted and changes nothing: in transformers it only computes
    the attention scores in float32 with the scale applied to q before the product; npgpt's
    scores are float32 always, so the result differs from the default by rounding only.
    ``bias=False`` is nanoGPT's option: no bias in any linear layer or layer norm.
    """

    n_vocab: int = 50257
    n_ctx: int = 1024
    n_embd: int = 768
    n_head: int = 12
    n_layer: int = 12
    n_inner: int | None = None  # the MLP's hidden width; None = 4 * n_embd
    activation_function: str = "gelu_new"  # GPT-2's tanh approximation of GELU
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True  # divide attention scores by sqrt(head_dim)
    scale_attn_by_inverse_layer_idx: bool = False  # and by layer index + 1 (Mistral/Stanford CRFM)
    reorder_and_upcast_attn: bool = False
    tie_word_embeddings: bool = True  # False: a separate ``lm_head`` [V, C] is the output head
    bias: bool = True

    def __post_init__(self) -> None:
        for name in _INTS:
            _check(name, getattr(self, name), lambda v: is_integer(v) and v > 0, "a positive int")
        _check("n_inner", self.n_inner, lambda v: v is None or (is_integer(v) and v > 0), "null or a positive int")
        _check(
            "activation_function",
            self.activation_function,
            lambda v: v in ACTIVATIONS,
            f"one of {', '.join(ACTIVATIONS)} (transformers' names)",
        )
        # 0 as transformers (nn.LayerNorm(eps=0)) and llama.cpp run it: only a constant row, variance 0, divides by 0
        _check("layer_norm_epsilon", self.layer_norm_epsilon, lambda v: is_finite_number(v) and v >= 0, "a number >= 0")
        # NumPy's numbers (np.int64(768), as read from an array) pass and are kept as Python's, so the config
        # stays JSON-serializable and compares and hashes as the Python-int one
        for name in (*_INTS, "n_inner"):
            if (v := getattr(self, name)) is not None:
                object.__setattr__(self, name, int(v))
        if not isinstance(self.layer_norm_epsilon, int):
            object.__setattr__(self, "layer_norm_epsilon", float(self.layer_norm_epsilon))
        for name in _BOOLS:
            _check(name, getattr(self, name), lambda v: isinstance(v, bool), "true or false")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({shown(self.n_embd)}) must be divisible by n_head ({shown(self.n_head)}); "
                "pick a width that is a multiple of the head count"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of the model, by npgpt's flat name (see ``npgpt.params``), with its shape.

        Linear weights are [in, out] (OpenAI's layout). An untied output head is ``lm_head``
        [V, C], laid out like ``wte`` (HF's and nanoGPT's ``lm_head.weight``); a ``bias=False``
        model (nanoGPT's option) has no ``b`` tensors.
        """
        C, V, F = self.n_embd, self.n_vocab, self.d_mlp
        shapes: dict[str, tuple[int, ...]] = {"wte": (V, C), "wpe": (self.n_ctx, C)}
        for i in range(self.n_layer):
            p = f"blocks.{i}."
            shapes.update(
                {
                    p + "ln_1.g": (C,),
                    p + "ln_1.b": (C,),
                    p + "attn.c_attn.w": (C, 3 * C),
                    p + "attn.c_attn.b": (3 * C,),
                    p + "attn.c_proj.w": (C, C),
                    p + "attn.c_proj.b": (C,),
                    p + "ln_2.g": (C,),
                    p + "ln_2.b": (C,),
                    p + "mlp.c_fc.w": (C, F),
                    p + "mlp.c_fc.b": (F,),
                    p + "mlp.c_proj.w": (F, C),
                    p + "mlp.c_proj.b": (C,),
                }
            )
        shapes.update({"ln_f.g": (C,), "ln_f.b": (C,)})
        if not self.tie_word_embeddings:
            shapes["lm_head"] = (V, C)
        if not self.bias:
            shapes = {k: v for k, v in shapes.items() if not k.endswith(".b")}
        return shapes

    @property
    def d_mlp(self) -> int:
        """Width of the MLP's hidden layer (TransformerLens's name): ``n_inner`` or 4 * n_embd."""
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    # TransformerLens's names (its ``model.cfg``), so code written against HookedTransformer reads npgpt's
    @property
    def n_layers(self) -> int:
        return self.n_layer

    @property
    def d_model(self) -> int:
        return self.n_embd

    @property
    def n_heads(self) -> int:
        return self.n_head

    @property
    def d_head(self) -> int:
        return self.head_dim

    @property
    def d_vocab(self) -> int:
        return self.n_vocab

    @property
    def d_vocab_out(self) -> int:
        return self.n_vocab

    @property
    def act_fn(self) -> str:
        return self.activation_function

    @property
    def eps(self) -> float:
        return self.layer_norm_epsilon

    normalization_type = "LN"  # GPT-2's: TransformerLens's for its LayerNorm with weight and bias
    positional_embedding_type = "standard"  # learned absolute positions, wpe
    attn_only = False
    default_prepend_bos = True  # text is read <|endoftext|> first by the hooked runs and to_tokens, as there

    def __getattr__(self, name: str) -> Any:  # only for attributes the class has not
        if name in _MODEL_STATE:
            raise ConfigAttributeError(
                f"npgpt's config has no {name} (TransformerLens's cfg.{name}); {_MODEL_STATE[name]}"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def n_params(self) -> int:
        """Parameter count, summed over :meth:`param_shapes` (GPT-2's head is tied to ``wte``; an
        untied ``lm_head`` adds V * C; a ``bias=False`` model has no biases)."""
        return sum(math.prod(shape) for shape in self.param_shapes().values())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPT2Config:
        """Build from npgpt/OpenAI ``hparams.json`` names or Hugging Face ``config.json`` names (with
        transformers' other names for the shape, ``hidden_size``, ``num_attention_heads``, ... read as it does).

        Fields left out keep GPT-2's defaults; keys that do not change the math at inference
        (dropout, initializer_range, token ids, ...) are ignored. Raises ValueError (one line,
        naming the field and value) for a value npgpt cannot compute, e.g. an unknown activation
        or HF's ``add_cross_attention`` (an encoder-decoder model).
        """
        if not isinstance(d, dict):
            raise ValueError(
                f"model config is not a JSON object but {json_kind(d)}; re-download or re-convert the model"
            )
        if d.get("model_type", "gpt2") != "gpt2":
            raise ValueError(f"model_type is {d['model_type']!r}; npgpt runs GPT-2 ('gpt2') models only")
        if d.get("add_cross_attention", False) is not False:
            raise ValueError(
                f"add_cross_attention is {d['add_cross_attention']!r}; npgpt runs decoder-only "
                "GPT-2 (no cross-attention layers)"
            )
        kw = dict(d)
        renamed: dict[str, str] = {}  # our name -> the file's name it was read from
        for ours, others in _OTHER_NAMES.items():
            for name in others:  # the last one there wins, as in transformers
                if name in kw:
                    kw[ours], renamed[ours] = kw.pop(name), name
        hf_names = {"n_vocab": "vocab_size", "n_ctx": "n_positions"}  # what a config.json calls them
        names = {f.name for f in dataclasses.fields(cls)}
        missing = set(_INTS) - kw.keys()
        if missing:  # named as a config.json names them where the file uses Hugging Face's names
            hf = renamed or "model_type" in d
            named = {ours: theirs if hf else f"{ours} (or {theirs})" for ours, theirs in hf_names.items()}
            missing_names, expected = (", ".join(sorted(named.get(k, k) for k in keys)) for keys in (missing, _INTS))
            raise ValueError(f"model config is missing {missing_names}; expected keys {expected}")
        try:
            return cls(**{k: v for k, v in kw.items() if k in names})
        except ValueError as e:  # name the field as the file does
            message = str(e)
            for ours, theirs in renamed.items():
                message = message.replace(f"GPT2Config.{ours} ", f"GPT2Config.{ours} ({theirs}) ")
            raise ValueError(message) from None


# Other names of the shape fields, later ones read over earlier ones. Hugging Face's config.json names:
# transformers sizes wpe by n_positions (old configs also carry n_ctx, which it ignores); then
# GPT2Config.attribute_map's, which transformers sets each field from after (so over) GPT-2's name.
_OTHER_NAMES = {
    "n_vocab": ("vocab_size",),
    "n_ctx": ("n_positions", "max_position_embeddings"),
    "n_embd": ("hidden_size",),
    "n_head": ("num_attention_heads",),
    "n_layer": ("num_hidden_layers",),
}


def _check(name: str, value: Any, ok: Any, expected: str) -> None:
    if not ok(value):
        raise ValueError(f"GPT2Config.{name} must be {expected}, got {shown(value)}")


# The four checkpoints OpenAI released (the names are their parameter counts).
PRESETS: dict[str, GPT2Config] = {
    "124M": GPT2Config(n_embd=768, n_head=12, n_layer=12),  # gpt2
    "355M": GPT2Config(n_embd=1024, n_head=16, n_layer=24),  # gpt2-medium
    "774M": GPT2Config(n_embd=1280, n_head=20, n_layer=36),  # gpt2-large
    "1558M": GPT2Config(n_embd=1600, n_head=25, n_layer=48),  # gpt2-xl
}
