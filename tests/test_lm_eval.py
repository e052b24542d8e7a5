"""EleutherAI's lm-evaluation-harness against ``npgpt serve``: its ``local-completions`` model, in
token mode and in string mode, gives the log-likelihoods the Python API computes directly.

Two local tasks are written to ``tmp_path`` from the repo's own fixture (no downloads): a
multiple-choice task (each verse's opening, with its own ending among others') and a
rolling-perplexity task (``loglikelihood_rolling``) over verses and one passage longer than the
context. The server runs on a free loopback port, serving the bundled model as "gpt2" (the name
lm-eval gives tiktoken; the encoding comes from the ``tiktoken_gpt2`` fixture, built offline).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from npgpt.api import GPT2, load
from npgpt.tokenizer import default_files

pytest.importorskip("fastapi")
pytest.importorskip("lm_eval")

from npgpt.server import background_server, create_app

HELDOUT = Path(__file__).parent / "fixtures" / "kjv_heldout.txt"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundled() -> GPT2:
    return load(str(Path(str(default_files()[0])).parent / "bundled.safetensors"))


@pytest.fixture(scope="module")
def url(bundled):
    with background_server(create_app({"gpt2": bundled}, max_batch=4)) as base:
        yield base


def write_tasks(root: Path) -> tuple[list[dict], list[dict]]:
    """The two task YAMLs and their jsonl data under ``root``; returns the docs of each."""
    verses = [v for v in HELDOUT.read_text(encoding="utf-8").splitlines() if ", " in v][:5]
    openings = [v.split(", ", 1)[0] for v in verses]
    endings = [v.split(", ", 1)[1] for v in verses]
    mc = [
        {"context": openings[i] + ",", "choices": [endings[(i + k) % 5] for k in (2, 0, 1)], "answer": 1}
        for i in range(5)
    ]
    lines = HELDOUT.read_text(encoding="utf-8").splitlines()
    ppl = [{"text": lines[0]}, {"text": lines[1]}, {"text": "\n".join(lines[10:30])}]  # the last: three windows
    for name, docs in (("mc", mc), ("ppl", ppl)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    data = (
        f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {{path}}\n  cache_dir: {root / 'hf'}\n"
        "test_split: test\n"
    )
    (root / "npgpt_mc.yaml").write_text(
        "task: npgpt_mc\n" + data.format(path=root / "mc.jsonl") + "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n",
        encoding="utf-8",
    )
    (root / "npgpt_ppl.yaml").write_text(
        "task: npgpt_ppl\n" + data.format(path=root / "ppl.jsonl") + "output_type: loglikelihood_rolling\n"
        'doc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n",
        encoding="utf-8",
    )
    return mc, ppl


def continuation_logprob(model: GPT2, context_ids: list[int], continuation_ids: list[int]) -> float:
    """log p(continuation | context), directly with the Python API."""
    s = model.score(context_ids + continuation_ids)
    return float(sum(s.token_logprobs[len(context_ids) :]))


def rolling_logprob(model: GPT2, text: str, max_length: int) -> float:
    """lm-eval's ``loglikelihood_rolling`` by hand: the text after ``<|endoftext|>``, in windows of
    ``max_length - 2`` predicted tokens (lm-eval keeps one slot for the generated token and one for
    context); the first window is [EOT] + the text, later ones take the tokens before them as context."""
    ids = model.tokenizer.encode(text)
    span = max_length - 2
    total, done = 0.0, 0
    first = min(span, len(ids))
    total += continuation_logprob(model, [model.tokenizer.eot_id], ids[:first])
    done = first
    while done < len(ids):
        n = min(len(ids) - done, span)
        end = done + n
        window = ids[end - span - 1 : end - 1] + ids[end - 1 : end]  # span tokens of input + the last target
        total += continuation_logprob(model, window[: len(window) - n], window[len(window) - n :])
        done = end
    return total


@pytest.mark.parametrize("tokenized", [True, False], ids=["tokens", "strings"])
def test_lm_eval_local_completions_equals_direct_computation(
    url, bundled, tiktoken_gpt2, tmp_path, monkeypatch, tokenized
) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mc, ppl = write_tasks(tmp_path)
    n_ctx = bundled.config.n_ctx
    assert tiktoken_gpt2.name == "gpt2"  # lm-eval's tiktoken.encoding_for_model("gpt2") finds it cached
    out = simple_evaluate(
        model="local-completions",
        model_args={
            "base_url": url + "/v1/completions",
            "model": "gpt2",
            "tokenizer_backend": "tiktoken",
            "tokenized_requests": tokenized,
            "max_length": n_ctx,
            "num_concurrent": 1,
            "max_retries": 1,
            "batch_size": 2 if tokenized else 1,
        },
        tasks=["npgpt_mc", "npgpt_ppl"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        log_samples=True,
    )
    tok = bundled.tokenizer

    # multiple choice: each choice's log-likelihood, and the accuracy they give
    correct = []
    for sample in sorted(out["samples"]["npgpt_mc"], key=lambda s: s["doc_id"]):
        doc = mc[sample["doc_id"]]
        got = [r[0][0] for r in sample["resps"]]
        want = [
            continuation_logprob(
                bundled,
                tok.encode(doc["context"]),
                tok.encode(doc["context"] + " " + c)[len(tok.encode(doc["context"])) :],
            )
            for c in doc["choices"]
        ]
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        correct.append(int(np.argmax(want)) == doc["answer"])
    assert len(correct) == len(mc)
    assert out["results"]["npgpt_mc"]["acc,none"] == pytest.approx(np.mean(correct))

    # rolling perplexity: each text's log-likelihood after <|endoftext|>, and the word perplexity
    lls = []
    for sample in sorted(out["samples"]["npgpt_ppl"], key=lambda s: s["doc_id"]):
        text = ppl[sample["doc_id"]]["text"]
        got = sample["resps"][0][0]
        want = rolling_logprob(bundled, text, n_ctx)
        assert got == pytest.approx(want, abs=1e-4), sample["doc_id"]
        lls.append(want)
    assert len(tok.encode(ppl[2]["text"])) > 2 * n_ctx  # the long text really needs several windows
    short = bundled.score("<|endoftext|>" + ppl[0]["text"], allow_special=True)
    assert lls[0] == pytest.approx(short.log_likelihood, abs=1e-4)  # one window: all of [EOT] + text, scored
    words = sum(len(re.split(r"\s+", d["text"])) for d in ppl)
    assert out["results"]["npgpt_ppl"]["word_perplexity,none"] == pytest.approx(math.exp(-sum(lls) / words), rel=1e-4)
