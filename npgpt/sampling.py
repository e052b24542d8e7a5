"""Turning logits into the next token: small pure functions on NumPy arrays, explicit RNG.

Sampling stays out of the model; whatever the backend, the last position's logits come to the
host as float32 [B, V] and are shaped here one row at a time (each row has its own RNG, so a
row's tokens do not depend on what else shares its batch).
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from .errors import NpgptError, is_finite_number, is_integer, shown

# max_new_tokens when none is given, or the rest of the context where a prompt leaves less (SamplingParams.room)
DEFAULT_MAX_NEW_TOKENS = 64
# max_new_tokens=-1: until end of text or the context is full, as llama.cpp's -n -1 and llama-cpp-python's max_tokens=-1
UNTIL_FULL = -1


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. ``temperature=0`` is greedy (any tiny temperature > 0 picks the same
    tokens, see :func:`filter_logits`), and so are ``top_k=1`` and ``top_p=0`` (the nucleus keeps at
    least the most likely token, as transformers' TopPLogitsWarper does; OpenAI accepts 0 too);
    top_k=0 and top_p=1.0 are off. Penalties: :func:`apply_penalties`.

    ``max_new_tokens`` None (the default) is :data:`DEFAULT_MAX_NEW_TOKENS`, or the rest of the context where a
    prompt leaves less (vLLM caps a request at the model's length the same way): a default never refuses a
    prompt that fits. A number given is the user's: a prompt it does not fit beside is refused (see
    :meth:`room`). -1 is llama.cpp's and llama-cpp-python's "no limit": each row generates until end of text or
    until the context is full."""

    max_new_tokens: int | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    stop_at_eot: bool = True
    logprobs: int | None = None  # return the chosen token's logprob and this many alternatives
    # drop the text's leading whitespace, where stop sequences do not match (chat replies: the reader never sees it)
    skip_leading_space: bool = False
    # OpenAI's: {token id: bias in [-100, 100]} added to the logits; -100 bans the token (ids as ints or, as
    # OpenAI's JSON has them, strings of ints)
    logit_bias: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _NUMBERS:  # a 0-d array of any library (torch's t.mean(), np.array(0.7)) as the number it holds
            if _is_zero_d(value := getattr(self, name)):
                object.__setattr__(self, name, value.item())
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif isinstance(self.stop, (list, tuple)) or self.stop is None:
            object.__setattr__(self, "stop", tuple(self.stop or ()))
        else:  # a number, a dict, a set (no order): never one stop sequence per item
            raise NpgptError(
                f"stop must be a string or a list of strings, got {type(self.stop).__name__}", param="stop"
            )
        checks = [  # (field, valid?, message)
            (
                "max_new_tokens",
                self.max_new_tokens is None
                or is_integer(self.max_new_tokens)
                and (self.max_new_tokens >= 1 or self.max_new_tokens == UNTIL_FULL),
                f"max_new_tokens must be an integer >= 1, or -1 to generate until end of text or the context is full, "
                f"got {shown(self.max_new_tokens)}; leave it out for {DEFAULT_MAX_NEW_TOKENS} or the rest of the "
                "context",
            ),
            (
                "temperature",
                is_finite_number(self.temperature) and self.temperature >= 0,
                f"temperature must be a finite number >= 0 (0 = greedy), got {shown(self.temperature)}",
            ),
            (
                "top_k",
                is_integer(self.top_k) and self.top_k >= -1,
                f"top_k must be an integer >= 0 (0 = off; -1 too, as in vLLM and llama.cpp), got {shown(self.top_k)}",
            ),
            (
                "top_p",
                is_finite_number(self.top_p) and 0 <= self.top_p <= 1,
                f"top_p must be in [0, 1] (1 = off, 0 = greedy), got {shown(self.top_p)}",
            ),
            (
                "min_p",
                is_finite_number(self.min_p) and 0 <= self.min_p <= 1,
                f"min_p must be in [0, 1], got {shown(self.min_p)}",
            ),
            (
                "repetition_penalty",
                is_finite_number(self.repetition_penalty) and self.repetition_penalty > 0,
                f"repetition_penalty must be a finite number > 0 (1 = off), got {shown(self.repetition_penalty)}",
            ),
            (
                "presence_penalty",
                is_finite_number(self.presence_penalty) and -2 <= self.presence_penalty <= 2,
                f"presence_penalty must be in [-2, 2], got {shown(self.presence_penalty)}",
            ),
            (
                "frequency_penalty",
                is_finite_number(self.frequency_penalty) and -2 <= self.frequency_penalty <= 2,
                f"frequency_penalty must be in [-2, 2], got {shown(self.frequency_penalty)}",
            ),
            (
                "seed",
                self.seed is None or is_integer(self.seed),
                f"seed must be an integer, got {shown(self.seed)}; leave seed out (or -1) for a random one",
            ),
            (
                "stop",
                not (other := [s for s in self.stop if not isinstance(s, str)]),
                # transformers' eos_token_id and vLLM's stop_token_ids are ids; npgpt's stop is text
                # the end token's text would never match: a generated <|endoftext|> is no text (npgpt.generate)
                f"stop sequences must be text, got {shown(other[0]) if other else ''}; generation ends at the end "
                "token already (stop_at_eot=True: <|endoftext|>, or a fine-tune's own eos token); to stop at another "
                "token id, pass its text: model.tokenizer.decode([id])",
            ),
            (
                "stop",
                all(self.stop),
                # (vLLM refuses it too): an empty one would match before any text, so nothing would be generated
                "stop sequences must be non-empty strings: an empty one would end every completion before any "
                "text; leave out the empty one",
            ),
            (
                "logprobs",
                self.logprobs is None or is_integer(self.logprobs) and 0 <= self.logprobs <= 20,
                f"logprobs must be an integer in [0, 20], got {shown(self.logprobs)}"
                + (
                    " (OpenAI chat's logprobs=True, top_logprobs=k: here logprobs=k, the alternatives listed beside "
                    "each token; logprobs=0 gives the chosen token's alone)"
                    if isinstance(self.logprobs, (bool, np.bool_))
                    else ""
                ),
            ),
            (
                "stop_at_eot",
                isinstance(self.stop_at_eot, (bool, np.bool_)),
                f"stop_at_eot must be True or False, got {shown(self.stop_at_eot)}",
            ),
            (
                "skip_leading_space",
                isinstance(self.skip_leading_space, (bool, np.bool_)),
                f"skip_leading_space must be True or False, got {shown(self.skip_leading_space)}",
            ),
        ]
        for name, ok, message in checks:
            if not ok:
                raise NpgptError(message, param=name)
        object.__setattr__(self, "logit_bias", _checked_bias(self.logit_bias))
        # NumPy's scalars (np.int64(3), np.float32(0.5)) pass; store them as Python's, as JSON and the server expect
        for name in ("max_new_tokens", "top_k", "seed", "logprobs"):
            if (v := getattr(self, name)) is not None:
                object.__setattr__(self, name, int(v))
        object.__setattr__(self, "seed", _seed(self.seed))
        if self.top_k == -1:  # vLLM's SamplingParams(top_k=-1) (its off before 0 was), llama.cpp's; npgpt's off is 0
            object.__setattr__(self, "top_k", 0)
        for name in ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "stop_at_eot", bool(self.stop_at_eot))
        object.__setattr__(self, "skip_leading_space", bool(self.skip_leading_space))

    def room(self, prompt_tokens: int, n_ctx: int | None = None) -> int:
        """How many tokens a row whose prompt has ``prompt_tokens`` tokens generates at most: ``max_new_tokens``
        as given, or by default :data:`DEFAULT_MAX_NEW_TOKENS` capped at what the context of ``n_ctx`` leaves
        (at least 1; a prompt filling the context is refused before this is asked); for -1 (:data:`UNTIL_FULL`), all
        that the context leaves."""
        if self.max_new_tokens is not None and self.max_new_tokens != UNTIL_FULL:
            return self.max_new_tokens
        if n_ctx is None:
            return DEFAULT_MAX_NEW_TOKENS
        if self.max_new_tokens == UNTIL_FULL:
            return max(1, n_ctx - prompt_tokens)
        return max(1, min(DEFAULT_MAX_NEW_TOKENS, n_ctx - prompt_tokens))

    @cached_property
    def bias_table(self) -> tuple[np.ndarray, np.ndarray]:
        """``logit_bias`` as arrays, its ids [K] and biases [K] (float32), made once: adding them is one
        indexed add at every step, where a Python loop over a vocabulary-sized map took milliseconds."""
        ids = np.fromiter(self.logit_bias, np.int64, len(self.logit_bias))
        return ids, np.fromiter(self.logit_bias.values(), np.float32, len(self.logit_bias))

    @cached_property
    def _bias_vectors(self) -> dict[int, np.ndarray]:
        return {}  # :meth:`bias_vector`'s, by length

    def bias_vector(self, n: int) -> np.ndarray:  # -> [n] float32
        """``logit_bias`` over ``n`` logits: each token's bias, -inf where it is banned (-100), 0 elsewhere; ids at
        or past ``n`` (a padded vocabulary's rows) left out. Made once per length, as every row of a request
        shares it: adding it is one dense add a step, where an indexed add of a whole vocabulary's entries (a
        client's bias on every token) took most of a row's sampling time, for each of its n rows."""
        vector = self._bias_vectors.get(n)
        if vector is None:
            ids, biases = self.bias_table
            inside = ids < n
            vector = np.zeros(n, np.float32)
            vector[ids[inside]] = np.where(biases[inside] <= -100, -np.inf, biases[inside])
            self._bias_vectors[n] = vector
        return vector

    def options(self) -> dict[str, Any]:
        """The fields by name: what ``SamplingParams(**options)`` and the Python API's methods take."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1 or self.top_p == 0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SamplingParams:
        """SamplingParams from keyword options, naming the valid one for a misspelt or foreign name.

        ``max_tokens=3`` (the OpenAI API's name) raises NpgptError "unknown option 'max_tokens'; did
        you mean 'max_new_tokens'?" rather than a bare TypeError; ``param`` is the unknown name.
        Hugging Face's and TransformerLens's generate options are answered with npgpt's way to the same end
        (``max_length=20``: "npgpt's is max_new_tokens, which counts only the new tokens ...").

        An option given as None is its default, as the OpenAI API reads a JSON null (npgpt's server too), vLLM's
        ``SamplingParams.from_optional`` and transformers' ``generate(temperature=None)`` read it: a caller's
        ``temperature=None`` passed on is no error.
        """
        valid = [f.name for f in fields(cls)]
        for name in options:
            if name not in valid:
                close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"valid options: {', '.join(valid)}"
                hint = FOREIGN_OPTIONS.get(name, hint)
                raise NpgptError(f"unknown option {name!r}; {hint}", param=name)
        return cls(**{name: value for name, value in options.items() if value is not None})


_NUMBERS = (
    "max_new_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty",
    "frequency_penalty", "seed", "logprobs",
)  # fmt: skip


def _is_zero_d(value: Any) -> bool:
    """A 0-d array of NumPy's, PyTorch's or JAX's (not a NumPy scalar, read as it is): ``torch.tensor(0.7)``, what a
    reduction gives. Its ``item()`` is the Python number it holds, checked then as any other."""
    return getattr(value, "ndim", None) == 0 and hasattr(value, "item") and not isinstance(value, np.generic)


def _seed(seed: int | None) -> int | None:
    """A seed as the generators take it (>= 0). Any integer is a seed, as in OpenAI's API and vLLM: -1 is none (a
    random one: vLLM's SamplingParams and llama.cpp read it so), another negative one its two's complement read
    unsigned, in 64 bits (-5 is 2**64 - 5: the server's signed 64-bit seeds give the Python API's text) or, past
    them, in the fewest multiple of 64 that holds it (-2**70 is 2**128 - 2**70, not seed 0)."""
    if seed is None or seed >= 0:
        return seed
    if seed == -1:
        return None
    bits = 64
    while seed < -(2 ** (bits - 1)):
        bits += 64
    return seed % 2**bits


_BEAMS = "npgpt has no beam search; temperature=0 is greedy decoding"
_N = "npgpt's Python API has no n; pass the prompt k times ([prompt] * k), each row samples on its own"
_SCORES = "model.completions(prompts, logprobs=k) returns each token's id, logprob and the k likeliest alternatives"
_BAN = "ban tokens with logit_bias={id: -100}"
_CACHE = "npgpt always decodes with a kv cache"
_MIN = "npgpt has no minimum; stop_at_eot=False or logit_bias={50256: -100} keeps it from ending at <|endoftext|>"
_EOS = (
    "npgpt stops at the model's end token (GPT-2's <|endoftext|>, id 50256, or a fine-tune's own eos_token_id, "
    "from its generation_config.json) unless stop_at_eot=False; to stop at another token pass stop=[its text]"
)
_FILTERS = "npgpt's filters are top_k, top_p and min_p"
_MIROSTAT = "npgpt has no mirostat sampling; " + _FILTERS
_INSIDE = "model.run_with_cache(ids) gives every activation, by TransformerLens's hook names"
_PARAMS = (
    "npgpt takes its options by name (temperature=0.8, ...), or all of them as an npgpt.sampling.SamplingParams "
    "(sampling_params=, or second, as vLLM's LLM.generate takes its own)"
)
# Other libraries' generate options (Hugging Face transformers' GenerationConfig, TransformerLens's
# HookedTransformer.generate, the OpenAI API's, vLLM's SamplingParams, picoGPT's and nanoGPT's scripts) ->
# npgpt's way to the same end: a habit's name should get the way, not a list of every option (or a near-miss
# "did you mean" that means something else: min_tokens -> max_new_tokens, generator -> temperature).
FOREIGN_OPTIONS = {
    "max_length": "npgpt's is max_new_tokens, which counts only the new tokens (max_length counts the prompt's too)",
    "do_sample": "npgpt samples unless temperature=0 (do_sample=False is temperature=0; the default is "
    "temperature=1.0, sampling)",
    "num_return_sequences": _N,
    "n": _N,
    "num_beams": _BEAMS,
    "num_beam_groups": _BEAMS,
    "early_stopping": _BEAMS,
    "length_penalty": _BEAMS,
    "eos_token_id": _EOS,
    "stop_token_ids": _EOS,
    "stop_at_eos": "npgpt's is stop_at_eot",
    "stop_strings": "npgpt's is stop (a string or a list of them)",
    "pad_token_id": "npgpt needs no pad token: prompts of different lengths are padded and masked for you",
    "attention_mask": "generate needs none: pass the prompts unpadded (a list of texts or of id lists) and npgpt "
    "pads and masks them; model.logits takes attention_mask",
    "return_dict_in_generate": _SCORES,
    "output_scores": _SCORES,
    "output_logits": _SCORES + "; model.logits(ids) gives all of them",
    "use_cache": _CACHE,
    "use_past_kv_cache": _CACHE,
    "no_repeat_ngram_size": "npgpt has no n-gram ban; repetition_penalty, presence_penalty and frequency_penalty "
    "discourage repeats",
    "min_new_tokens": _MIN,
    "min_length": _MIN,
    "bad_words_ids": _BAN,
    "suppress_tokens": _BAN,
    "freq_penalty": "npgpt's is frequency_penalty (OpenAI's, in [-2, 2])",
    "prepend_bos": "npgpt prepends nothing; to start from <|endoftext|> as TransformerLens does, put it at the "
    "start of the text",
    "streamer": "model.stream(prompt, ...) yields the text as it is generated",
    "n_tokens_to_generate": "npgpt's is max_new_tokens",
    "num_samples": _N,
    "min_tokens": _MIN,
    "diversity_penalty": _BEAMS,
    "ignore_eos": "npgpt's is stop_at_eot=False",
    "generator": "npgpt's is seed (an integer): each row draws from its own generator made from it",
    "prompt_logprobs": "model.score(text) gives each token's logprob given the tokens before it",
    "typical_p": _FILTERS,
    "epsilon_cutoff": _FILTERS,
    "eta_cutoff": _FILTERS,
    "output_hidden_states": _INSIDE,
    "output_attentions": _INSIDE,
    "sampling_params": _PARAMS,
    "generation_config": _PARAMS,
    # vLLM's SamplingParams and LLM.generate, the OpenAI API's, llama.cpp's server's
    "best_of": _N,
    "bad_words": _BAN,
    "allowed_token_ids": "logit_bias={id: -100} bans the tokens not allowed",
    "skip_special_tokens": "npgpt's text never holds a generated <|endoftext|> (vLLM's skip_special_tokens=True); "
    "model.completions(...) lists it among the tokens",
    "include_stop_str_in_output": "npgpt's text ends before the stop sequence, as OpenAI's and vLLM's do by default; "
    "add it back to a completion whose finish_reason is 'stop'",
    "truncate_prompt_tokens": "npgpt never cuts a prompt; pass its last k tokens: model.tokenizer.encode(text)[-k:]",
    "detokenize": "model.completions(...) gives each completion's tokens beside its text",
    "use_tqdm": "npgpt shows no progress bar; model.events(prompts, ...) yields each token as it is chosen",
    "echo": "generate returns the completion only; prompt + model.generate(prompt) is the whole text",
    "stream": "model.stream(prompt, ...) yields the text as it is generated",
    "n_predict": "npgpt's is max_new_tokens",
    # llama-cpp-python's Llama.__call__ / create_completion, transformers' generate() and text-generation pipeline,
    # OpenAI's chat completions
    "temp": "npgpt's is temperature",
    "tfs_z": _FILTERS,
    "mirostat_mode": _MIROSTAT,
    "mirostat_tau": _MIROSTAT,
    "mirostat_eta": _MIROSTAT,
    "grammar": "npgpt has no grammar-constrained sampling; logit_bias={id: -100} bans tokens",
    "logits_processor": "npgpt takes no logits processors; logit_bias={id: bias} adds to the logits, and "
    "model.logits(ids) gives them for a loop of your own",
    "stopping_criteria": "npgpt stops at stop (text), max_new_tokens or <|endoftext|>; or stop reading "
    "model.stream(...) when you have enough",
    "max_time": "npgpt has no time limit; stop reading model.stream(...) when the time is up",
    "suffix": "npgpt has no insertion (suffix): generate continues the prompt",
    "return_full_text": "generate returns the completion only (return_full_text=False); prompt + "
    "model.generate(prompt) is the whole text",
    "top_logprobs": "npgpt's is logprobs, the number of alternatives listed beside each token (0: the chosen "
    "token's logprob only), as the completions API's logprobs",
    "penalty_alpha": "npgpt has no contrastive search; temperature=0 is greedy decoding",
    # TransformerLens's generate: verbose=False, its habit, turns off a progress bar npgpt never shows
    "verbose": "npgpt shows no progress bar (TransformerLens's verbose=False); drop it",
    "return_type": "generate returns the completion's text (a list of texts for a list of prompts), without the "
    "prompt TransformerLens's return_type='str' includes: prompt + model.generate(prompt) is the whole text; "
    "model.completions(...) gives the tokens too",
}


def _checked_bias(bias: Any) -> dict[int, float]:
    """``logit_bias`` as {id: float}, or NpgptError (param "logit_bias") naming the entry that is wrong.

    A key is a token id >= 0, an int or a string of one (OpenAI's JSON keys); whether it is inside the
    vocabulary is :func:`npgpt.generate.check_request`'s to say, which knows the model."""
    if not isinstance(bias, Mapping):
        kind = type(bias).__name__
        raise NpgptError(f'logit_bias must map token ids to biases ({{"50256": -100}}), got {kind}', param="logit_bias")
    out = {}
    for key, value in bias.items():
        # (a string of more digits than any id is no id either: int() refuses 4300 digits)
        token = int(key) if isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 18 else key
        if not is_integer(token) or token < 0:
            raise NpgptError(
                f"logit_bias keys must be token ids (integers >= 0, or strings of them), got {shown(key)}",
                param="logit_bias",
            )
        if not (is_finite_number(value) and -100 <= value <= 100):
            raise NpgptError(
                f"logit_bias[{shown(key)}] must be a number in [-100, 100] (-100 bans the token), got {shown(value)}",
                param="logit_bias",
            )
        if int(token) in out:  # "5" and "05", or 5 and "5": one token, two biases, and no saying which counts
            raise NpgptError(
                f"logit_bias gives token {int(token)} a bias twice (its key {shown(key)} names it again); "
                "give each token one key",
                param="logit_bias",
            )
        out[int(token)] = float(value)
    return out


def apply_logit_bias(logits: np.ndarray, p: SamplingParams) -> np.ndarray:  # [V] -> [V]
    """``logits`` plus ``p.logit_bias``, as OpenAI adds it "prior to sampling"; a bias of -100 makes the
    token impossible (-inf), OpenAI's "ban". Ids past ``logits`` (a padded vocabulary's rows that are no
    token) are left out. A new array: rows of one prompt share their logits.

    Raises NpgptError (param "logit_bias") if it bans every token.
    """
    if not p.logit_bias:
        return logits
    out = np.add(logits, p.bias_vector(len(logits)), dtype=np.float32)  # finite logits (check_finite): no inf - inf
    if not np.isfinite(out).any():
        raise NpgptError("logit_bias bans every token, so none can be chosen; ban fewer", param="logit_bias")
    return out


def log_softmax(logits: Any) -> Any:  # [..., V] -> [..., V]
    """``log(softmax(logits))`` along the last axis, on any array-API array; npgpt's one log-softmax.

    The max is subtracted first so exp() cannot overflow; computed in the input's dtype.
    """
    xp = array_namespace(logits)
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def check_finite(logits: np.ndarray) -> None:
    """Refuse logits [..., V] with NaN or +inf (or nothing finite), which no sampler can choose from honestly.

    A broken checkpoint or an overflow in 16-bit weights gives NaN/inf logits, and argmax or the CDF
    would then silently return some token. -inf alone is fine: that token is impossible.
    Raises NpgptError naming the cause.
    """
    bad = np.isnan(logits) | (logits == np.inf)
    if bad.any() or not np.isfinite(logits).any():
        n_bad = int(bad.sum()) if bad.any() else logits.size
        raise NpgptError(
            f"the model's logits are not finite ({n_bad} of {logits.size} are NaN or inf), so no token can be "
            "chosen: the checkpoint's weights are broken or a 16-bit computation overflowed; "
            "load the model with dtype float32 or check the checkpoint"
        )


def apply_penalties(
    logits: np.ndarray, counts: np.ndarray, p: SamplingParams, seen: np.ndarray | None = None
) -> np.ndarray:
    """Discourage repeats. ``counts`` [V]: how often each token was generated; ``seen`` [V] bool: the
    tokens in the prompt or generated so far (default ``counts > 0``).

    ``repetition_penalty`` as in CTRL (Keskar et al. 2019) and Hugging Face's
    ``RepetitionPenaltyLogitsProcessor``: every token in ``seen``, the prompt's included, has a
    positive logit divided by the penalty and a negative one multiplied by it.
    ``presence_penalty``/``frequency_penalty`` as in the OpenAI API ("how often that token was
    sampled prior to the current position"): generated tokens only, ``logit - counts * frequency
    - (counts > 0) * presence``.

    Float32 [V]. Computed in float64: a penalty of 1e-39 took a logit of 3 past float32's range, and the
    inf - inf of what followed was NaN, so every sampled token was the last id (``<|endoftext|>``). Where the
    result leaves float32's range it comes back shifted by its max (softmax and argmax do not change), and
    where it leaves even float64's (a penalty of 1e-320) as its limit: the largest of the overflowing logits
    wins, every other token gets -inf.
    """
    if not (p.repetition_penalty != 1.0 or p.presence_penalty or p.frequency_penalty):
        return logits.astype(np.float32, copy=False)
    out = logits.astype(np.float64)
    with np.errstate(over="ignore"):  # both branches of where are computed; the one not taken may overflow
        if p.repetition_penalty != 1.0:
            seen = counts > 0 if seen is None else seen
            penalised = np.where(out > 0, out / p.repetition_penalty, out * p.repetition_penalty)
            out = np.where(seen, penalised, out)
    if p.presence_penalty or p.frequency_penalty:
        out = out - p.presence_penalty * (counts > 0) - p.frequency_penalty * counts
    top = np.max(out)
    if not np.isfinite(top):  # +inf, or -inf where every possible token overflowed below
        at = out == top
        return np.where(at & (logits == np.max(logits[at])), 0.0, -np.inf).astype(np.float32)
    if abs(top) > np.finfo(np.float32).max:
        out = out - top
    with np.errstate(over="ignore"):  # a logit this far below the max is -inf: no chance, as its exp already was
        return out.astype(np.float32)


def filter_logits(logits: np.ndarray, p: SamplingParams) -> np.ndarray:  # [V] -> [V]
    """Temperature, then top-k, top-p and min-p: tokens filtered out get -inf. Float32 [V], max 0.

    The row's max is subtracted (softmax does not change) and the division done in float64, so any
    temperature > 0 is safe: the top logit becomes 0 and every other one a negative number or -inf.
    Dividing first in float32 overflows (``x / 1e-39`` is inf, and inf - inf is NaN), and a float32
    temperature under 1.4e-45 is 0. A tiny temperature therefore picks the top token, as greedy
    does; only exact ties for the top differ: sampling splits them evenly (the limit of softmax as
    the temperature goes to 0), argmax takes the lowest id.
    """
    shifted = logits.astype(np.float64) - np.max(logits)
    with np.errstate(over="ignore"):  # -x / 1e-300 overflows to -inf: a probability of exactly 0
        logits = (shifted / p.temperature).astype(np.float32)
    if p.top_k and p.top_k < logits.shape[-1]:
        kth = np.partition(logits, -p.top_k)[-p.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    if p.top_p < 1.0 or p.min_p > 0.0:
        probs = np.exp(log_softmax(logits))
        if p.min_p > 0.0:
            logits = np.where(probs < p.min_p * probs.max(), -np.inf, logits)
        if p.top_p < 1.0:
            keep = _nucleus(probs, p.top_p)
            logits = np.where(keep, logits, -np.inf)
    return logits.astype(np.float32, copy=False)


def _nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:  # [V] -> [V] bool
    """The smallest set of most likely tokens whose mass reaches ``top_p`` (at least one token).

    Sorting all 50k probabilities costs ~10 ms a token; the nucleus is usually within the top few
    hundred, so sort the top 256 first, then the top 4096, and everything only when needed.
    """
    n = len(probs)
    for k in sorted({min(c, n) for c in (256, 4096, n)}):
        top = np.argpartition(-probs, k - 1)[:k] if k < n else np.arange(n)
        order = top[np.argsort(-probs[top], kind="stable")]
        cumulative = np.cumsum(probs[order])
        if cumulative[-1] >= top_p or k == n:
            n_keep = min(int(np.searchsorted(cumulative, top_p, side="left")) + 1, k)
            keep = np.zeros(n, dtype=bool)
            keep[order[:n_keep]] = True
            return keep
    raise AssertionError("unreachable: the full sort always returns")


def sample(logits: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one token from softmax(logits) [V] by inverting the CDF with one uniform number."""
    probs = np.exp(log_softmax(logits.astype(np.float64)))  # float64 only for the CDF's sum
    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(cdf) - 1))


def choose(
    logits: np.ndarray, counts: np.ndarray, p: SamplingParams, rng: np.random.Generator, seen: np.ndarray | None = None
) -> int:
    """The next token for one row: logit_bias, penalties, then greedy or filtered sampling (vLLM's order).

    Raises NpgptError if ``logits`` [V] hold NaN or +inf (:func:`check_finite`).
    """
    check_finite(logits)
    logits = apply_penalties(apply_logit_bias(logits, p), counts, p, seen)
    if p.greedy:
        return int(np.argmax(logits))
    return sample(filter_logits(logits, p), rng)


def top_logprobs(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k most likely tokens with their log-probabilities, most likely first; every token if there are fewer
    (a character-level model's vocabulary of 5 with logprobs=10 was NumPy's "kth(=9) out of bounds")."""
    k = min(k, len(logprobs))
    if k <= 0:
        return []
    idx = np.argpartition(-logprobs, k - 1)[:k]
    idx = idx[np.argsort(-logprobs[idx], kind="stable")]
    return [(int(i), float(logprobs[i])) for i in idx]


def sample_indices(rows: Sequence[Sequence[int]]) -> list[int]:
    """Which sample of its prompt each row is: 0 for a prompt's first row, 1 for its second, ...

    ``[a, b, a]`` -> ``[0, 0, 1]``: a row's draws depend on its prompt's earlier rows only, never on
    the other prompts beside it (see :func:`row_rng`).
    """
    seen: Counter[tuple[int, ...]] = Counter()
    out = []
    for r in rows:
        key = tuple(r)
        out.append(seen[key])
        seen[key] += 1
    return out


def row_rng(seed: int | None, index: int) -> np.random.Generator:
    """The generator of a prompt's ``index``-th sample (:func:`sample_indices`): seeded by ``(seed, index)``.

    As vLLM runs each prompt of a list as its own request and seeds its n samples ``seed + index``, a
    seeded prompt samples the same alone, among other prompts or among other requests, and its first
    sample is what ``n=1`` gives; its samples differ from one another. ``seed=None``: fresh entropy.
    """
    return np.random.default_rng() if seed is None else np.random.default_rng([seed, index])


def row_rngs(seed: int | None, rows: Sequence[Sequence[int]]) -> list[np.random.Generator]:
    """One generator per row (each a prompt's token ids), see :func:`row_rng`."""
    return [row_rng(seed, k) for k in sample_indices(rows)]
