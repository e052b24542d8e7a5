"""Generation: prefill, decode_step, and the one token iterator everything streams from.

The loop follows gpt-fast: a preallocated kv cache (``cache.py``), a ``prefill`` of the
left-padded prompts, then one ``decode_step`` per token. :func:`events` drives it and yields what
each row produced at each step; the CLI, the Python API and the server all consume it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .cache import KVCache, padded_sizes
from .engine import Engine
from .errors import NpgptError, shown
from .sampling import UNTIL_FULL, SamplingParams, choose, log_softmax, row_rng, sample_indices, top_logprobs
from .token_ids import check_token_ids, count_tokens, padding_note
from .tokenizer import StreamDecoder, Tokenizer


@dataclass
class DecodeState:
    """Decoding state of B rows sharing one kv cache.

    Row b's tokens occupy the cache slots where ``valid[b]`` is set (slots before them are left
    padding); its next token goes to slot ``start[b]``.
    """

    cache: KVCache
    valid: np.ndarray  # [B, S] bool: slots holding real tokens
    start: np.ndarray  # [B] next free slot

    @property
    def size(self) -> int:
        return len(self.start)


def left_pad(rows: Sequence[Sequence[int]], width: int | None = None, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Prompts of different lengths -> ids [B, T] padded on the left, and the pad count per row."""
    T = width or max(len(r) for r in rows)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    n_pad = np.array([T - len(r) for r in rows], dtype=np.int64)
    for b, r in enumerate(rows):
        ids[b, n_pad[b] :] = r
    return ids, n_pad


def _forward(engine: Engine, state: DecodeState, ids: np.ndarray) -> np.ndarray:
    """Run ids [B, T] at each row's ``start``; float32 logits of each row's last token [B, V]."""
    logits, state.cache = engine.forward(ids, state.cache, state.valid, state.start, last_only=True)
    state.start = state.start + ids.shape[1]
    return logits[:, -1, :]


def prefill(engine: Engine, rows: Sequence[Sequence[int]], capacity: int) -> tuple[np.ndarray, DecodeState]:
    """Encode the prompts into a fresh cache of at least ``capacity`` slots; logits of each last token [B, V].

    A compiling backend rounds the padded prompt length and the cache up to a few fixed sizes
    (``cache.padded_sizes``), so it compiles a handful of programs in all rather than one per request.
    """
    width, capacity = padded_sizes(max(len(r) for r in rows), capacity, engine.config.n_ctx, engine.backend.bucket)
    ids, n_pad = left_pad(rows, width)
    B = len(rows)
    valid = np.zeros((B, capacity), dtype=bool)
    for b in range(B):
        valid[b, n_pad[b] : width] = True
    state = DecodeState(engine.new_cache(B, capacity), valid, np.zeros(B, np.int64))
    return _forward(engine, state, ids), state


def decode_step(engine: Engine, state: DecodeState, tokens: np.ndarray) -> np.ndarray:
    """Feed one token per row [B]; logits of the next token [B, V]."""
    state.valid[np.arange(state.size), state.start] = True
    return _forward(engine, state, tokens[:, None])


@dataclass
class Event:
    """What one row produced at one step: a text delta (maybe empty) and the token behind it."""

    row: int
    text: str
    token: int | None = None
    logprob: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (EOT or a stop sequence) or "length"
    # the characters ``token`` completes in the row's decoded text, before stop sequences cut it or text is held
    # back ("" for a token ending inside a UTF-8 character, and for <|endoftext|>, which is never text)
    piece: str = ""


