"""The docs as a user acts on them: README.md's ``jax.grad`` snippet runs as written, and every ``npgpt``
command that README.md, docs/*.md or a command's own ``--help`` names uses options the command has (the
cheap ones, which look inside the default model, are run as written)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
SHELL = ("bash", "sh", "")  # the fences whose lines are commands
CHEAP = ("lens", "attention", "next", "tokenize")  # run as written: one forward pass of the default model
ENDS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "2>", ")"}  # where a command line's npgpt command ends


def fenced(text: str) -> tuple[list[tuple[str, str]], str]:
    """A Markdown text's fenced blocks as (info string, body), and the prose between them."""
    blocks, prose, lang, body = [], [], None, []
    for line in text.splitlines():
        if lang is None and (m := re.match(r"^```(\S*)\s*$", line)):
            lang, body = m.group(1), []
        elif lang is not None and line.startswith("```"):
            blocks.append((lang, "\n".join(body)))
            lang = None
        else:
            (body if lang is not None else prose).append(line)
    return blocks, "\n".join(prose)


def words(rest: str) -> list[str]:
    """The arguments after ``npgpt NAME`` as a shell reads them, up to a pipe, a redirection or a comment."""
    lex = shlex.shlex(rest, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    out = []
    try:
        for word in lex:
            if word in ENDS:
                break
            out.append(word)
    except ValueError:  # an unclosed quote: a fragment of prose, cut at the span's end
        pass
    return out


def doc_commands() -> list[tuple[str, str, list[str], bool]]:
    """(where, command, arguments, from a shell block) for every ``npgpt COMMAND ...`` in the docs: each line
    of a shell block, and each inline code span (``npgpt generate/next --dtype int8`` names two)."""
    found = []
    for path in DOCS:
        blocks, prose = fenced(path.read_text(encoding="utf-8"))
        for lang, body in blocks:
            if lang in SHELL:
                for line in body.replace("\\\n", " ").splitlines():
                    for m in re.finditer(r"(?:^|[|;&(]\s*)npgpt ([a-z][\w-]*)(.*)", line.strip()):
                        found.append((f"{path.name}: {line.strip()}", m[1], words(m[2]), True))
        prose = re.sub(r"^\|.*$", "", prose, flags=re.M)  # table rows: "npgpt numpy f32" names an engine
        for span in re.findall(r"`([^`]+)`", prose):
            span = span.replace("\n", " ")
            for m in re.finditer(r"\bnpgpt ((?:[a-z][\w-]*/)*[a-z][\w-]*)([^`]*)", span):
                for name in m[1].split("/"):
                    found.append((f"{path.name}: `{span}`", name, words(m[2]), False))
    return found


def flags(command) -> set[str]:
    return {"--help"} | {o for p in command.params for o in (*p.opts, *p.secondary_opts)}


@pytest.fixture(scope="module")
def commands() -> dict:
    import typer.main

    from npgpt.cli import app

    return typer.main.get_command(app).commands


def test_every_flag_in_the_docs_is_an_option_of_its_command(commands):
    checked = 0
    for where, name, args, shell in doc_commands():
        if name not in commands:
            assert not shell, f"{where}: npgpt has no command {name!r}"
            continue  # prose, e.g. "npgpt trained itself"
        checked += 1
        for word in args:
            flag = word.strip("[](),").split("=")[0]
            if re.fullmatch(r"--?[A-Za-z][\w-]*", flag):
                assert flag in flags(commands[name]), f"{where}: npgpt {name} has no option {flag}"
    assert checked > 80  # README, looking-inside, bundled-model and benchmarks name that many


def test_every_example_in_the_help_uses_options_of_its_command(commands):
    for name, command in commands.items():
        help_text = command.help or ""
        examples = re.findall(r"`([^`]+)`", help_text) + [
            part for line in re.findall(r"^Example[^:]*: (.*)$", help_text, flags=re.M) for part in line.split("  or  ")
        ]
        assert examples, f"npgpt {name} --help shows no example"
        for example in examples:
            for m in re.finditer(r"\bnpgpt ([a-z][\w-]*)(.*)", example):
                assert m[1] in commands, f"npgpt {name} --help: npgpt has no command {m[1]!r}"
                for word in words(m[2]):
                    if re.fullmatch(r"--?[A-Za-z][\w-]*", word):
                        assert word in flags(commands[m[1]]), f"npgpt {name} --help: npgpt {m[1]} has no {word}"
        texts = [help_text] + [getattr(p, "help", None) or "" for p in command.params]
        for flag in re.findall(r"(?<![\w./-])(--[A-Za-z][\w-]*)", "\n".join(texts)):
            assert any(flag in flags(c) for c in commands.values()), f"npgpt {name} --help names {flag}"


def test_the_cheap_doc_commands_run_as_written(commands, tmp_path, monkeypatch):
    """lens, attention, next and tokenize, as the docs show them, on the model a new user has: the bundled
    one (README's attention example once asked its 4 blocks for block 5)."""
    pytest.importorskip("matplotlib")  # --png
    from typer.testing import CliRunner

    from npgpt.cli import app

    monkeypatch.setenv("NPGPT_HOME", str(tmp_path / "empty-cache"))  # nothing downloaded
    monkeypatch.chdir(tmp_path)  # --png lens.png lands here
    # with a prompt: "`npgpt next --dtype int8`" is a fragment naming an option
    runs = {
        (name, tuple(args))
        for _, name, args, _ in doc_commands()
        if name in CHEAP and args and not args[0].startswith("-")
    }
    assert {name for name, _ in runs} == set(CHEAP)
    for name, args in sorted(runs):
        r = CliRunner().invoke(app, [name, *args])
        assert r.exit_code == 0, f"npgpt {shlex.join([name, *args])}: {r.output}{r.exception!r}"
    assert Path("lens.png").stat().st_size > 0


# -- README's jax.grad snippet -----------------------------------------------------------------------------
def grad_snippet() -> str:
    """The first ```python block of README.md that calls ``jax.grad(``."""
    for lang, block in fenced(README.read_text(encoding="utf-8"))[0]:
        if lang == "python" and "jax.grad(" in block:
            return block + "\n"
    pytest.fail("README.md has no ```python block calling jax.grad(")


def test_snippet_is_short_and_has_no_wrapper():
    code = grad_snippet()
    assert len(code.strip().splitlines()) <= 10
    assert "from npgpt.model import gpt2" in code and "class " not in code


def test_readme_jax_grad_snippet_runs():
    jax = pytest.importorskip("jax")
    namespace: dict = {}
    exec(compile(grad_snippet(), str(README), "exec"), namespace)  # our own README, as written
    grads, params = namespace["grads"], namespace["model"].params
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params), strict=True):
        assert g.shape == p.shape and bool(np.all(np.isfinite(np.asarray(g))))
    assert float(np.abs(np.asarray(grads["blocks"][0]["attn"]["c_attn"]["w"])).max()) > 0


