"""npgpt/cli/: the real ``npgpt`` entry point, run in a subprocess."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CONFIGS, random_params, run_cli

from npgpt.api import load
from npgpt.formats import npgpt_format


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tiny.safetensors"
    npgpt_format.save(path, CONFIGS["tiny"], random_params(CONFIGS["tiny"]))
    return str(path)


def test_every_command_has_help_with_an_example():
    from npgpt.cli import app

    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert {"generate", "download", "convert", "info", "tokenize", "next"} <= set(names)
    for name in names:
        r = run_cli(name, "--help")
        assert r.returncode == 0, r.stderr
        assert "Example" in r.stdout, name


def test_generate_matches_the_python_api(model_file):
    expected = load(model_file).generate("Hello there", max_new_tokens=8, temperature=0.7, seed=3)
    r = run_cli(
        "generate",
        "Hello there",
        "--model",
        model_file,
        "--max-new-tokens",
        "8",
        "--temperature",
        "0.7",
        "--seed",
        "3",
        "--no-echo",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected + "\n"
    streamed = run_cli(
        "generate",
        "Hello there",
        "--model",
        model_file,
        "--max-new-tokens",
        "8",
        "--temperature",
        "0.7",
        "--seed",
        "3",
        "--stream",
    )
    assert streamed.stdout == "Hello there" + expected + "\n"


def test_generate_with_16bit_weights_on_torch():
    # The bundled model's weights are float16 already: storing them in 16 bits loses nothing, and
    # rounding only the products' inputs does not change its greedy choices.
    args = ("generate", "And God said", "--max-new-tokens", "16", "--temperature", "0", "--no-echo")
    reference = run_cli(*args)
    for dtype in ("float16", "bfloat16"):
        r = run_cli(*args, "--backend", "torch", "--dtype", dtype)
        assert r.returncode == 0, r.stderr
        assert r.stdout == reference.stdout and len(r.stdout) > 20


def test_top_p_zero_is_greedy(model_file):
    # OpenAI accepts top_p=0, and transformers' TopPLogitsWarper keeps the most likely token at 0
    args = ("generate", "And God said", "--model", model_file, "--max-new-tokens", "8", "--no-echo")
    r = run_cli(*args, "--top-p", "0", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout == run_cli(*args, "--temperature", "0").stdout


def test_generate_prompts_from_a_file_batched(model_file, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("First prompt\n\nSecond one here\n")
    r = run_cli(
        "generate", "--file", str(prompts), "-n", "2", "--model", model_file, "--max-new-tokens", "4", "--seed", "1"
    )
    assert r.returncode == 0, r.stderr
    expected = load(model_file).generate(["First prompt"] * 2 + ["Second one here"] * 2, max_new_tokens=4, seed=1)
    for i, text in enumerate(expected):
        assert f"--- {i} ---" in r.stdout and text in r.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["generate", "Hi", "--temperature", "-1"], "temperature"),
        (["generate", "Hi", "--top-p", "-0.1"], "--top-p must be"),
        (["generate", "Hi", "--model", "no-such-model"], "no-such-model"),
        (["generate", "Hi", "--max-new-tokens", "5000"], "context"),
        (["generate"], "PROMPT"),
        (["download", "999M"], "124M"),
        (["info", "/nonexistent/dir"], "nonexistent"),
        (["generate", "Hi", "--dtype", "float16"], "use --backend torch for --dtype float16"),
        (["next", "Hi", "--dtype", "int4"], "error: --dtype int4 is unknown; choose one of"),
        (["convert", "/nonexistent", "out.safetensors"], "nonexistent"),
    ],
)
def test_errors_are_one_line_without_traceback(model_file, args, words):
    if "--max-new-tokens" in args or args == ["generate", "Hi", "--temperature", "-1"]:
        args = [*args, "--model", model_file]
    r = run_cli(*args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert words in lines[0]


@pytest.mark.parametrize("name", ["a\nb", "a\rb", "e\x1b[31mred", "nul\x7fdel"])
def test_an_error_naming_a_path_with_control_characters_is_one_line(tmp_path, name):
    """A folder whose name holds a newline split `npgpt info`'s error over two lines ("error: .../a" and
    "b/model.safetensors: not a safetensors file ..."), and one holding an escape sequence sent it to the terminal
    raw. Control characters in an error are written as Python escapes: one line, nothing for the terminal to run."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"garbage, not a model file at all")
    r = run_cli("info", str(folder / "model.safetensors"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and r.stderr.endswith("\n"), repr(r.stderr)
    assert repr(name)[1:-1] in r.stderr and "\x1b" not in r.stderr and "\r" not in r.stderr


@pytest.mark.parametrize("extra", [[], ["-n", "2"]])
def test_a_streamed_request_that_cannot_run_prints_nothing_on_stdout(model_file, extra):
    """`npgpt generate PROMPT --stream` echoed the prompt before the request was checked: a too-long one
    left "PROMPT" on stdout above its error line. The error now comes first and stdout stays empty."""
    r = run_cli("generate", "And God said", "--stream", "--max-new-tokens", "100000", "--model", model_file, *extra)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "--max-new-tokens" in r.stderr.strip().splitlines()[-1]


def test_tokenize_shows_ids():
    r = run_cli("tokenize", "Hello world")
    assert r.returncode == 0 and "15496 995" in r.stdout
    assert run_cli("tokenize", "Hello world", "--ids").stdout.strip() == "15496 995"


def test_next_shows_k_candidates(model_file):
    r = run_cli("next", "Hello", "-k", "3", "--model", model_file)
    assert r.returncode == 0, r.stderr
    top = load(model_file).next_tokens("Hello", k=3)
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3
    for line, (token_id, _, p) in zip(lines, top, strict=True):
        assert str(token_id) in line and f"{p:.2%}" in line


def test_info_and_convert(model_file, tmp_path):
    r = run_cli("info", model_file)
    assert r.returncode == 0 and "n_layer" in r.stdout and f"{CONFIGS['tiny'].n_params:,}" in r.stdout
    out = tmp_path / "hf"
    r = run_cli("convert", model_file, str(out), "--to", "hf")
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()


def test_convert_takes_a_model_name_as_info_does(tmp_path):
    from npgpt.registry import bundled_path

    out = tmp_path / "bundled.safetensors"
    r = run_cli("convert", "bundled", str(out), env={"NPGPT_HOME": str(tmp_path / "home")})
    assert r.returncode == 0, r.stderr
    a, b = load(str(bundled_path())), load(str(out))
    assert a.config == b.config
    ids = [a.tokenizer.encode("And God said")]
    np.testing.assert_allclose(a.logits(ids), b.logits(ids), atol=1e-5)
    r = run_cli("convert", "no-such-model", str(tmp_path / "x.safetensors"), env={"NPGPT_HOME": str(tmp_path / "home")})
    assert r.returncode == 1 and "not a file or a known model" in r.stderr and "Traceback" not in r.stderr


def test_convert_replaces_its_own_output_only(model_file, tmp_path):
    """`npgpt convert bundled notes.txt` wrote the model over the notes, exit 0; `convert m.gguf m.gguf --dtype q8_0`
    replaced the source with a lossy copy. A file that is no model of the format, or the source itself, is refused
    and left as it was; a model of the same format is replaced, as save_pretrained and llama.cpp's converters do."""
    from npgpt.errors import CheckpointError
    from npgpt.formats import convert

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    r = run_cli("convert", model_file, str(notes))
    assert r.returncode == 1 and r.stderr == (
        f"error: {notes} exists and is not a model: converting would overwrite it; give another path, "
        "or remove it first\n"
    ), r.stderr
    assert notes.read_text() == "my notes\n"
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="config.json exists and is not a model"):
        convert(model_file, project, fmt="hf")
    gguf = convert(model_file, tmp_path / "m.gguf", fmt="gguf")
    other = convert(model_file, tmp_path / "m.bin", fmt="gguf")  # a GGUF file named as llm.c's are
    with pytest.raises(CheckpointError, match="m.bin holds a model in gguf format, which writing llmc would overwrite"):
        convert(model_file, other, fmt="llmc")
    before = gguf.read_bytes()
    with pytest.raises(CheckpointError, match="m.gguf is the model being converted"):
        convert(gguf, tmp_path / "." / "m.gguf", fmt="gguf", dtype="q8_0")
    assert gguf.read_bytes() == before
    hf = convert(model_file, tmp_path / "hf", fmt="hf")
    for dst, fmt in [(hf, "hf"), (hf, "npgpt"), (hf / "model.safetensors", "npgpt")]:
        with pytest.raises(CheckpointError, match="is the model being converted"):
            convert(hf, dst, fmt=fmt)
    assert convert(model_file, hf, fmt="hf") == hf  # its own output, replaced
    assert convert(gguf, tmp_path / "m.safetensors") == tmp_path / "m.safetensors"
    assert convert(model_file, tmp_path / "m.safetensors") == tmp_path / "m.safetensors"


def test_eval_batch_size_past_the_machines_memory_is_one_line(tmp_path):
    """llama.cpp's -b 2048 counts tokens; `npgpt eval --batch-size 2048` asked for 2048 windows' logits at once (400 GB
    for GPT-2) and ended in MemoryError ('internal error') or the OOM killer: it is refused before the pass, saying
    how much it needs and what the option counts. Here the machine is made to have 1 GiB."""
    import subprocess
    import sys

    text = tmp_path / "text.txt"
    text.write_text(
        "In the beginning God created the heaven and the earth. " * 400
    )  # 34 windows of 256 tokens, 128 apart
    script = (
        "import sys, npgpt.score\n"
        "npgpt.score.physical_memory = lambda: 2**30\n"
        "from npgpt.cli import main\n"
        f"sys.argv = ['npgpt', 'eval', '-d', {str(text)!r}, '-m', 'bundled', '--batch-size', sys.argv[1]]\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", script, "2048"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.endswith(
        "error: 34 windows of 256 tokens in one pass (--batch-size) need 2 GiB of logits, more than this machine's "
        "1 GiB of memory; lower --batch-size (it counts windows, not tokens)\n"
    ), r.stderr
    r = subprocess.run([sys.executable, "-c", script, "8"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "perplexity" in r.stdout, r.stderr


def test_a_batch_file_of_many_prompts_runs_a_bounded_batch_at_a_time(tmp_path):
    """A --batch-file of 10,000 prompts was decoded as one batch of 10,000 rows (2 GB of logits a step for GPT-2, and
    the caches), until memory ran out: rows run MAX_ROWS (256, vLLM's max_num_seqs) at a time, every row of a prompt
    in one batch so a seeded row draws as before, and the completions come out in the file's order."""
    import subprocess
    import sys

    from npgpt.cli.generate import row_groups

    assert row_groups(list("abcab"), 2) == [[0, 3], [1, 4], [2]]  # a prompt's rows together, in order
    assert row_groups(["a"] * 5 + ["b"], 2) == [[0, 1, 2, 3, 4], [5]]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Prompt {i}\n" for i in range(10)))
    script = (
        "import sys, npgpt.api, npgpt.cli.generate\n"
        "npgpt.cli.generate.MAX_ROWS = 4\n"
        "events = npgpt.api.GPT2.events\n"
        "def counted(self, rows, **kw):\n"
        "    print('batch', len(rows), file=sys.stderr)\n"
        "    return events(self, rows, **kw)\n"
        "npgpt.api.GPT2.events = counted\n"
        "from npgpt.cli import main\n"
        f"sys.argv = ['npgpt', 'generate', '--batch-file', {str(prompts)!r}, '-m', 'bundled', '--max-new-tokens', '2',"
        " '--temperature', '0', '-n', '2']\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (
        r.returncode == 0 and [line for line in r.stderr.splitlines() if line.startswith("batch")] == ["batch 4"] * 5
    ), r.stderr
    heads = [line for line in r.stdout.splitlines() if line.startswith("--- ")]
    assert heads == [f"--- {i} ---" for i in range(20)], r.stdout
    bodies = r.stdout.split("--- ")[1:]
    assert all(body.split("\n", 1)[1].startswith(f"Prompt {i // 2}") for i, body in enumerate(bodies)), r.stdout


def test_generate_defaults_are_sampling_params_defaults():
    """`npgpt generate` shows its defaults in --help, so they are written in its signature; they must be
    SamplingParams' own (the one source of truth the API and the server use), never drift from them."""
    import inspect

    from npgpt.cli.generate import generate
    from npgpt.sampling import DEFAULT_MAX_NEW_TOKENS, SamplingParams

    defaults = SamplingParams()
    shown = {name: p.default for name, p in inspect.signature(generate).parameters.items()}
    # (--stop and --logit-bias are repeatable options, whose default None is SamplingParams' empty () and {})
    shared = [f for f in vars(defaults) if f in shown and f not in ("stop", "logit_bias")]
    assert len(shared) >= 9, shared
    for name in shared:
        # max_new_tokens' None is DEFAULT_MAX_NEW_TOKENS, or the rest of the context: --help shows the number
        expected = DEFAULT_MAX_NEW_TOKENS if name == "max_new_tokens" else getattr(defaults, name)
        assert shown[name] == expected, name


def test_generate_s_default_max_new_tokens_fits_a_long_prompt_and_a_given_one_is_still_checked():
    """A 230-token prompt on the bundled model (context 256) failed "--max-new-tokens is 64: together over the
    model's context", an option never typed; unset, it is now the rest of the context. Typed, it is still checked."""
    prompt = " ".join(["word"] * 230)
    r = run_cli("generate", prompt, "--temperature", "0", "--ignore-eos", "--json")
    assert r.returncode == 0, r.stderr
    r = run_cli("generate", prompt, "--max-new-tokens", "64")
    assert r.returncode == 1 and "--max-new-tokens is 64: together over" in r.stderr, r.stderr


def test_output_that_cannot_encode_the_text_is_escaped_not_an_internal_error():
    """stdout in an encoding without the text's characters (a latin-1 locale, Windows' cp1252 pipe): the
    characters are written as Python escapes (as Python writes stderr), never an internal error."""
    r = run_cli("tokenize", "Hi 👋", env={"PYTHONIOENCODING": "ascii"})
    assert r.returncode == 0, r.stderr
    assert "17250 50169 233" in r.stdout and "\\u27e8" in r.stdout  # the ids, and ⟨ of the byte tokens escaped


def test_an_internal_error_exits_1_not_a_usage_errors_2():
    """A bug exited 2, the code of a command line that does not parse, so a script read it as its own mistake."""
    import subprocess
    import sys

    script = (
        "import sys, npgpt.tokenizer as t\n"
        "def broken(self, *a, **k):\n    raise ZeroDivisionError('division by zero')\n"
        "t.Tokenizer.encode = broken\n"
        "sys.argv = ['npgpt', 'tokenize', 'Hi']\n"
        "from npgpt.cli import main\nmain()\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert r.stderr == "internal error: division by zero (set NPGPT_DEBUG=1 for a traceback)\n"


@pytest.mark.parametrize(
    "data, said",
    [
        (b"\xff\xfe\x00x", "error: standard input is binary, not text (it holds a NUL byte); pipe in UTF-8 text"),
        (b"caf\xe9", "error: standard input is not UTF-8 text (byte 3 is 0xe9); convert it"),
    ],
)
@pytest.mark.parametrize(
    "command", [["generate", "-m", "bundled"], ["next", "-m", "bundled"], ["tokenize"], ["score", "-", "-m", "bundled"]]
)
def test_text_piped_in_that_is_not_utf8_names_standard_input(command, data, said):
    """It said "- is a binary file; give a UTF-8 text file of a prompt": no file was given, text was piped in."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "npgpt", *command], input=data, capture_output=True, timeout=60)
    err = r.stderr.decode()
    assert r.returncode == 1 and err.startswith(said) and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    "args, option",
    [
        (["score", ""], "'file'"),
        (["generate", "--prompt-file", ""], "'--prompt-file'"),
        (["generate", "--batch-file="], "'--batch-file'"),
        (["generate", "-f", ""], "'--file' / '-f'"),
        (["eval", "--data", ""], "'--data' / '-d' / '-f'"),
        (["convert", "bundled", ""], "'dst'"),
        (["train", "text.txt", "--out", ""], "'--out' / '-o'"),
        (["train", "", "--out", "run"], "'data'"),
        (["train", "text.txt", "--config", ""], "'--config'"),
        (["lens", "Hi", "--png", ""], "'--png'"),
        (["bench", "--random", "--plot", ""], "'--plot'"),
    ],
)
def test_an_empty_path_is_refused_not_read_as_the_current_folder(tmp_path, args, option):
    """Path("") is ".": `npgpt score ''` read the current folder ("cannot read text to score from .: Is a
    directory"), `npgpt convert bundled ''` wrote model.safetensors into it and exited 0, and `npgpt train
    text.txt --out ''` wrote its token file there. An empty path (an unset shell variable) is a usage error."""
    _usage_error_touching_nothing(
        tmp_path, args, f"{option}: the path is empty (an unset shell variable?); give a path"
    )


def _usage_error_touching_nothing(tmp_path, args, said):
    """`npgpt ARGS` run in ``tmp_path`` (beside a text.txt) exits 2 with one line, "error: Invalid value for "
    + ``said`` ..., and leaves the folder as it was."""
    import subprocess
    import sys

    (tmp_path / "text.txt").write_text("hello world " * 50)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = subprocess.run([sys.executable, "-m", "npgpt", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    said = "error: Invalid value for " + said
    assert r.returncode == 2 and r.stderr.startswith(said) and len(r.stderr.splitlines()) == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    "args, option, what",
    [
        (["generate", "Hi", "-m", ""], "'--model' / '-m'", "model"),
        (["score", "text.txt", "--model="], "'--model' / '-m'", "model"),
        (["chat", "-m", " "], "'--model' / '-m'", "model"),
        (["serve", "-m", "bundled", "-m", ""], "'--model' / '-m'", "model"),
        (["bench", "--random", "-m", ""], "'--model' / '-m'", "model"),
        (["train", "text.txt", "--out", "run", "--init", ""], "'--init'", "model"),
        (["info", ""], "'model'", "model"),
        (["convert", "", "out.safetensors"], "'src'", "model"),
        (["rm", ""], "'name'", "name"),
        (["download", ""], "'name'", "name"),
        (["download", "--hf", ""], "'--hf'", "repo id"),
        # it went to the Hub first ("cannot download ... (Name or service not known)" offline)
        (["download", "--hf", "openai-community/gpt2", "--revision", ""], "'--revision'", "revision"),
    ],
)
def test_an_empty_model_is_refused_as_an_empty_path_is(tmp_path, args, option, what):
    """`-m "$MODEL"` with MODEL unset said "'' is not a file or a known model; available: ...", as if a name had
    been mistyped, where an empty path option says it is empty: a model or name is refused the same way."""
    _usage_error_touching_nothing(tmp_path, args, f"{option}: the {what} is empty (an unset shell variable?); give ")


def test_the_library_calls_an_empty_model_empty():
    from npgpt.errors import NpgptError
    from npgpt.registry import resolve

    with pytest.raises(NpgptError, match="^the model is empty; give a path or a name$"):
        resolve(" ")


def test_an_empty_path_in_a_train_config_is_refused(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('out = ""\n')
    r = run_cli("train", str(tmp_path / "text.txt"), "--config", str(config))
    assert r.returncode == 1 and r.stderr == f"error: --config {config}: out is an empty path; give a path\n", r.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "--prompt-file", "/dev/zero"],
        ["generate", "--batch-file", "/dev/urandom"],
        ["score", "/dev/zero"],
        ["eval", "--data", "/dev/zero"],
        ["tokenize", "-"],
        ["generate"],
        ["train", "text.txt", "--out", "run", "--config", "/dev/zero"],
    ],
)
def test_a_device_that_never_ends_is_refused_not_read_forever(command, tmp_path):
    """/dev/zero as a prompt file (or on stdin) was read whole: the command hung, filling memory."""
    import subprocess
    import sys

    with open("/dev/zero", "rb") as zeros:
        r = subprocess.run(
            [sys.executable, "-m", "npgpt", *command],
            stdin=zeros,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "is binary, not text (it holds a NUL byte)" in r.stderr


@pytest.mark.parametrize(
    "command, said",
    [
        (
            ["score", "-"],
            "standard input is over 64 MiB, the most npgpt reads as text to score; score it in parts, e.g.",
        ),
        (["eval", "--data", "-"], "standard input is over 64 MiB, the most npgpt reads as text to score; evaluate a "),
        (["tokenize"], "standard input is over 64 MiB, the most npgpt reads as text to tokenize; tokenize it in parts"),
        (["generate"], "standard input is over 1 MiB, the most npgpt reads as a prompt; a model's context holds a few"),
        (["next", "-"], "standard input is over 1 MiB, the most npgpt reads as a prompt; "),
        (["generate", "--batch-file", "-"], "standard input is over 64 MiB, the most npgpt reads as prompts; put"),
    ],
)
def test_text_that_never_ends_is_refused_at_a_bound_not_read_forever(command, said):
    """`yes | npgpt score -` read until memory ran out (only binary input was cut short): text past the command's
    bound (a prompt: 1 MiB, far more than a context holds; a text to score or tokenize: 64 MiB) is one line naming
    the bound and how to give a part of the text, read no further."""
    import subprocess
    import sys

    yes = subprocess.Popen(["yes", "a line of text"], stdout=subprocess.PIPE)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "npgpt", *command], stdin=yes.stdout, capture_output=True, text=True, timeout=120
        )
    finally:
        yes.kill()
        yes.wait()
    assert r.returncode == 1 and r.stderr.startswith(f"error: {said}") and len(r.stderr.splitlines()) == 1, r.stderr


def test_a_batch_file_is_bounded_per_prompt_not_at_one_prompts_size(tmp_path):
    """--batch-file was read with one prompt's bound, 1 MiB in all, though its prompts run a bounded batch at a
    time (4c1bace: 10,000 prompts): 10,000 prompts of 120 bytes were 'over 1 MiB, the most npgpt reads as
    prompts'. The file is bounded as a text to score is (64 MiB), and each of its prompts as one prompt is."""
    from npgpt.cli.generate import _prompts
    from npgpt.errors import NpgptError

    many = tmp_path / "prompts.txt"
    many.write_text("".join(f"{i:05d} " + "x" * 113 + "\n" for i in range(10_000)))  # 1.2 MB
    prompts = _prompts(None, None, many)
    assert len(prompts) == 10_000 and prompts[-1].startswith("09999 ")
    long = tmp_path / "long.txt"
    long.write_text("a prompt\n\n" + "word " * 2**18 + "\n")  # line 3: 1.25 MiB
    with pytest.raises(NpgptError, match=r"^\S*long.txt line 3 is over 1 MiB, the most npgpt reads as a prompt; "):
        _prompts(None, None, long)


def test_a_text_file_over_the_bound_is_refused_before_it_is_read(tmp_path):
    import subprocess
    import sys

    big = tmp_path / "corpus.txt"
    with big.open("wb") as f:
        f.truncate(64 * 2**20 + 1)  # sparse: its size is what is refused, before a byte is read
    for command, name in [(["score", str(big)], big), (["eval", "-d", "-"], "standard input")]:
        with big.open("rb") as stdin:
            r = subprocess.run(
                [sys.executable, "-m", "npgpt", *command], stdin=stdin, capture_output=True, text=True, timeout=60
            )
        said = f"error: {name} is over 64 MiB, the most npgpt reads as text to score; "
        assert r.returncode == 1 and r.stderr.startswith(said), r.stderr
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("word " * 2**18)  # 1.25 MiB
    r = subprocess.run(
        [sys.executable, "-m", "npgpt", "generate", "--prompt-file", str(prompt)], capture_output=True, text=True
    )
    assert r.returncode == 1 and r.stderr.startswith(f"error: {prompt} is over 1 MiB, the most npgpt reads as a prompt")


def test_text_at_the_bound_is_read_whole(tmp_path, monkeypatch):
    from npgpt.cli import options
    from npgpt.errors import NpgptError

    monkeypatch.setattr(options, "_CHUNK", 3)
    text = tmp_path / "text.txt"
    text.write_text("0123456789")
    assert options.read_text(text, "text", limit=10, fix="") == "0123456789"
    with pytest.raises(NpgptError, match="text.txt is over 9 bytes, the most npgpt reads as text; split it"):
        options.read_text(text, "text", limit=9, fix="split it")


def test_text_read_in_chunks_names_the_bad_byte_where_it_lies(tmp_path, monkeypatch):
    from npgpt.cli import options
    from npgpt.errors import NpgptError

    monkeypatch.setattr(options, "_CHUNK", 3)
    good = tmp_path / "good.txt"
    good.write_bytes("\ufeffcafé 👋 ok".encode())  # characters split across chunks; a byte-order mark dropped
    assert options.read_text(good, "text", limit=100, fix="") == "café 👋 ok"
    for data, said in [(b"ab\xc3\xa9cd\xff", "byte 6 is 0xff"), (b"abcd\xe2\x82", "byte 4 is 0xe2")]:
        bad = tmp_path / "bad.txt"
        bad.write_bytes(data)
        with pytest.raises(NpgptError, match=f"bad.txt is not UTF-8 text \\({said}\\)"):
            options.read_text(bad, "text", limit=100, fix="")


@pytest.mark.parametrize("entry", ["npgpt", "npgpt.cli", "console script"])
def test_ctrl_c_while_npgpt_starts_is_exit_130_not_a_traceback(entry):
    """Ctrl-C in the second of imports before main() (typer, rich, NumPy) printed a traceback through NumPy's
    import and died by the signal: it exits 130 saying nothing, as Ctrl-C outside a command does."""
    import subprocess
    import sys

    code = (
        "import runpy, sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'npgpt.sampling':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "sys.argv = ['npgpt', '--help']\n"
    )
    if entry == "console script":  # what pip writes for [project.scripts] npgpt = "npgpt.cli:main"
        code += "from npgpt.cli import main\nsys.exit(main())\n"
    else:
        code += f"runpy.run_module({entry!r}, run_name='__main__', alter_sys=True)\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr, r.stdout) == (130, "", "")


@pytest.mark.parametrize(
    "statement", ["import npgpt.cli.commands", "from npgpt.cli import app", "import npgpt.cli.flags"]
)
def test_ctrl_c_while_a_program_imports_the_cli_is_its_keyboardinterrupt(statement):
    """npgpt.cli turned a KeyboardInterrupt during its own imports into SystemExit(130) at import time, so a program
    (or a test) importing it was ended with exit 130 instead of getting the KeyboardInterrupt: the exit belongs to
    the entry point (main), and an import raises KeyboardInterrupt as any import does."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'npgpt.sampling':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "try:\n"
        f"    {statement}\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "KeyboardInterrupt\n", ""), (r.returncode, r.stdout, r.stderr)


@pytest.mark.parametrize(
    "args, said",
    [
        (
            ["tokenize", b"caf\xe9"],
            "error: TEXT is not UTF-8 text (it holds the byte 0xe9); set the terminal to UTF-8, or pipe",
        ),
        (["generate", b"caf\xe9"], "error: PROMPT is not UTF-8 text (it holds the byte 0xe9)"),
        (["next", b"\xff"], "error: PROMPT is not UTF-8 text (it holds the byte 0xff)"),
        (
            ["chat", "--system", b"caf\xe9"],
            "error: --system is not UTF-8 text (it holds the byte 0xe9); set the terminal to UTF-8 (",
        ),
        (["generate", "Hi", "--stop", b"\xe9"], "error: --stop is not UTF-8 text (it holds the byte 0xe9)"),
    ],
)
def test_a_text_argument_that_is_not_utf8_is_refused(args, said):
    """From a Latin-1 terminal, `npgpt tokenize café` was tokenized as 'caf\\ufffd' (and generate continued it), exit 0,
    where the same bytes piped in are refused; a path or model name keeps its bytes (a file may be named so)."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "npgpt", *args], capture_output=True, timeout=60, stdin=subprocess.DEVNULL
    )
    err = r.stderr.decode()
    assert r.returncode == 2 and err.startswith(said) and len(err.splitlines()) == 1, err
    named = subprocess.run([sys.executable, "-m", "npgpt", "score", b"caf\xe9.txt"], capture_output=True, timeout=60)
    assert "caf\\udce9.txt: No such file or directory" in named.stderr.decode()


@pytest.mark.timeout(120)
def test_sigterm_while_a_file_is_written_leaves_no_temp_file_and_exits_143(model_file, tmp_path):
    """SIGTERM (`kill`, `timeout`, a service manager) during `npgpt convert` ended the process on the spot: its
    hidden temp file (`.out.safetensors.PID@HOST.XXXX.tmp`, gigabytes for a large model) stayed beside the output until
    something else was written there. SIGTERM now ends a command as Ctrl-C does: the write undone, one line,
    exit 128 + 15."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    out = tmp_path / "out.safetensors"
    script = textwrap.dedent(
        f"""
        import sys, time
        from npgpt import files
        real = files.publish
        def slow(tmp, path):  # the temp file is written: a kill lands while it is there
            time.sleep(60)
            real(tmp, path)
        files.publish = slow
        sys.argv = ["npgpt", "convert", {model_file!r}, {str(out)!r}, "--to", "npgpt"]
        from npgpt.cli import main
        main()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the sleep
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err == "error: stopped by SIGTERM\n"
    assert list(tmp_path.iterdir()) == []