class TextTracker:
    """Detokenises one row and applies stop sequences to the text.

    Text that could be the start of a stop sequence is held back until it is clear, so a
    streamed delta never has to be taken back, and a stop sequence split across tokens is
    still found. ``skip_leading_space``: the text's leading whitespace is never given out, and a
    stop sequence lying wholly within it does not count (the reader never sees it: a chat reply
    whose first token is "\n" is not ended by the stop "\n").
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str], skip_leading_space: bool = False) -> None:
        self._decoder: StreamDecoder = tokenizer.stream_decoder()
        self.stop = tuple(stop)
        self.text = ""  # all text decoded so far (emitted + held back)
        self.emitted = 0  # characters of text already given out
        self.skip = skip_leading_space
        self.lead = 0  # characters of leading whitespace dropped (final once the text holds anything else)
        self.held = 0  # characters held back at the last push (see _held_back)
        self.piece = ""  # the characters the last token pushed completed

    def push(self, token: int) -> tuple[str, bool]:
        """Add a token; returns (delta to emit, whether a stop sequence was hit)."""
        before = len(self.text)
        self.piece = self._decoder.push(token)
        self._add(self.piece)
        # a match starting before lead - len(s) + 1 ends within the dropped whitespace
        hits = [i for s in self.stop if (i := self.text.find(s, max(0, max(before, self.lead) - len(s) + 1))) >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            return self._emit(len(self.text)), True
        self.held = self._held_back(len(self.text) - before)
        return self._emit(len(self.text) - self.held), False

    def finish(self) -> str:
        self._add(self._decoder.flush())
        return self._emit(len(self.text))

    def _add(self, delta: str) -> None:
        self.text += delta
        if self.skip and self.lead == len(self.text) - len(delta):  # nothing but whitespace before this delta
            self.lead = len(self.text) - len(self.text.lstrip())
            self.emitted = max(self.emitted, self.lead)

    def _held_back(self, grown: int) -> int:
        """Length of the longest suffix of the text that begins some stop sequence, the text having
        ``grown`` characters since the last push. That suffix is at most ``grown`` longer than the one
        held then (what it holds before the new characters begins a stop sequence too), so only those
        lengths are tried: a few per token, not the whole text's for each (long stops made every token
        cost the text's length times the stops)."""
        longest = min(len(self.text), self.held + grown, max((len(s) for s in self.stop), default=1) - 1)
        for k in range(longest, 0, -1):
            if any(s.startswith(self.text[-k:]) for s in self.stop):
                return k
        return 0

    def _emit(self, end: int) -> str:
        end = max(end, self.emitted)
        delta, self.emitted = self.text[self.emitted : end], end
        return delta


def check_request(engine: Engine, tokenizer: Tokenizer, rows: Sequence[Sequence[int]], params: SamplingParams) -> None:
    """Reject what cannot run, before any compute: NpgptError with ``param`` "prompt", "max_new_tokens" or
    "logit_bias". Prompt ids and logit_bias's must be tokens (:func:`npgpt.token_ids.count_tokens`)."""
    config = engine.config
    n_tokens = count_tokens(config.n_vocab, tokenizer)
    if not rows:
        raise NpgptError("no prompts given; pass at least one non-empty prompt", param="prompt")
    for i, r in enumerate(rows):
        if len(r) == 0:
            raise NpgptError(f"prompt {i} is empty; give at least one token of text", param="prompt")
        if len(r) >= config.n_ctx:  # no max_new_tokens could help: the prompt is what to change
            raise NpgptError(
                f"prompt {i} has {len(r)} tokens, leaving none of the model's context of {config.n_ctx} "
                "for a new token; shorten the prompt",
                param="prompt",
            )
        # a max_new_tokens given must fit; the default fits by itself (SamplingParams.room)
        if params.max_new_tokens not in (None, UNTIL_FULL) and len(r) + params.room(len(r)) > config.n_ctx:
            raise NpgptError(
                f"prompt {i} has {len(r)} tokens and max_new_tokens is {params.max_new_tokens}: "
                f"together over the model's context of {config.n_ctx}; shorten the prompt "
                "or lower max_new_tokens",
                param="max_new_tokens",
            )
        check_token_ids(r, config.n_vocab, n_tokens, f"prompt {i}")
    check_logit_bias(config.n_vocab, n_tokens, params)


