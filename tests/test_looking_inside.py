"""docs/looking-inside.md's examples run as written, on the bundled model, and say what they claim."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "looking-inside.md"


@pytest.fixture(scope="module")
def blocks() -> list[str]:
    found = re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)
    assert len(found) == 5, "the page has the logit lens, a head's pattern, the cache, patching and gradients"
    return found


@pytest.fixture(scope="module")
def run(blocks: list[str]):
    """The first n blocks executed in order in one namespace, and what they printed."""
    namespace: dict = {}
    printed: list[str] = []

    def upto(n: int) -> tuple[dict, str]:
        for code in blocks[len(printed) : n]:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, str(DOC), "exec"), namespace)
            printed.append(out.getvalue())
        return namespace, "".join(printed[:n])

    return upto


def test_the_logit_lens_example(run):
    ns, out = run(1)
    model, ids, lens = ns["model"], ns["ids"], ns["lens"]
    assert model.source.endswith("bundled.safetensors")
    assert len(out.splitlines()) == model.config.n_layer + 1
    assert lens.top_ids[-1, -1] == model.logits(ids)[0, -1].argmax()
    assert out.splitlines()[-1].startswith(f"{model.config.n_layer} {model.tokenizer.decode([lens.top_ids[-1, -1]])!r}")


def test_the_attention_pattern_example(run):
    ns, out = run(2)
    pattern, cache = ns["pattern"], ns["cache"]
    np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(cache["blocks.1.attn.hook_pattern"][0, 2], pattern)
    assert "the last token attends most to" in out


def test_the_transformer_lens_cache_example(run):
    _, before = run(2)
    ns, out = run(3)
    model, ids, labels = ns["model"], ns["ids"], ns["labels"]
    last, parts = out[len(before) :].splitlines()
    assert labels == [f"{i}_pre" for i in range(model.config.n_layer)] + ["final_post"]
    assert last == f"final_post {model.tokenizer.decode([model.logits(ids)[0, -1].argmax()])!r}"  # the model's own
    assert parts == "['embed', 'pos_embed', '0_attn_out', '0_mlp_out'] True"


def test_the_patching_example_restores_the_clean_run_before_block_0(run):
    ns, out = run(4)
    model, p_him = ns["model"], ns["p_him"]
    clean, corrupted = p_him(model.logits(ns["clean"])), p_him(model.logits(ns["corrupted"]))
    assert abs(clean - corrupted) > 0.05  # the corruption matters
    lines = [line for line in out.splitlines() if line.startswith("patched before block")]
    restored = [float(line.rsplit(" ", 1)[1]) for line in lines]
    assert len(restored) == model.config.n_layer
    assert restored[0] == pytest.approx(clean, abs=1e-3)
    assert all(min(clean, corrupted) - 1e-3 <= r <= max(clean, corrupted) + 1e-3 for r in restored)


def test_the_attribution_patching_example(run):
    pytest.importorskip("jax")
    ns, _ = run(5)
    attr, model = ns["attr"], ns["model"]
    assert sorted(attr) == sorted(f"blocks.{i}.hook_resid_pre" for i in range(model.config.n_layer))
    for a in attr.values():
        assert np.isfinite(a).all() and np.abs(a[0, 0]).max() == 0.0  # position 0 is the same token
        assert np.abs(a[0, 1]).max() > 0
