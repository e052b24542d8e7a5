"""README's promise: ``jax.grad`` of a language-model loss over npgpt's own params pytree, with
``npgpt.model.gpt2`` and no wrapper. The README's snippet is executed as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")

README = Path(__file__).resolve().parents[1] / "README.md"


def grad_snippet() -> str:
    """The first ```python block of README.md that calls ``jax.grad(``."""
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)
    for block in blocks:
        if "jax.grad(" in block:
            return block
    pytest.fail("README.md has no ```python block calling jax.grad(")


def test_snippet_is_short_and_has_no_wrapper():
    code = grad_snippet()
    assert len(code.strip().splitlines()) <= 10
    assert "from npgpt.model import gpt2" in code and "class " not in code


def test_readme_jax_grad_snippet_runs():
    namespace: dict = {}
    exec(compile(grad_snippet(), str(README), "exec"), namespace)  # our own README, as written
    grads, params = namespace["grads"], namespace["model"].params
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params), strict=True):
        assert g.shape == p.shape and bool(np.all(np.isfinite(np.asarray(g))))
    assert float(np.abs(np.asarray(grads["blocks"][0]["attn"]["c_attn"]["w"])).max()) > 0