def check_logit_bias(n_vocab: int, n_tokens: int, params: SamplingParams) -> None:
    """Refuse a ``logit_bias`` naming an id that is no token (outside ``[0, n_tokens)``: past the vocabulary,
    or in a padded vocabulary's rows past the tokenizer's, never chosen anyway), or banning every token
    (param "logit_bias")."""
    outside = [t for t in params.logit_bias if t >= n_tokens]
    if outside:
        raise NpgptError(
            f"logit_bias names token id {shown(outside[0])}, outside the vocabulary [0, {n_tokens})"
            + padding_note(n_vocab, n_tokens),
            param="logit_bias",
        )
    if sum(b <= -100 for b in params.logit_bias.values()) >= n_tokens:
        raise NpgptError("logit_bias bans every token, so none can be chosen; ban fewer", param="logit_bias")


class RowSampler:
    """One row's state between steps: penalty counts, RNG, text and stop handling.

    ``pick(logits)`` chooses the row's next token and returns the :class:`Event` for it; the
    batched loop below and the server's continuous-batching scheduler both drive rows with it.
    """

    def __init__(
        self,
        row: int,
        params: SamplingParams,
        rng: np.random.Generator,
        tokenizer: Tokenizer,
        n_vocab: int,
        prompt: Sequence[int] = (),
        n_ctx: int | None = None,
    ) -> None:
        self.row, self.params, self.rng = row, params, rng
        self.limit = params.room(len(prompt), n_ctx)  # max_new_tokens, or the default that fits the context
        # Ids a token can have: a padded vocabulary (nanoGPT's and llm.c's 50304) has rows past the
        # tokenizer's last id that no text decodes to; they are never chosen, nor listed in logprobs.
        self.n_tokens = count_tokens(n_vocab, tokenizer)
        self.counts = np.zeros(self.n_tokens, dtype=np.float32)  # generated tokens (presence/frequency penalties)
        self.seen = np.zeros(self.n_tokens, dtype=bool)  # prompt and generated tokens (repetition penalty, as in HF)
        self.seen[[t for t in prompt if t < self.n_tokens]] = True
        self.tracker = TextTracker(tokenizer, params.stop, params.skip_leading_space)
        self.eos_ids = tokenizer.eos_token_ids  # <|endoftext|>, or the fine-tune's own (a chat model's <|im_end|>)
        self.eot_id = tokenizer.eot_id  # <|endoftext|>: no text, even where generation goes on past it
        self.n_new = 0
        self.token = 0  # the last token chosen: the next step's input
        self.done = False

    def pick(self, logits: np.ndarray) -> Event:  # [V] -> the event for the chosen token
        p = self.params
        full, logits = logits, logits[: self.n_tokens]  # the same as masking the padded rows with -inf
        token = choose(logits, self.counts, p, self.rng, self.seen)
        self.token = token
        self.counts[token] += 1
        self.seen[token] = True
        self.n_new += 1
        lp, top = None, []
        if p.logprobs is not None:
            # the model's own log-probabilities, over its full output as model.score and the server's echo take
            # them (a padded vocabulary's rows too); the alternatives listed are tokens only
            row_lp = log_softmax(full)[: self.n_tokens]
            lp, top = float(row_lp[token]), top_logprobs(row_lp, p.logprobs)
        if p.stop_at_eot and token in self.eos_ids:
            event = Event(self.row, self.tracker.finish(), token, lp, top, "stop")
        else:
            # generating on past <|endoftext|>, it is still no text (as vLLM's skip_special_tokens, its default):
            # the text, its deltas and the stop sequences matched in it are the other tokens', joined across it
            delta, stopped = self.tracker.push(token) if token != self.eot_id else ("", False)
            piece = self.tracker.piece if token != self.eot_id else ""
            if stopped:
                event = Event(self.row, delta, token, lp, top, "stop", piece)
            elif self.n_new == self.limit:
                event = Event(self.row, delta + self.tracker.finish(), token, lp, top, "length", piece)
            else:
                event = Event(self.row, delta, token, lp, top, piece=piece)
        self.done = event.finish_reason is not None
        return event


def events(
    engine: Engine, tokenizer: Tokenizer, rows: Sequence[Sequence[int]], params: SamplingParams
) -> Iterator[Event]:
    """The token iterator: generate for every prompt (token ids) in one batch, one step at a time.

    Each row stops on its own (EOT, a stop sequence, or ``max_new_tokens``) and gets a final
    event with ``finish_reason``; the batch ends when every row has stopped. A request that cannot run
    raises NpgptError here, at the call, not at the first ``next()``: nothing is printed before it.
    """
    check_request(engine, tokenizer, rows, params)
    return _run(engine, tokenizer, rows, params)


