"""What the scheduler runs: a request's rows and how each one ends (as llama.cpp's server has tasks and slots).

A :class:`Request` comes from any thread; the scheduler's worker turns each of its prompts into a
row (:class:`Row`, the shared per-row sampler plus the request it answers) and delivers the
request's events, or the one error that ends it, through ``request.deliver``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import reason
from ..generate import RowSampler
from ..sampling import SamplingParams, row_rng, sample_indices

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

log = logging.getLogger("npgpt.server")

Deliver = Callable[[Any], None]  # gets each Event of a request, or the exception that ended it


class QueueFull(Exception):
    """More requests are waiting than the scheduler's ``max_queue``; try again shortly."""


class ShuttingDown(RuntimeError):
    """The scheduler is closed: the server is shutting down. Delivered to requests it ends."""


class RowFailed(RuntimeError):
    """One row of a request failed on its own (sampling, detokenising, stop handling); the request ends.

    ``index`` is the row's index in the request (the choice index); ``__cause__`` is the original error.
    """

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(f"choice {index} failed: {reason(error)}")
        self.index = index
        self.__cause__ = error


@dataclass(eq=False)
class Request:
    """Rows to generate (each a prompt's token ids) with one set of sampling params.

    ``deliver`` is called from the worker thread with each :class:`Event` (``row`` = the index in
    ``rows``) and, should the worker fail, once with the exception.
    """

    rows: list[list[int]]
    params: SamplingParams
    deliver: Deliver
    cancelled: bool = False
    failed: bool = False  # an error was delivered: no more events
    admitted: int = 0  # rows handed to the batch so far

    def __post_init__(self) -> None:
        self.samples = sample_indices(self.rows)  # which sample of its prompt each row is

    def rng(self, index: int) -> np.random.Generator:
        """Row ``index``'s generator, made when the row is admitted (on the worker, not the caller's thread);
        the same as :func:`npgpt.sampling.row_rngs` gives row ``index``."""
        return row_rng(self.params.seed, self.samples[index])


class Row(RowSampler):
    """A row of a request: the shared per-row sampler, plus the request it answers."""

    def __init__(self, request: Request, index: int, tokenizer: Tokenizer, n_vocab: int, n_ctx: int) -> None:
        rows = request.rows
        super().__init__(index, request.params, request.rng(index), tokenizer, n_vocab, rows[index], n_ctx)
        self.request = request


def safe_deliver(request: Request, item: Any) -> None:
    try:
        request.deliver(item)
    except Exception:  # a broken consumer must not take the worker down
        log.exception("delivering an event failed")


def unique(requests: list[Request]) -> list[Request]:
    return list({id(r): r for r in requests}.values())