# -- README's Python API -------------------------------------------------------------------------------------
def section(title: str) -> str:
    """README.md's ``## title`` section."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : None if end < 0 else end]


def test_the_python_api_block_runs_and_shows_what_it_prints(tmp_path, monkeypatch):
    monkeypatch.setenv("NPGPT_HOME", str(tmp_path))  # nothing downloaded: the bundled model
    blocks = [b for lang, b in fenced(section("Python API"))[0] if lang == "python"]
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    shown = dict(re.findall(r"^(\w+) = .*#\s*(.+)$", blocks[0], flags=re.M))
    assert namespace["ids"] == eval(shown["ids"])  # "# [15496, 995]"
    dtype, shape = shown["logits"].split(" ", 1)  # "# float32 [1, 2, 50257]"
    logits = namespace["logits"]
    assert isinstance(logits, np.ndarray) and str(logits.dtype) == dtype and list(logits.shape) == eval(shape)


def test_the_readme_and_generate_name_every_sampling_option():
    """Every option of SamplingParams is named by the Python API section and by ``GPT2.generate`` (whose
    docstring left out ``logit_bias``, ``skip_leading_space`` and ``logprobs``)."""
    from dataclasses import fields

    from npgpt.api import GPT2
    from npgpt.sampling import SamplingParams

    text, doc = section("Python API"), GPT2.generate.__doc__ or ""
    for f in fields(SamplingParams):
        assert f"`{f.name}" in text, f"README's Python API section does not name {f.name}"
        assert f"``{f.name}``" in doc, f"GPT2.generate's docstring does not name {f.name}"


def test_the_readme_names_every_command_that_takes_json(commands):
    sentence = re.search(r"For scripts,(.*?)take `--json`", README.read_text(encoding="utf-8"), flags=re.S)
    assert sentence is not None
    takes_json = {name for name, command in commands.items() if "--json" in flags(command)}
    assert set(re.findall(r"`(\w+)`", sentence[1])) == takes_json


def test_where_the_docs_put_the_cache_is_where_npgpt_looks(commands, tmp_path, monkeypatch):
    """``registry.home()``: $NPGPT_HOME, else $XDG_CACHE_HOME/npgpt, else ~/.cache/npgpt; README and the
    --help of download and list said ~/.cache/npgpt, which is not where a set XDG_CACHE_HOME puts it."""
    from npgpt import registry

    monkeypatch.delenv("NPGPT_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert registry.home() == tmp_path / "npgpt"
    texts = {"README.md": README.read_text(encoding="utf-8")} | {
        f"npgpt {name} --help": command.help or "" for name, command in commands.items()
    }
    for where, text in texts.items():
        if "~/.cache/npgpt" in text:
            assert "$XDG_CACHE_HOME/npgpt" in text, where
