"""How much the narrower weight storages (float16, bfloat16, int8) change what the model computes.

Three measurements, each against the same model loaded in float32:
- :func:`logits_precision`: max |logit difference| and cross-entropy change on random token ids
  (for `npgpt bench`: a 124M-shape model with random weights);
- :func:`text_precision`: cross-entropy (nats per token) and perplexity on real text, e.g. the
  bundled model on its held-out King James text (``tests/fixtures/kjv_heldout.txt``);
- :func:`greedy_agreement`: how many leading tokens of greedy (temperature 0) output match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

NARROW_DTYPES = ("float16", "bfloat16", "int8")
README_PROMPT = "And God said"


def heldout_text() -> Path | None:
    """The bundled model's held-out test text, where this is a source checkout (it is not installed)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "kjv_heldout.txt"
    return path if path.is_file() else None


def logits_precision(
    path: str,
    backend: str = "torch",
    dtypes: tuple[str, ...] = NARROW_DTYPES,
    rows: int = 4,
    seq: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Per dtype: ``logits_max_abs_diff`` and ``cross_entropy_change`` (nats) against float32 NumPy.

    The real path (``load(path, backend=backend, dtype=...)``) on ``rows`` x ``seq`` random ids.
    """
    from .api import load
    from .train.loss import cross_entropy

    ref_model = load(path)
    ids = np.random.default_rng(seed).integers(0, ref_model.config.n_vocab, (rows, seq + 1))
    ref = ref_model.logits(ids[:, :-1])
    ref_ce = float(cross_entropy(ref, ids[:, 1:]))
    del ref_model
    out: dict[str, Any] = {"backend": backend, "float32": {"cross_entropy": ref_ce}}
    for dtype in dtypes:
        logits = load(path, backend=backend, dtype=dtype).logits(ids[:, :-1])
        ce = float(cross_entropy(logits, ids[:, 1:]))
        out[dtype] = {
            "logits_max_abs_diff": float(np.abs(logits - ref).max()),
            "cross_entropy": ce,
            "cross_entropy_change": ce - ref_ce,
        }
    return out


def text_precision(
    text: str, model: str = "bundled", backend: str = "torch", dtypes: tuple[str, ...] = NARROW_DTYPES
) -> dict[str, Any]:
    """Per dtype (and float32): ``cross_entropy``, ``perplexity`` and their change from float32 on ``text``.

    Scored in non-overlapping windows of the model's context (``npgpt eval --stride`` equal to
    the window), so the perplexity is a little higher than ``npgpt eval``'s default, which gives
    each token more context.
    """
    from .api import load
    from .evaluate import perplexity

    def score(m: Any) -> dict[str, Any]:  # non-overlapping windows: half the work of eval's default stride
        return perplexity(m, text, stride=m.config.n_ctx)

    ref = score(load(model, backend=backend))
    out: dict[str, Any] = {
        "model": model,
        "backend": backend,
        "tokens": ref["tokens"],
        "float32": {"cross_entropy": ref["cross_entropy"], "perplexity": ref["perplexity"]},
    }
    for dtype in dtypes:
        r = score(load(model, backend=backend, dtype=dtype))
        out[dtype] = {
            "cross_entropy": r["cross_entropy"],
            "perplexity": r["perplexity"],
            "cross_entropy_change": r["cross_entropy"] - ref["cross_entropy"],
            "perplexity_change": r["perplexity"] - ref["perplexity"],
        }
    return out


def greedy_agreement(
    model: str = "bundled",
    backend: str = "torch",
    dtypes: tuple[str, ...] = NARROW_DTYPES,
    prompt: str = README_PROMPT,
    n: int = 32,
) -> dict[str, int]:
    """Per dtype: how many of the first ``n`` greedy tokens after ``prompt`` equal float32's."""
    from .api import load

    def greedy(m: Any) -> list[int]:
        return m.completions([prompt], max_new_tokens=n, temperature=0.0)[0].tokens

    ref = greedy(load(model, backend=backend))
    out = {}
    for dtype in dtypes:
        tokens = greedy(load(model, backend=backend, dtype=dtype))
        n_same = min(len(ref), len(tokens))
        out[dtype] = next((i for i, (a, b) in enumerate(zip(ref, tokens, strict=False)) if a != b), n_same)
    return out


def measure(path: str, backend: str = "torch", dtypes: tuple[str, ...] = NARROW_DTYPES) -> dict[str, Any]:
    """All three for ``npgpt bench --precision``: logits on ``path``, text and greedy on the bundled model."""
    out = logits_precision(path, backend, dtypes)
    text = heldout_text()
    out["heldout"] = (
        text_precision(text.read_text(encoding="utf-8"), backend=backend, dtypes=dtypes)
        if text is not None
        else {"error": "tests/fixtures/kjv_heldout.txt not found (not a checkout)"}
    )
    out["greedy_same_tokens"] = greedy_agreement(backend=backend, dtypes=dtypes)
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    """One line per backend and dtype for the bench's printout (``result["numpy"]``: NumPy's int8, nested)."""
    lines = []
    backend = result.get("backend", "torch")
    held, greedy = result.get("heldout", {}), result.get("greedy_same_tokens", {})
    for dtype in NARROW_DTYPES:
        p = result.get(dtype)
        if p is None:
            continue
        line = (
            f"{backend} {dtype} weights: logits max |diff| {p['logits_max_abs_diff']:.2e} (random 124M), "
            f"cross-entropy {p['cross_entropy_change']:+.2e}"
        )
        if dtype in held:
            h = held[dtype]
            line += (
                f"; held-out text {h['cross_entropy_change']:+.4f} nats, perplexity "
                f"{held['float32']['perplexity']:.3f} -> {h['perplexity']:.3f}"
            )
        if dtype in greedy:
            line += f"; greedy tokens equal to float32: {greedy[dtype]}"
        lines.append(line)
    if "error" in held:
        lines.append(f"held-out text: {held['error']}")
    nested = result.get("numpy")
    if nested is not None:
        lines += [f"numpy int8: {nested['error']}"] if "error" in nested else summary_lines(nested)
    return lines