# Rows decoded together, and padded prompt tokens prefilled together (rows x the longest prompt), at most: vLLM's
# max_num_seqs (256) and a max_num_batched_tokens. A list of 100,000 prompts ran as one batch, whose logits alone
# ([B, V] float32: 20 GB a step) and prefill activations outgrew memory; it runs a batch at a time.
MAX_BATCH_ROWS = 256
MAX_BATCH_TOKENS = 16_384


def batches(
    rows: Sequence[Sequence[int]],
    limits: Sequence[int],
    n_ctx: int,
    most_rows: int = MAX_BATCH_ROWS,
    most_tokens: int = MAX_BATCH_TOKENS,
) -> list[list[int]]:
    """The rows' indices, in order, in batches run one after another, each bounded in memory (``most_rows`` rows,
    ``most_tokens`` padded prompt tokens; a row alone is always a batch) and able to share one kv cache: a batch's
    prompts are left-padded to its longest, so its longest prompt plus its largest ``limits`` (each row's new
    tokens at most) must fit in the context. A given ``max_new_tokens`` fits beside every prompt
    (:func:`check_request`); the default's room differs by prompt (``SamplingParams.room``), and a short prompt's
    64 beside a long one's few would not fit."""
    out: list[list[int]] = []
    width = room = 0
    for b, (r, limit) in enumerate(zip(rows, limits, strict=True)):
        w, m = max(width, len(r)), max(room, limit)
        if out and len(out[-1]) < most_rows and (len(out[-1]) + 1) * w <= most_tokens and w + m <= n_ctx:
            out[-1].append(b)
            width, room = w, m
        else:
            out.append([b])
            width, room = len(r), limit
    return out


def _run(
    engine: Engine, tokenizer: Tokenizer, rows: Sequence[Sequence[int]], params: SamplingParams
) -> Iterator[Event]:
    """:func:`events`' generator, once the request is checked: each of :func:`batches` in turn. A row's generator
    is its prompt's sample's over the whole request (:func:`npgpt.sampling.row_rng`), whichever batch it runs in."""
    n_ctx, n_vocab = engine.config.n_ctx, engine.config.n_vocab
    limits = [params.room(len(r), n_ctx) for r in rows]
    samples = sample_indices(rows)
    for batch in batches(rows, limits, n_ctx):
        samplers = [
            RowSampler(b, params, row_rng(params.seed, samples[b]), tokenizer, n_vocab, rows[b], n_ctx) for b in batch
        ]
        yield from _run_batch(engine, [rows[b] for b in batch], samplers, len(rows))


def _run_batch(
    engine: Engine, rows: Sequence[Sequence[int]], samplers: Sequence[RowSampler], n_prompts: int = 1
) -> Iterator[Event]:
    """Decode one batch of rows (prompts' ids and their samplers, of a request of ``n_prompts``) until every row has
    stopped."""
    # prompts left-padded to the longest: every row's new tokens go after it (batches keeps this in the context)
    capacity = max(len(r) for r in rows) + max(s.limit for s in samplers)
    logits, state = prefill(engine, rows, capacity)
    while True:
        for j, s in enumerate(samplers):
            if not s.done:
                yield _pick(s, logits[j], n_prompts)
        if all(s.done for s in samplers):
            return
        logits = decode_step(engine, state, np.array([s.token for s in samplers], dtype=np.int64))


def _pick(sampler: RowSampler, logits: np.ndarray, n_prompts: int) -> Event:
    """``sampler.pick(logits)``, an error of its row naming the prompt where the request has several: logits that are
    not finite for one prompt of many (a NaN position embedding that only a long prompt reaches, a 16-bit overflow
    on one text) said "the model's logits are not finite ..." with nothing to tell which prompt to look at."""
    try:
        return sampler.pick(logits)
    except NpgptError as e:
        if n_prompts == 1:
            raise
        raise NpgptError(f"prompt {sampler.row}: {e}", param=e.param, keywords=e.keywords) from None
