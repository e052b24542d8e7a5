"""The command line as a newcomer uses it (issue 15) and its malformed inputs (issue 17, kind 2): each
case runs the real ``npgpt`` entry point in a subprocess and checks what is printed and the exit code."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIGS, random_params, run_cli

from npgpt import __version__
from npgpt.api import load
from npgpt.errors import NpgptError
from npgpt.formats import npgpt_format


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli-usage") / "tiny.safetensors"
    npgpt_format.save(path, CONFIGS["tiny"], random_params(CONFIGS["tiny"]))
    return str(path)


def completions(stdout: str) -> int:
    """How many ``--- i ---`` header lines (one per completion) ``npgpt generate`` printed; a sampled text may
    itself hold "--- " ("Hi------------ disadvant" from a random model), so whole lines are counted."""
    return sum(bool(re.fullmatch(r"--- \d+ ---", line)) for line in stdout.splitlines())


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> str:
    """The run failed with exit 1 and one line on stderr (no traceback) holding ``words``; that line."""
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("using npgpt's")]
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert len(lines) == 1 and "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def run_without(module: str, *args: str) -> subprocess.CompletedProcess:
    """``npgpt ARGS`` in a Python where ``import module`` fails, as when its extra is not installed."""
    code = (
        f"import sys; sys.modules[{module!r}] = None; sys.argv = ['npgpt', *sys.argv[1:]]; "
        "from npgpt.cli import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


# -- 1. errors printed literally ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "module, args, hint",
    [
        ("uvicorn", ["serve"], "pip install 'npgpt[serve]'"),
        ("jax", ["train", "data.txt", "--out", "run"], "pip install 'npgpt[train]'"),
        ("torch", ["generate", "Hi", "--backend", "torch"], "pip install 'npgpt[torch]'"),
        ("jax", ["next", "Hi", "--backend", "jax"], "pip install 'npgpt[jax]'"),
    ],
)
def test_missing_extra_hints_name_the_extra(tmp_path, monkeypatch, module, args, hint):
    monkeypatch.chdir(tmp_path)
    one_line_error(run_without(module, *args), hint)


def test_a_path_with_markup_characters_gives_its_one_line_error(tmp_path):
    bad = tmp_path / "d[" / "x]" / "model.safetensors"  # the path holds "[/x]"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"garbage")
    line = one_line_error(run_cli("info", str(bad)))
    assert str(bad) in line
    line = one_line_error(run_cli("generate", "Hi", "--model", str(tmp_path / "[/x]" / "[red]m")))
    assert "[/x]/[red]m" in line


def test_every_help_string_survives_rich_markup():
    """Help is rendered in rich's markup mode: no help text may hold something rich reads as a tag."""
    import typer.main
    from rich.text import Text

    from npgpt.cli import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        for text in texts:
            assert Text.from_markup(text).plain == text, (name, text)


def test_help_text_is_shown_as_written():
    r = run_cli("generate", "--help")
    assert r.returncode == 0
    flat = " ".join(r.stdout.replace("│", " ").split())
    for text in (
        "> 1 discourages repeats (1 = off).",
        "OpenAI-style, in [-2, 2].",
        "Nucleus sampling mass in [0, 1] (1 = off, 0 = greedy).",
        "--batch-file",
        "--prompt-file",
    ):
        assert text in flat, text


def test_every_backend_option_names_every_backend():
    """`npgpt serve --help` listed "numpy, jax, torch or cupy" while serve, as every command, takes
    cupynumeric too: each command's single --backend help names every backend there is."""
    import typer

    from npgpt.backends import BACKENDS
    from npgpt.cli import app

    for name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            if "--backend" in getattr(param, "opts", ()) and name != "bench":  # bench: a comma-separated list
                assert all(b in (param.help or "") for b in BACKENDS), (name, param.help)


def test_every_path_shows_as_a_path_in_help():
    """Path arguments (score FILE, convert DST, train DATA) showed their Python class, <Path>, where a path option
    shows <path>: every command's help names a path's type <path>, and no Python type."""
    import typer.main
    from typer.testing import CliRunner

    from npgpt.cli import app

    runner = CliRunner()
    for name in typer.main.get_command(app).commands:
        text = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output
        assert "<Path>" not in text and "pathlib" not in text and "None>" not in text, (name, text)
    for name, argument in [("score", "file"), ("convert", "dst"), ("train", "data")]:
        text = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output
        assert re.search(rf"{argument} +<path> ", text), (name, text)


def test_the_root_help_names_only_commands_there_are():
    """`npgpt --help` opened on 'generate, chat, inspect, ...', and `npgpt inspect` is 'No such command': each
    name in the summary (or in its brackets) is a command."""
    import typer

    from npgpt.cli import app

    commands = set(typer.main.get_command(app).commands)
    summary = app.info.help.split(":", 1)[1].strip(" .")
    inside = [name for group in re.findall(r"\(([^)]*)\)", summary) for name in group.split(", ")]
    outside = [item.strip() for item in re.sub(r"[^,(]*\([^)]*\)", "", summary).split(",") if item.strip()]
    for name in inside + outside:
        assert name in commands, (name, summary)
    r = run_cli("--help")
    assert r.returncode == 0 and summary in " ".join(r.stdout.replace("│", " ").split())


# -- 2. prompts from stdin and files ----------------------------------------------------------------------
def test_prompt_from_stdin_dash_and_prompt_file(model_file, tmp_path):
    args = ("--model", model_file, "--max-new-tokens", "6", "--temperature", "0", "--no-echo")
    m = load(model_file)
    expected = m.generate("Once upon a time", max_new_tokens=6, temperature=0) + "\n"
    piped = run_cli("generate", *args, input="Once upon a time\n")  # echo's newline is dropped
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == expected
    dash = run_cli("generate", "-", *args, input="Once upon a time\n")
    assert dash.stdout == expected
    two_lines = tmp_path / "prompt.txt"
    two_lines.write_text("First line,\nsecond line\n")
    r = run_cli("generate", "--prompt-file", str(two_lines), *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout == m.generate("First line,\nsecond line", max_new_tokens=6, temperature=0) + "\n"
    batch = run_cli("generate", "--batch-file", "-", *args, input="First line,\nsecond line\n")
    assert completions(batch.stdout) == 2
    one_line_error(run_cli("generate", "Hi", "--prompt-file", str(two_lines), *args), "not PROMPT and --prompt-file")
    one_line_error(run_cli("generate", *args, input=""), "PROMPT")


def test_a_text_argument_naming_a_file_is_said_to_be_the_text(model_file, tmp_path):
    """`npgpt generate prompt.txt` continued the words "prompt.txt" (as llama.cpp's -p and Ollama's run read them)
    where the user meant the file (llama.cpp's -f), with no word of it: the text as typed still, and a notice with the
    way to the file's text (or, for a checkpoint, to the model)."""
    (tmp_path / "prompt.txt").write_text("Once upon a time\n")
    args = ("--model", model_file, "--max-new-tokens", "2", "--seed", "1")
    r = subprocess.run(
        [sys.executable, "-m", "npgpt", "generate", "prompt.txt", *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.startswith("prompt.txt"), r.stderr
    assert "taking 'prompt.txt' as the text itself" in r.stderr and "use --prompt-file prompt.txt" in r.stderr
    r = run_cli("tokenize", str(tmp_path / "prompt.txt"), "--ids")
    assert r.returncode == 0 and f"pipe it in: npgpt tokenize - < {tmp_path / 'prompt.txt'}" in r.stderr, r.stderr
    r = run_cli("next", model_file, "-m", model_file, "-k", "1")
    assert r.returncode == 0 and f"for the model, use -m {model_file}" in r.stderr, r.stderr
    assert "taking" not in run_cli("generate", "Once upon", *args).stderr  # no file of that name: nothing said


def test_stop_escapes_are_read(model_file):
    from npgpt.cli.options import unescape

    assert unescape(r"\n\t\\ caf\u00e9 \x41 \U0001F600 \q é") == "\n\t\\ café A 😀 \\q é"
    r = run_cli("generate", "And God said", "--stop", r"\n", "--temperature", "0", "--max-new-tokens", "120", "--json")
    assert r.returncode == 0, r.stderr
    choice = json.loads(r.stdout)["choices"][0]
    assert choice["text"] == load("bundled").generate("And God said", stop="\n", temperature=0, max_new_tokens=120)
    assert choice["finish_reason"] == "stop" and "\\n" not in choice["text"]


# -- 4. list, rm, --version, python -m npgpt, completion -------------------------------------------------
def test_list_and_rm_on_the_cache(tmp_path, model_file):
    home = tmp_path / "home"
    for folder in (home / "124M", home / "hf" / "org--tiny"):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(open(model_file, "rb").read())
    env = {"NPGPT_HOME": str(home)}
    r = run_cli("list", "--json", env=env)
    assert r.returncode == 0, r.stderr
    listed = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert set(listed) == {"124M", "org/tiny"}
    assert listed["124M"] == {
        "name": "124M",
        "source": "openai",
        "format": "npgpt",
        "size_bytes": os.path.getsize(model_file),
        "path": str(home / "124M" / "model.safetensors"),
    }
    table = run_cli("list", env=env).stdout
    assert "124M" in table and "org/tiny" in table and str(home / "hf" / "org--tiny" / "model.safetensors") in table
    r = run_cli("rm", "gpt2", env=env)  # GPT-2 small's alias
    assert r.returncode == 0 and not (home / "124M").exists() and (home / "hf" / "org--tiny").exists()
    one_line_error(run_cli("rm", "124M", env=env), "not in the cache", "org/tiny")
    one_line_error(run_cli("rm", "bundled", env=env), "cannot be removed")
    assert run_cli("rm", "org/tiny", env=env).returncode == 0 and not (home / "hf" / "org--tiny").exists()
    assert "no models downloaded" in run_cli("list", env=env).stdout


def test_rm_takes_several_names_as_ollamas_rm_does(tmp_path, model_file):
    """`ollama rm MODEL [MODEL...]` removes each; `npgpt rm 124M org/tiny` said "Got unexpected extra argument
    (org/tiny)". Each is removed (a name given twice once); a name not in the cache is the one-line error, and
    then nothing is removed, wherever it stands (Ollama's rm removes the names before it: a cache half emptied)."""
    home = tmp_path / "home"
    for folder in (home / "124M", home / "355M", home / "hf" / "org--tiny"):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(open(model_file, "rb").read())
    env = {"NPGPT_HOME": str(home)}
    r = run_cli("rm", "124M", "org/tiny", "124M", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("removed ") == 2 and not (home / "124M").exists() and not (home / "hf" / "org--tiny").exists()
    one_line_error(run_cli("rm", "nope", "355M", env=env), "'nope' is not in the cache")
    assert (home / "355M").exists()
    # every name is checked before anything goes: a typo after a good name removed the good one, then stopped
    one_line_error(run_cli("rm", "355M", "nope", env=env), "'nope' is not in the cache", "nothing was removed")
    assert (home / "355M").exists()
    r = run_cli("remove", "355M", env=env)  # Ollama's other name
    assert r.returncode == 0 and not (home / "355M").exists(), r.stderr


def test_rm_of_a_model_folder_linked_from_another_disk_removes_the_link_only(tmp_path, model_file):
    home, disk = tmp_path / "home", tmp_path / "disk" / "124M"
    disk.mkdir(parents=True)
    (disk / "model.safetensors").write_bytes(open(model_file, "rb").read())
    home.mkdir()
    (home / "124M").symlink_to(disk, target_is_directory=True)
    env = {"NPGPT_HOME": str(home)}
    assert [m["name"] for m in json.loads(run_cli("list", "--json", env=env).stdout)["models"]] == ["124M"]
    r = run_cli("rm", "124M", env=env)  # was: "'124M' is not in the cache; downloaded models: 124M"
    assert r.returncode == 0, r.stderr
    assert not (home / "124M").is_symlink() and (disk / "model.safetensors").is_file()
    assert "no models downloaded" in run_cli("list", env=env).stdout


def test_version_module_entry_point_and_completion():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout == f"npgpt {__version__}\n"
    r = subprocess.run(
        [sys.executable, "-m", "npgpt", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert r.returncode == 0 and "Usage" in r.stdout and "chat" in r.stdout and "list" in r.stdout
    assert "--install-completion" in r.stdout
    # typer finds the shell from the process tree (a bare `bash` argument is not read): run it from bash, as a
    # user does, so a test process whose parent shell has gone (a detached run) still finds one
    exe = Path(sys.executable).parent / "npgpt"
    npgpt = shlex.quote(str(exe)) if exe.exists() else f"{shlex.quote(sys.executable)} -m npgpt"
    script = f"{npgpt} --show-completion; echo rc=$?"
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert "rc=0" in r.stdout and "complete" in r.stdout and "_NPGPT_COMPLETE" in r.stdout, r.stderr


# -- 6. serve fails before "serving" -------------------------------------------------------------------------
def test_serve_on_a_busy_port_bad_port_or_host_is_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("serve", "--port", str(port), timeout=60)
        one_line_error(r, "in use", str(port))
        assert "serving" not in r.stderr + r.stdout
    one_line_error(run_cli("serve", "--port", "70000"), "70000", "1-65535")
    one_line_error(run_cli("serve", "--host", "no-such-host.invalid"), "no-such-host.invalid")


def test_serve_reads_llama_servers_and_ollamas_environment_variables():
    """llama-server's LLAMA_ARG_* variables and Ollama's OLLAMA_HOST were ignored by npgpt serve: they set the options
    they name where the command line does not (the flag wins, as in llama.cpp); a bad value is one line naming the
    variable, not an option that is nowhere on the command line."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for env in ({"LLAMA_ARG_PORT": port}, {"OLLAMA_HOST": f"127.0.0.1:{port}"}, {"OLLAMA_HOST": f"http://:{port}"}):
            one_line_error(run_cli("serve", env=env, timeout=60), "in use", port)  # the variable's port was bound
    one_line_error(run_cli("serve", env={"LLAMA_ARG_PORT": "70000"}), "LLAMA_ARG_PORT=70000 is not a TCP port")
    line = one_line_error(run_cli("serve", "--port", "70001", env={"LLAMA_ARG_PORT": "70000"}), "--port 70001")
    assert "LLAMA_ARG_PORT" not in line  # the flag wins
    one_line_error(run_cli("serve", env={"LLAMA_ARG_N_PARALLEL": "0"}), "LLAMA_ARG_N_PARALLEL must be")
    bad = {"LLAMA_ARG_HOST": "one.invalid", "OLLAMA_HOST": "two.invalid"}
    one_line_error(run_cli("serve", env=bad), "LLAMA_ARG_HOST=one.invalid is not an address")  # the specific one wins
    one_line_error(run_cli("serve", env={"OLLAMA_HOST": "two.invalid"}), "OLLAMA_HOST=two.invalid is not an address")
    one_line_error(run_cli("serve", env={"OLLAMA_HOST": "0.0.0.0:abc"}), "OLLAMA_HOST=0.0.0.0:abc: 'abc' is not a port")
    line = one_line_error(run_cli("serve", "--host", "127.0.0.1", "--port", "70000", env=bad), "--port 70000")
    assert "invalid" not in line  # --host given: neither variable is read for it
    r = run_cli("serve", env={"LLAMA_ARG_PORT": "abc"})
    assert r.returncode == 2 and "LLAMA_ARG_PORT" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    r = run_cli("serve", "--port", "abc")  # typed, not read from the variable: the variable is not named
    assert r.returncode == 2 and "LLAMA_ARG_PORT" not in r.stderr and "'--port'" in r.stderr, r.stderr
    env = {"LLAMA_ARG_MODEL": "/no such/model.gguf", "LLAMA_ARG_PORT": "0"}
    one_line_error(run_cli("serve", env=env, timeout=60), "/no such/model.gguf")  # the path whole, with its space


def test_serve_reads_llama_servers_alias_and_ollamas_server_variables(model_file, monkeypatch):
    """llama-server's LLAMA_ARG_ALIAS (its --alias: the model's name in the API) and Ollama's OLLAMA_NUM_PARALLEL,
    OLLAMA_MAX_QUEUE and OLLAMA_ORIGINS were ignored, though npgpt serve has the options they set (-m NAME=PATH,
    --max-batch, --max-queue, --allowed-origins): a client asking for the alias got a 404. They set them now where
    the command line does not; llama.cpp's variable before Ollama's; --alias is taken too."""
    pytest.importorskip("fastapi")
    from typer.testing import CliRunner

    import npgpt
    from npgpt.cli import app
    from npgpt.cli import serve as serve_cli
    from npgpt.server import app as server_app

    got: dict = {}

    def create_app(models, **settings):
        got.update(settings, names=list(models))
        raise NpgptError("stop before serving")

    monkeypatch.setattr(server_app, "create_app", create_app)
    monkeypatch.setattr(serve_cli, "load_model", lambda path, *a, **k: npgpt.load(path))

    def serve(*args: str, **env: str) -> str:
        got.clear()
        r = CliRunner().invoke(app, ["serve", "--port", "0", *args], env=env)
        assert isinstance(r.exception, NpgptError), r.output
        return str(r.exception)

    assert serve("-m", model_file, LLAMA_ARG_ALIAS="my-gpt") == "stop before serving"
    assert got["names"] == ["my-gpt"]
    serve("-m", model_file, "--alias", "typed")
    assert got["names"] == ["typed"]
    serve("-m", f"own={model_file}", LLAMA_ARG_ALIAS="my-gpt")  # the command line's name wins
    assert got["names"] == ["own"]
    assert "--alias names the one model served" in serve("-m", model_file, "-m", "bundled", "--alias", "x")
    serve("-m", model_file, "-m", "bundled", LLAMA_ARG_ALIAS="my-gpt")  # not read: names from the files
    assert got["names"] == ["tiny", "bundled"]
    serve(model_file, OLLAMA_NUM_PARALLEL="3", OLLAMA_MAX_QUEUE="7", OLLAMA_ORIGINS="http://localhost:3000")
    assert (got["max_batch"], got["max_queue"], got["allowed_origins"]) == (3, 7, ["http://localhost:3000"])
    serve(model_file, "--max-batch", "2", LLAMA_ARG_N_PARALLEL="5", OLLAMA_NUM_PARALLEL="3")  # the flag wins
    assert got["max_batch"] == 2
    serve(model_file, LLAMA_ARG_N_PARALLEL="5", OLLAMA_NUM_PARALLEL="3")  # llama.cpp's, then Ollama's
    assert got["max_batch"] == 5
    assert "OLLAMA_ORIGINS" in serve(model_file, OLLAMA_ORIGINS="localhost:3000")  # a bad value names the variable


def test_llama_cpps_thread_count_sets_npgpts():
    """LLAMA_ARG_THREADS (llama.cpp's -t, read by all its tools) was ignored: npgpt ran on every core of a machine
    the user had given fewer. It sets OMP_NUM_THREADS, npgpt's threads (OpenBLAS's, ONNX Runtime's pool), where
    that is not set; -1 is every core; a value that is no number of threads is one line."""
    code = (
        "import atexit, os, sys\n"
        "def said():\n"
        "    from npgpt.onnx_session import _threads\n"
        '    sys.stderr.write(f\'threads={os.environ.get("OMP_NUM_THREADS", "-")},{_threads()}\\n\')\n'
        "atexit.register(said)\n"
        "sys.argv = ['npgpt', 'tokenize', '--ids', 'Hi']\n"
        "from npgpt.cli import main\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}

    def run(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**env, **extra}
        )

    assert "threads=1,1" in run(LLAMA_ARG_THREADS="1").stderr
    assert "threads=-,0" in run(LLAMA_ARG_THREADS="-1").stderr  # llama.cpp's default: every core
    assert "threads=2," in run(LLAMA_ARG_THREADS="1", OMP_NUM_THREADS="2").stderr  # npgpt's own wins
    r = run(LLAMA_ARG_THREADS="four")
    assert r.returncode == 1 and r.stderr.splitlines()[0] == (
        "error: LLAMA_ARG_THREADS=four is not a number of threads; give one >= 1 (or -1: every core)"
    ), r.stderr


def test_a_thread_count_that_is_no_ascii_number_is_one_line():
    """LLAMA_ARG_THREADS=² (str.isdigit() holds for it, int() refuses it) ended in a traceback before any command ran,
    and a value holding a newline split the error over two lines; ٣ (another script's 3) was passed on to OpenBLAS.
    Each is now the one-line error, the value's control characters written as escapes."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    code = "import sys; sys.argv = ['npgpt', '--version']; from npgpt.cli import main; main()"
    for value, shown in (("²", "²"), ("٣", "٣"), ("4\n5", "4\\n5")):
        r = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, "LLAMA_ARG_THREADS": value},
        )
        assert r.returncode == 1 and r.stderr.splitlines() == [
            f"error: LLAMA_ARG_THREADS={shown} is not a number of threads; give one >= 1 (or -1: every core)"
        ], r.stderr


def test_a_context_size_set_for_llama_cpp_or_ollama_is_said_to_change_nothing(model_file):
    """LLAMA_ARG_CTX_SIZE (llama.cpp's -c) and OLLAMA_CONTEXT_LENGTH were ignored without a word, where their user
    expects a context of that size; npgpt has no such setting (a model's context is its own). A notice says so
    where one asks for another size than the model's; 0 (llama.cpp's "the model's own") or the model's says nothing."""
    args = ("generate", "Hi", "-m", model_file, "--max-new-tokens", "2")
    for variable in ("LLAMA_ARG_CTX_SIZE", "OLLAMA_CONTEXT_LENGTH"):
        r = run_cli(*args, env={variable: "4096"})
        assert r.returncode == 0, r.stderr
        assert f"{variable}=4096 is not read: the context length is the model's own, 128 tokens" in r.stderr, r.stderr
        for same in ("0", "128"):
            assert "is not read" not in run_cli(*args, env={variable: same}).stderr
    r = run_cli("chat", "-m", model_file, "--max-new-tokens", "2", input="Hi\n", env={"LLAMA_ARG_CTX_SIZE": "512"})
    assert "LLAMA_ARG_CTX_SIZE=512 is not read" in r.stderr, r.stderr


def test_tokenize_splits_as_the_models_tokenizer_does(tmp_path, model_file):
    """`npgpt tokenize TEXT -m MODEL` (llama-tokenize's habit: it always takes -m) said "No such option: --model":
    a character-level model's tokens could not be seen, only GPT-2's, which it never reads. tokenize now takes -m
    (and LLAMA_ARG_MODEL) and splits as that model's tokenizer does; without one, as GPT-2's."""
    from npgpt.char_tokenizer import CharTokenizer
    from npgpt.config import GPT2Config
    from npgpt.params import init_params

    tok = CharTokenizer.from_text(["the cat sat on the mat"])
    config = GPT2Config(n_vocab=tok.n_vocab, n_ctx=16, n_embd=16, n_head=2, n_layer=1)
    chars = tmp_path / "chars.safetensors"
    npgpt_format.save(chars, config, init_params(config, 0), metadata={"tokenizer": json.dumps(tok.to_spec())})
    r = run_cli("tokenize", "the cat", "-m", str(chars), "--ids")
    assert (r.returncode, r.stdout.split()) == (0, [str(i) for i in tok.encode("the cat")]), r.stderr
    r = run_cli("tokenize", "the cat", "--json", env={"LLAMA_ARG_MODEL": str(chars)})
    assert json.loads(r.stdout)["n_tokens"] == 7, r.stderr
    gpt2 = run_cli("tokenize", "the cat", "--ids")
    assert (
        gpt2.stdout.split()
        == ["1169", "3797"]
        == run_cli("tokenize", "the cat", "--ids", "-m", model_file).stdout.split()
    )


def test_serve_says_llama_servers_default_n_predict_is_not_read():
    """LLAMA_ARG_N_PREDICT (llama-server's -n: max_tokens for a request that sends none) was ignored without a word
    by npgpt serve, which has no such default (a client sets max_tokens); its user expects requests to stop there."""
    r = run_cli("serve", "--port", "70000", env={"LLAMA_ARG_N_PREDICT": "128"})
    assert r.returncode == 1, r.stderr
    assert "LLAMA_ARG_N_PREDICT=128 is not read: npgpt serve has no default for max_tokens" in r.stderr, r.stderr
    assert "is not read" not in run_cli("serve", "--port", "70000").stderr


def test_a_bad_alias_is_named_as_the_alias():
    """`npgpt serve --alias ""` (an unset shell variable) served the model under its own name without a word, and an
    alias clients cannot send back said "give the model another name ... with --model NAME=PATH", an option not typed.
    The empty one is refused, and the bad one's error names --alias."""
    one_line_error(run_cli("serve", "--alias", "", "--port", "0", timeout=60), "--alias is empty")
    line = one_line_error(run_cli("serve", "--alias", "a\tb", "--port", "0"), "with --alias NAME")
    assert "--model" not in line, line


def test_serve_takes_llama_servers_and_vllms_spellings_of_its_options():
    """llama-server's `-np 4` / `--parallel 4` said "No such option: -np. npgpt takes --max-batch", though
    LLAMA_ARG_N_PARALLEL, the same setting, is read as --max-batch; vLLM's --max-num-seqs and --served-model-name
    (`vllm serve MODEL`, whose line npgpt serve takes) were unknown. Each is now taken as npgpt's option, and an error
    about its value names it as typed."""
    for theirs in ("-np", "--parallel", "--max-num-seqs"):
        one_line_error(run_cli("serve", theirs, "0"), f"{theirs} must be")  # read as --max-batch, named as typed
        r = run_cli("serve", theirs, "4", "--port", "70000")
        one_line_error(r, "--port 70000 is not a TCP port")
    r = run_cli("serve", "--served-model-name", "a", "-m", "bundled", "-m", "bundled", "--port", "0")
    one_line_error(r, "--served-model-name names the one model served")


def test_a_bad_value_from_one_of_several_variables_names_that_one():
    """--max-batch may come from LLAMA_ARG_N_PARALLEL or OLLAMA_NUM_PARALLEL; a bad value in either said "Invalid value
    for '--max-batch' (env var: '['LLAMA_ARG_N_PARALLEL', 'OLLAMA_NUM_PARALLEL']')", a Python list, not the variable
    that was set. It names that one."""
    for env, named in (
        ({"OLLAMA_NUM_PARALLEL": "abc"}, "OLLAMA_NUM_PARALLEL"),
        ({"LLAMA_ARG_N_PARALLEL": "x", "OLLAMA_NUM_PARALLEL": "abc"}, "LLAMA_ARG_N_PARALLEL"),  # the one read
        ({"LLAMA_ARG_PORT": "abc"}, "LLAMA_ARG_PORT"),
    ):
        r = run_cli("serve", env=env)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.startswith(f"error: Invalid value for {named}: "), r.stderr
        assert "[" not in r.stderr, r.stderr


def test_generate_and_chat_read_llama_clis_environment_variables(model_file):
    """LLAMA_ARG_MODEL and LLAMA_ARG_N_PREDICT (llama-cli's -m and -n) were ignored by generate and chat; they set
    --model and --max-new-tokens where the command line does not, and a bad value names the variable."""
    args = ("generate", "Hi", "--seed", "1", "--no-echo")
    ours = run_cli(*args, "-m", model_file, "--max-new-tokens", "3")
    env = {"LLAMA_ARG_MODEL": model_file, "LLAMA_ARG_N_PREDICT": "3"}
    assert (run_cli(*args, env=env).stdout, ours.returncode) == (ours.stdout, 0), ours.stderr
    flagged = run_cli(*args, "-m", model_file, "--max-new-tokens", "3", env={"LLAMA_ARG_MODEL": "/no/such"})
    assert flagged.stdout == ours.stdout, flagged.stderr  # the flag wins
    chat = run_cli("chat", "--seed", "1", env=env, input="Hello\n")
    assert (
        chat.stdout == run_cli("chat", "--seed", "1", "-m", model_file, "--max-new-tokens", "3", input="Hello\n").stdout
    )
    one_line_error(run_cli("generate", "Hi", env={"LLAMA_ARG_N_PREDICT": "-5"}), "LLAMA_ARG_N_PREDICT must be >= 1")
    one_line_error(run_cli("generate", "Hi", env={"LLAMA_ARG_MODEL": "/no/such"}), "/no/such")
    r = run_cli("generate", "Hi", "--max-new-tokens", "x", env={"LLAMA_ARG_N_PREDICT": "3"})  # typed: not the variable
    assert r.returncode == 2 and "env var" not in r.stderr and "'x' is not an integer" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("next", "Hi", "--json"),
        ("eval", "-", "--json"),
        ("score", "-", "--json"),
        ("lens", "Hi"),
        ("attention", "In the beginning God created"),
        ("info", "--json"),
    ],
    ids=lambda a: a[0],
)
def test_every_command_that_runs_a_model_reads_llama_arg_model(model_file, args):
    """llama.cpp reads LLAMA_ARG_MODEL in every tool that takes -m (llama-perplexity's too), npgpt only in generate,
    chat and serve: `npgpt eval` or `npgpt next` with it set ran the default model, another than generate's. Each
    command that runs a model now reads it where -m is not given; -m wins."""
    text = "In the beginning God created the heaven and the earth.\n" * 3
    ours = run_cli(*args, "-m", model_file, input=text)
    assert ours.returncode == 0, ours.stderr
    read = run_cli(*args, env={"LLAMA_ARG_MODEL": model_file}, input=text)
    assert (read.returncode, read.stdout) == (0, ours.stdout), read.stderr
    flagged = run_cli(*args, "-m", model_file, env={"LLAMA_ARG_MODEL": "/no/such"}, input=text)
    assert (flagged.returncode, flagged.stdout) == (0, ours.stdout), flagged.stderr


@pytest.mark.parametrize("args", [("info",), ("generate", "Hi"), ("next", "Hi"), ("tokenize", "Hi"), ("eval", "-")])
def test_a_model_from_llama_arg_model_that_fails_says_where_it_came_from(args, tmp_path):
    """A model LLAMA_ARG_MODEL names (set for llama-server, say) that npgpt cannot load gave an error naming a model
    the user never typed ("no such file or directory: /no/such.gguf"), and info's said "'nosuch' is not a file or a
    known LLAMA_ARG_MODEL" (its MODEL argument's name replaced by the variable's). It now says where the model
    came from, once."""
    for value, said in (("/no/such.gguf", "no such file or directory: /no/such.gguf"), ("nosuch", "'nosuch' is not")):
        r = run_cli(*args, env={"LLAMA_ARG_MODEL": value}, input="Some text to score.\n")
        line = one_line_error(r, said, "(from LLAMA_ARG_MODEL)")
        assert line.count("LLAMA_ARG_MODEL") == 1, line


# -- 7. info names the model file and its own size -------------------------------------------------------------
def test_info_on_a_training_folder_counts_only_the_model(model_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    model = run / "model.safetensors"
    model.write_bytes(open(model_file, "rb").read())
    (run / "train_state.safetensors").write_bytes(b"\0" * 3_000_000)  # optimizer state: twice the model and more
    (run / "tokens.bin").write_bytes(b"\0" * 1_000_000)
    r = run_cli("info", str(run), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["file"] == str(model) and info["size_bytes"] == model.stat().st_size
    assert info["n_params"] == CONFIGS["tiny"].n_params and info["format"] == "npgpt"
    text = run_cli("info", str(run)).stdout
    assert str(model) in text and f"{model.stat().st_size:,} bytes" in text


@pytest.mark.parametrize("fmt", ["npgpt", "hf", "hf-sharded", "openai", "llmc", "gguf"])
def test_info_counts_the_files_of_each_format_and_nothing_else(fmt, tmp_path):
    from npgpt.formats import save_checkpoint

    config = CONFIGS["tiny"]
    extra = {"max_shard_size": "200KB"} if fmt == "hf-sharded" else {}
    out = save_checkpoint(tmp_path / "run", config, random_params(config), fmt=fmt, **extra)
    folder = out if out.is_dir() else out.parent
    # GPT-2's tokenizer, written beside hf's and openai's weights: not the model
    tokenizer = {"vocab.json", "merges.txt", "tokenizer_config.json", "encoder.json", "vocab.bpe"}
    on_disk = {p for p in folder.iterdir() if p.is_file() and p.name not in tokenizer}
    (folder / "train_state.safetensors").write_bytes(b"\0" * 500_000)  # not part of the model
    info = json.loads(run_cli("info", str(folder), "--json").stdout)
    files = {Path(f) for f in info["files"]}
    assert files == on_disk and info["format"] == fmt  # every file the model is made of, and only those
    assert info["size_bytes"] == sum(p.stat().st_size for p in on_disk)


# -- --json ------------------------------------------------------------------------------------------------------
def test_json_output_is_one_object(model_file, tmp_path):
    m = load(model_file)
    r = run_cli("next", "Hello", "-k", "3", "--model", model_file, "--json")
    assert r.returncode == 0, r.stderr
    assert [t["id"] for t in json.loads(r.stdout)["tokens"]] == [i for i, _, _ in m.next_tokens("Hello", k=3)]
    r = run_cli("tokenize", "Hello world", "--json")
    assert json.loads(r.stdout)["ids"] == [15496, 995]
    r = run_cli("generate", "Hi", "-n", "2", "--model", model_file, "--max-new-tokens", "5", "--seed", "2", "--json")
    out = json.loads(r.stdout)
    assert [c["text"] for c in out["choices"]] == m.generate(["Hi", "Hi"], max_new_tokens=5, seed=2)
    assert all(c["finish_reason"] in ("stop", "length") for c in out["choices"])
    text = tmp_path / "text.txt"
    text.write_text("In the beginning God created the heaven and the earth. " * 4)
    r = run_cli("eval", "--data", str(text), "--model", model_file, "--json")
    assert r.returncode == 0, r.stderr
    from npgpt.evaluate import perplexity

    assert json.loads(r.stdout)["perplexity"] == pytest.approx(perplexity(m, text.read_text())["perplexity"])
    r = run_cli("info", model_file, "--json")
    assert json.loads(r.stdout)["config"] == CONFIGS["tiny"].to_dict()
    one_line_error(run_cli("generate", "Hi", "--json", "--stream", "--model", model_file), "--stream")


@pytest.mark.parametrize("columns", [None, "30"])
def test_output_into_a_pipe_keeps_each_line_whole(model_file, tmp_path, columns):
    """A pipe has no width: lines are not broken at 80 columns (a path, a list of ids stay on one line), nor at an
    exported COLUMNS (the terminal's width, not the pipe's), which wrapped tokenize's ids, squeezed score's table
    ('logp…', "'      the'") and cut info's field names ('scale_attn_weights_by_inverse_layer…')."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | ({"COLUMNS": columns} if columns else {})
    exe = [sys.executable, "-m", "npgpt"]
    r = subprocess.run([*exe, "tokenize", "--ids", "word " * 40], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout == " ".join(["4775", *["1573"] * 39, "220"]) + "\n", r.stdout
    dst = tmp_path / ("a_folder_with_a_long_name_" * 3) / "model.safetensors"
    dst.parent.mkdir()
    r = subprocess.run([*exe, "convert", model_file, str(dst)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout == f"wrote {dst}\n", r.stdout
    r = subprocess.run([*exe, "info", "bundled"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and "scale_attn_by_inverse_layer_idx" in r.stdout and "…" not in r.stdout, r.stdout
    text = "In the beginning God created the heaven and the earth"
    r = subprocess.run(
        [*exe, "score", "-", "-m", "bundled"], input=text, capture_output=True, text=True, env=env, timeout=60
    )
    header, *rows = r.stdout.splitlines()
    assert r.returncode == 0 and "logprob (nats)" in header and "…" not in r.stdout, r.stdout
    assert [row.split()[0] for row in rows[:11]] == [*map(str, range(10)), "tokens"], r.stdout  # a line per token


def test_tables_in_a_pipe_have_no_trailing_whitespace(model_file, tmp_path):
    """rich pads every cell to its column's width, so `npgpt info | cat -A` showed each row of the last column
    padded with spaces to its widest cell (info's note, score's token column, list's paths): every table is printed
    through options.print_table, which ends each line at its last character."""
    home = tmp_path / "home"
    (home / "124M").mkdir(parents=True)
    (home / "124M" / "model.safetensors").write_bytes(open(model_file, "rb").read())
    (home / "hf" / "org--a-model-with-a-longer-name").mkdir(parents=True)
    (home / "hf" / "org--a-model-with-a-longer-name" / "model.safetensors").write_bytes(open(model_file, "rb").read())
    text = "In the beginning God created the heaven and the earth"
    runs = {
        "info": run_cli("info"),  # the bundled model: its note is far longer than any other value
        "list": run_cli("list", env={"NPGPT_HOME": str(home)}),
        "score": run_cli("score", "-", "-m", model_file, input=text),
        "lens": run_cli("lens", text, "-m", model_file),
        "attention": run_cli("attention", text, "-m", model_file),
    }
    for name, r in runs.items():
        assert r.returncode == 0, (name, r.stderr)
        padded = [line for line in r.stdout.splitlines() if line != line.rstrip()]
        assert not padded, (name, padded)
    cli = Path(__file__).parent.parent / "npgpt" / "cli"
    direct = [f.name for f in cli.glob("*.py") if re.search(r"\.print\(\s*table\b", f.read_text())]
    assert not direct, f"tables printed around options.print_table in {direct}"


# -- 10. bench: a missing comparison fails before the run ----------------------------------------------------
def test_bench_missing_comparison_fails_before_running():
    code = (
        "import importlib.util as u, sys; find = u.find_spec; "
        "u.find_spec = lambda name, *a: None if name == 'transformers' else find(name, *a); "
        "sys.argv = ['npgpt', *sys.argv[1:]]; from npgpt.cli import main; main()"
    )
    args = ["bench", "--random", "--backend", "numpy", "--compare", "hf"]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    one_line_error(r, "transformers", "--compare hf")
    assert "measuring" not in r.stderr and "running" not in r.stderr
    one_line_error(
        run_cli("bench", "--random", "--backend", "numpy", "--compare", "llama.cpp", env={"NPGPT_LLAMA_CPP": ""}),
        "--llama-cpp DIR",
    )


# -- issue 17, kind 2: malformed inputs are one line, exit 1 ------------------------------------------------------
def test_batch_file_not_utf8(tmp_path, model_file):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café\nnaïve\n".encode("latin-1"))
    one_line_error(run_cli("generate", "--file", str(latin1), "--model", model_file), "not UTF-8", "latin1.txt")
    binary = tmp_path / "random.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    one_line_error(run_cli("generate", "--batch-file", str(binary), "--model", model_file), "binary", "random.bin")


def test_stdout_closed_or_full(model_file):
    exe = os.path.join(os.path.dirname(sys.executable), "npgpt")
    args = [exe, "generate", "Hi", "--model", model_file, "--max-new-tokens", "4"]
    closed = subprocess.run(
        ["sh", "-c", '"$@" >&-', "sh", *args], capture_output=False, stderr=subprocess.PIPE, text=True, timeout=60
    )
    one_line_error(closed, "standard output is closed")
    with open("/dev/full", "w") as full:
        r = subprocess.run(args, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    one_line_error(r, "No space left")


@pytest.mark.parametrize(
    "args",
    [
        ("generate", "Hi", "--stream", "--max-new-tokens", "120"),  # written token by token
        ("score", "-"),  # a rich table, written at the end: more than a pipe holds
    ],
    ids=lambda a: a[0],
)
def test_a_reader_that_leaves_ends_the_run_as_sigpipe_does(model_file, args):
    """`npgpt generate ... | head -c 5` exited 1 (click's and rich's handling of EPIPE), which a script under
    `set -o pipefail` cannot tell from a failure. llama-cli, Ollama and cat die of SIGPIPE there: the shell's 141,
    nothing on stderr. npgpt now ends so too."""
    exe = os.path.join(os.path.dirname(sys.executable), "npgpt")
    text = "In the beginning God created the heaven and the earth. " * 300  # ~3,600 tokens: ~100 KB of table
    p = subprocess.Popen(
        [exe, *args, "--model", model_file], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert p.stdin is not None and p.stdout is not None and p.stderr is not None
    p.stdin.write(text.encode())
    p.stdin.close()
    assert p.stdout.read(5)  # as `head -c 5` reads, then leaves
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err
    assert "error" not in err and "Traceback" not in err, err


@pytest.mark.parametrize("args", [("generate", "--help"), ("--help",), ("tokenize", "Hi")])
def test_help_or_output_for_a_reader_already_gone_ends_as_sigpipe_does(args):
    """`npgpt generate --help | head -1` exited 1 (typer's help console is rich's, whose broken-pipe handling exits 1),
    where a command's own output now ends with 141, as llama-cli's, Ollama's and cat's do."""
    exe = os.path.join(os.path.dirname(sys.executable), "npgpt")
    p = subprocess.Popen([exe, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # the reader leaves before a line is written: every write fails
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err
    assert "error" not in err and "Traceback" not in err, err


def test_convert_bad_dtype_or_device_target(model_file, tmp_path):
    one_line_error(
        run_cli("convert", model_file, str(tmp_path / "x.safetensors"), "--dtype", "bfloat16"),
        "--dtype bfloat16 cannot be written as npgpt",
        "float32, float16",
    )
    assert not list(tmp_path.iterdir())
    one_line_error(run_cli("convert", model_file, "/dev/full"), "/dev/full", "not a regular file")


def test_train_out_is_a_file(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("In the beginning. " * 50)
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"keep me")
    one_line_error(run_cli("train", str(data), "--out", str(out), "--steps", "1"), "--out", "is a file")
    assert out.read_bytes() == b"keep me"


def test_train_refuses_a_nanogpt_config_as_its_text(tmp_path):
    """nanoGPT's ``python train.py config/train_shakespeare_char.py`` habit: the config is not the training text."""
    config = tmp_path / "train_shakespeare_char.py"
    config.write_text("# tiny\nimport time\nout_dir = 'out-shakespeare-char'\nn_layer = 1\nn_embd = 16\nn_head = 1\n")
    small = ["--n-layer", "1", "--n-embd", "16", "--n-head", "1", "--n-ctx", "16", "--tokenizer", "char"]
    r = run_cli("train", str(config), "--out", str(tmp_path / "run"), "--steps", "1", *small)
    one_line_error(r, "train_shakespeare_char.py is a Python config file", "--config")
    assert not (tmp_path / "run").exists()
    # typed as nanoGPT's, with no --out (its config names out_dir): "give --out" sent the user to add one, only to
    # be told then that the file is no training text
    one_line_error(run_cli("train", str(config), "--batch_size=32"), "is a Python config file")


# -- README ------------------------------------------------------------------------------------------------------
def test_readme_quickstart_is_two_commands_and_names_every_extra():
    import re
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    quickstart = readme[readme.index("## Quickstart") : readme.index("\n## ", readme.index("## Quickstart") + 1)]
    assert len(re.findall(r"^```bash\n", quickstart, flags=re.M)) == 2
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("serve", "train", "torch", "jax", "gguf", "int8", "all"):
        assert extra in extras and f"pip install 'npgpt[{extra}]'" in quickstart, extra
    assert set(extras["all"][0].partition("[")[2].rstrip("]").split(",")) == {
        "serve",
        "train",
        "torch",
        "jax",
        "gguf",
        "int8",
    }


@pytest.mark.parametrize(
    "args, hint",
    [
        (["generate", "Hi", "-sys", "x"], "No such option: -sys"),  # no --system here, and not "-s: --seed"
        (["train", "d.txt", "--out_dir=out"], "npgpt takes --out"),  # click offered --out, unsure
        (["generate", "Hi", "--init_from=resume"], "npgpt takes --model"),  # sample.py's resume: out_dir's ckpt.pt
        (["train", "d.txt", "--block_size=64"], "npgpt takes --seq-len"),
        (["next", "Hi", "--max-tokens", "2"], "npgpt next has nothing like it"),  # nanoGPT's is the model's context too
        # the OpenAI API's max_tokens is each request's on a server; its cap is --max-request-tokens
        (["serve", "--max-tokens", "64"], "No such option: --max-tokens; a client sets max_tokens in each request"),
        (["serve", "--max_tokens=64"], "--max-request-tokens caps a request's prompt and max_tokens together"),
        (["lens", "--start=FILE:p.txt"], "is read from stdin: npgpt lens - < name"),  # no --prompt-file to read it
        (["generate", "Hi", "-sys", "x"], "npgpt generate has nothing like it"),  # chat's --system
        (["generate", "Hi", "--threads", "4"], "OMP_NUM_THREADS=4 npgpt generate"),  # click offered --stream
        (["chat", "-ngl", "99"], "No such option: -ngl; npgpt offloads no layers"),  # was "-n. npgpt takes ..."
        (["generate", "Hi", "-c", "2048"], "the model's own (n_ctx"),
        (["train", "d.txt", "--ctx-size", "128"], "npgpt takes --n-ctx"),
        (["generate", "Hi", "-i"], "use npgpt chat"),
        (["generate", "Hi", "--device", "cuda"], "npgpt picks the device with --backend"),  # nanoGPT's sample.py
        (["train", "d.txt", "--device=cuda"], "JAX_PLATFORMS=cpu"),
        (["generate", "Hi", "--compile"], "--backend jax compiles"),  # click offered --file, --prompt-file
        (["next", "Hi", "--temp", "1"], "npgpt next has nothing like it"),  # click offered --dtype, --help
        (["serve", "--max-model-len", "512"], "the model's own (n_ctx"),  # vLLM's
        (["chat", "-p", "Hi"], "echo Hi | npgpt chat"),
        (["run"], "Missing argument 'model' (see `npgpt run --help`)"),  # Ollama's run needs a model; its help
        (["ps"], "npgpt keeps no models running"),
        (["create", "mymodel"], "npgpt has no Modelfiles"),  # click offered 'chat'
        (["cp", "a", "b"], "npgpt uses a model where it lies (-m PATH)"),
        (["push", "a"], "npgpt uploads no models"),
        (
            ["generate", "gpt2", "Why is the sky blue?"],
            "npgpt generate 'Why is the sky blue?' -m gpt2",
        ),  # Ollama's order
        (["generate", "Hello", "world"], "Quote text of several words: npgpt generate 'Hello world'"),
        # after --, text starting with '-': the quoted text goes after -- too (alone it was read as an option)
        (["generate", "--", "-5", "degrees"], "Quote text of several words: npgpt generate -- '-5 degrees'"),
        (["next", "--", "-5", "degrees"], "Quote text of several words: npgpt next -- '-5 degrees'"),
        # the OpenAI API's logprobs and llama.cpp's --n-probs: click said only "No such option: --logprobs"
        (["generate", "Hi", "--logprobs", "2"], "npgpt score gives each token's log-probability in a text"),
        (["generate", "Hi", "--n-probs", "2"], "model.completions(prompt, logprobs=k)"),
        (["chat", "--top-logprobs", "2"], "npgpt next shows the likeliest next tokens"),
        # Ollama's show flags, nanoGPT's --dataset, llama.cpp's -fa/--no-mmap/-no-cnv/--ignore-eos/-b: click's own
        # "No such option" (or its neighbours: --ignore-eos "Possible options: --no-echo") said nothing of them
        (["show", "bundled", "--modelfile"], "No such option: --modelfile; npgpt has no Modelfiles"),
        (["info", "bundled", "--template"], "npgpt's models share one chat template"),
        (["train", "--dataset=shakespeare_char"], "npgpt train takes the text itself: npgpt train input.txt --out RUN"),
        (["generate", "Hi", "--flash-attn"], "npgpt picks its attention kernel by itself; drop it"),
        (["generate", "Hi", "--no-mmap"], "npgpt memory-maps the weights where the format allows"),
        (["generate", "Hi", "-no-cnv"], "npgpt continues the prompt, with no conversation, already"),
        (["chat", "-no-cnv"], "npgpt chat is a conversation; for one prompt, use npgpt generate"),
        (["generate", "Hi", "-b", "512"], "npgpt batches by itself: --batch-file"),
        # llama.cpp's --version on each program ("Possible options: --json"); Ollama's run --format, --keepalive
        (["generate", "--version"], "No such option: --version; the version is npgpt's own, before any command"),
        (["run", "bundled", "Hi", "--format", "json"], "GPT-2 cannot be held to a format such as JSON"),
        (["run", "bundled", "--keepalive", "5m"], "npgpt keeps no models running"),
        # Ollama's run --think/--hidethinking and run/pull --insecure; llama-perplexity's -c, -b, --chunks: click's
        # bare "No such option", or on eval "the context length is the model's own" and "npgpt eval has nothing like it"
        (["run", "bundled", "Hi", "--think"], "No such option: --think; GPT-2 has no thinking mode"),
        (["run", "bundled", "--hidethinking"], "No such option: --hidethinking; GPT-2 has no thinking mode"),
        (["run", "bundled", "Hi", "--insecure"], "No such option: --insecure; npgpt fetches over HTTPS only"),
        (["pull", "124M", "--insecure"], "No such option: --insecure; npgpt fetches over HTTPS only"),
        (["eval", "t.txt", "-c", "512"], "No such option: -c. npgpt takes --window"),
        (["score", "t.txt", "--ctx-size", "512"], "No such option: --ctx-size. npgpt takes --window"),
        (["eval", "t.txt", "-b", "512"], "No such option: -b; npgpt eval's batch is --batch-size N windows"),
        (["eval", "t.txt", "--chunks", "4"], "to score a part, pipe it in: head -c 100000 FILE | npgpt eval -"),
        (["eval", "t.txt", "--kl-divergence"], "No such option: --kl-divergence; npgpt bench measures how int8"),
        (["eval", "t.txt", "--kl-divergence-base", "b.kld"], "npgpt bench measures how int8 and 16-bit weights differ"),
        # llama-cli's samplers, grammars, adapters and switches npgpt lacks: click's bare "No such option" or a wrong
        # neighbour (--typical "Possible options: --dtype", --jinja "--json", --keep "--help, --seed")
        (["generate", "Hi", "--typical", "0.9"], "npgpt's samplers are --temperature, --top-k, --top-p and --min-p"),
        (["chat", "--mirostat", "2"], "npgpt's samplers are --temperature, --top-k"),
        (["serve", "--dry-multiplier", "0.8"], "a client sets sampling in each request"),
        (["generate", "Hi", "--repeat-last-n", "64"], "(llama.cpp's --repeat-last-n -1); there is no window"),
        (["generate", "Hi", "--json-schema", "{}"], "GPT-2 cannot be held to a format such as JSON"),
        (["chat", "--lora", "a.gguf"], "npgpt loads no adapters: merge a LoRA into the weights"),
        (["generate", "Hi", "-sp"], "npgpt never prints special tokens as text: <|endoftext|> ends the text"),
        (["generate", "Hi", "--keep", "5"], "npgpt shifts no context, so there is nothing to keep"),
        (["chat", "--jinja"], "npgpt chat writes each turn in the one chat template its models share"),
        (["generate", "Hi", "--in-prefix", "x"], "npgpt continues the prompt as it is, with no template"),
        (["chat", "-mli"], 'a line starting with """ begins a message of several lines'),
        (["generate", "Hi", "--multiline-input"], "a prompt may span lines: give it with --prompt-file FILE"),
        (["chat", "-st"], "for one turn, pipe the message in: echo Hi | npgpt chat"),
        (["generate", "Hi", "--log-disable"], "notices go to stderr (2>/dev/null leaves them out)"),
        (["generate", "Hi", "--no-perf"], "npgpt prints no timings; npgpt bench measures speed"),
        (["generate", "Hi", "--verbose-prompt"], "prints the prompt before its text already (--no-echo leaves it out)"),
        (["generate", "Hi", "-ub", "512"], "npgpt batches by itself: --batch-file"),
        # nanoGPT's train.py settings npgpt fixes: click's bare "No such option" or a wrong neighbour (--dropout
        # "Possible options: --out", --min_lr "--lr", --eval_only "--eval-interval")
        (["train", "d.txt", "--dropout=0.1"], "npgpt trains without dropout (nanoGPT's default, dropout 0.0)"),
        (["train", "d.txt", "--bias=False"], "npgpt's models keep GPT-2's biases"),
        (["train", "d.txt", "--beta2=0.99"], "npgpt's AdamW uses beta1 0.9 and beta2 0.95"),
        (["train", "d.txt", "--min_lr=6e-5"], "then follows a cosine to --lr / 10 at --steps"),
        (["train", "d.txt", "--lr-decay-iters", "5"], "then follows a cosine to --lr / 10 at --steps"),  # kebab-typed
        (["train", "d.txt", "--decay_lr=False"], "npgpt's learning rate warms up over --warmup steps"),
        (["train", "d.txt", "--always_save_checkpoint=False"], "checkpoints every --checkpoint-interval steps"),
        (["train", "d.txt", "--eval_only=True"], "use npgpt eval TEXT -m RUN"),
        (["train", "d.txt", "--wandb_log=True"], "npgpt logs to no service"),
        # llama-server's: click's bare "No such option", or --api-key-file "Possible options: --api-key"
        (["serve", "--metrics"], "npgpt serve always serves /metrics (Prometheus text); drop it"),
        # llama-server's other switches: click's bare "No such option" (or --timeout's "--shutdown-timeout")
        (["serve", "--no-webui"], "No such option: --no-webui; npgpt serve's playground at / is a page of its own"),
        (["serve", "--embeddings"], "npgpt serve has no embeddings endpoint (GPT-2 makes none)"),
        (["serve", "--threads-http", "4"], "npgpt serve answers HTTP on one event loop"),
        (["serve", "--timeout", "600"], "No such option: --timeout; npgpt serve closes a connection whose request"),
        (["serve", "--api-key-file", "k"], "give the key in NPGPT_API_KEY: NPGPT_API_KEY=$(cat FILE) npgpt serve"),
        (["serve", "--ssl-cert-file", "c"], "npgpt serve speaks plain HTTP; for HTTPS, put a TLS proxy"),
        (["serve", "-cb"], "npgpt serve batches requests continuously by itself; --max-batch caps"),
        # llama-perplexity's -f FILE, which eval takes: on score it was click's bare "No such option: -f"
        (["score", "-f", "t.txt"], "No such option: -f; npgpt score takes the text file as its argument"),
        (["score", "--file", "t.txt"], "No such option: --file; npgpt score takes the text file as its argument"),
    ],
)
def test_other_tools_names_get_npgpts(args, hint):
    r = run_cli(*args)
    assert r.returncode == 2 and hint in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize(
    "theirs, ours",
    [
        # llama.cpp's llama-cli
        (
            ["generate", "-p", "Hi", "-n", "2", "--n-predict", "64", "--temp", "0.7", "--top-k", "40", "-s", "1"],
            [
                "generate",
                "Hi",
                "-n",
                "2",
                "--max-new-tokens",
                "64",
                "--temperature",
                "0.7",
                "--top-k",
                "40",
                "--seed",
                "1",
            ],
        ),
        (
            ["generate", "--prompt=-5 degrees", "--repeat-penalty", "1.1"],
            ["generate", "--repetition-penalty", "1.1", "--", "-5 degrees"],
        ),
        (["generate", "Hi", "-r", "User:", "--no-display-prompt"], ["generate", "Hi", "--stop", "User:", "--no-echo"]),
        (
            ["chat", "-sys", "Be terse.", "-n", "20", "--reverse-prompt", "User:"],
            ["chat", "--system", "Be terse.", "--max-new-tokens", "20", "--stop", "User:"],
        ),
        (["next", "--prompt", "Hi", "--model-path", "m"], ["next", "Hi", "--model", "m"]),
        (["bench", "-t", "4"], ["bench", "--threads", "4"]),
        (["download", "-hf", "org/m"], ["download", "--hf", "org/m"]),
        # nanoGPT's sample.py and train.py (--key=value)
        (
            [
                "generate",
                "--start=FILE:p.txt",
                "--num_samples=3",
                "--max_new_tokens=100",
                "--temperature=0.8",
                "--top_k=200",
                "--seed=1337",
            ],
            [
                "generate",
                "--prompt-file",
                "p.txt",
                "-n",
                "3",
                "--max-new-tokens",
                "100",
                "--temperature",
                "0.8",
                "--top-k",
                "200",
                "--seed",
                "1337",
            ],
        ),
        (
            ["generate", "--start=Hi", "--top_p=0.9", "--min_p=0.1"],
            ["generate", "Hi", "--top-p", "0.9", "--min-p", "0.1"],
        ),
        (
            [
                "train",
                "d.txt",
                "--max_iters=20",
                "--learning_rate=1e-3",
                "--n_layer=2",
                "--warmup_iters=5",
                "--grad_clip=1",
                "--gradient_accumulation_steps=2",
                "--log_interval=1",
                "--eval_iters=3",
            ],
            [
                "train",
                "d.txt",
                "--steps",
                "20",
                "--lr",
                "1e-3",
                "--n-layer",
                "2",
                "--warmup",
                "5",
                "--clip",
                "1",
                "--grad-accum",
                "2",
                "--log-interval",
                "1",
                "--eval-batches",
                "3",
            ],
        ),
        (["eval", "-d", "t.txt", "--batch_size", "2"], ["eval", "-d", "t.txt", "--batch-size", "2"]),
        # the OpenAI API's max_tokens, transformers' max_steps; nanoGPT's names in the CLI's own kebab-case
        (["generate", "Hi", "--max-tokens", "5"], ["generate", "Hi", "--max-new-tokens", "5"]),
        (["chat", "--max_tokens=5"], ["chat", "--max-new-tokens", "5"]),
        (
            ["train", "d.txt", "--learning-rate", "1e-3", "--max-iters", "5", "--grad-clip", "1"],
            ["train", "d.txt", "--lr", "1e-3", "--steps", "5", "--clip", "1"],
        ),
        (["train", "d.txt", "--max-steps", "5"], ["train", "d.txt", "--steps", "5"]),
        # Ollama's `show MODEL` is npgpt info MODEL; every other npgpt command takes its model as -m
        (["info", "-m", "bundled", "--json"], ["info", "bundled", "--json"]),
        (["info", "--model=bundled"], ["info", "bundled"]),
        # llama-tokenize's -p/--prompt: npgpt tokenize's TEXT (it said "npgpt tokenize has nothing like it")
        (["tokenize", "-p", "-5 degrees", "--ids"], ["tokenize", "--ids", "--", "-5 degrees"]),
        (["tokenize", "--prompt=Hi"], ["tokenize", "Hi"]),
        # nanoGPT's --init_from: a model's name is sample.py's --model, train.py's --init; train.py's resume and
        # scratch are --resume and the default ("No such option: --init_from. npgpt takes --init")
        (["generate", "Hi", "--init_from=gpt2-xl"], ["generate", "Hi", "--model", "gpt2-xl"]),
        (["train", "d.txt", "--init-from", "gpt2"], ["train", "d.txt", "--init", "gpt2"]),
        (["train", "d.txt", "--init_from=resume", "--out", "r"], ["train", "d.txt", "--resume", "--out", "r"]),
        (["train", "d.txt", "--init_from", "scratch"], ["train", "d.txt"]),
        # llama-bench's -p/-n/-r (prompt tokens, generated tokens, repetitions): "npgpt bench has nothing like it"
        (
            ["bench", "-p", "256", "-n", "32", "-r", "3", "-t", "2"],
            ["bench", "--prompt-len", "256", "--new-tokens", "32", "--repeat", "3", "--threads", "2"],
        ),
        (
            ["bench", "--n-prompt", "256", "--n-gen=32", "--repetitions", "3"],
            ["bench", "--prompt-len", "256", "--new-tokens", "32", "--repeat", "3"],
        ),
        # nanoGPT's eval_iters: batches per held-out loss ("Possible options: --eval-interval")
        (["train", "d.txt", "--eval_iters=20"], ["train", "d.txt", "--eval-batches=20"]),
        # llama-perplexity's --ppl-stride: its strided perplexity is Hugging Face's sliding window, eval's
        (["eval", "t.txt", "--ppl-stride", "128"], ["eval", "t.txt", "--stride", "128"]),
        (["score", "t.txt", "--ppl-stride=128"], ["score", "t.txt", "--stride=128"]),
    ],
)
def test_other_tools_unambiguous_spellings_are_taken(theirs, ours):
    """llama.cpp's `--temp 0.7 -n 64 -p Hi`, nanoGPT's `--max_new_tokens=100 --start=FILE:p.txt` were refused with
    npgpt's spelling in the error; where a spelling means the same as one of the command's options, whatever its
    value, it is taken as that option (llama.cpp's -n only where the command has no -n of its own)."""
    import typer

    from npgpt.cli import app

    group = typer.main.get_command(app)

    def parsed(args: list[str]) -> dict:
        return group.commands[args[0]].make_context(args[0], list(args[1:])).params

    assert parsed(theirs) == parsed(ours)


def test_nanogpts_sample_line_runs(model_file):
    """nanoGPT's README samples with `python sample.py --init_from=gpt2-xl --start="..." --num_samples=5
    --max_new_tokens=100`: npgpt said "No such option: --init_from. npgpt takes --model"; the line runs as npgpt's."""
    theirs = ["--start=What is the answer", "--num_samples=2", "--max_new_tokens=3", "--seed", "1"]
    a = run_cli("generate", f"--init_from={model_file}", *theirs)
    b = run_cli(
        "generate", "What is the answer", "--model", model_file, "-n", "2", "--max-new-tokens", "3", "--seed", "1"
    )
    assert a.returncode == 0 and (a.stdout, a.stderr) == (b.stdout, b.stderr), a.stderr


def test_nanogpts_settings_that_npgpt_follows_anyway_are_taken(model_file):
    """nanoGPT's `--compile=False` (its way on a CPU) was refused: "npgpt has no --compile", a line about something
    not asked for. A setting whose value is what npgpt does anyway is taken as nothing, as --init_from=scratch is; any
    other value keeps the line (npgpt cannot compile, or train with dropout, on request)."""
    theirs = ["--start=Hi", "--max_new_tokens=3", "--seed=1", f"--init_from={model_file}"]
    a = run_cli("generate", *theirs, "--compile=False")
    assert (a.returncode, a.stdout) == (0, run_cli("generate", *theirs).stdout), a.stderr
    r = run_cli("generate", *theirs, "--compile=True")
    assert r.returncode == 2 and "npgpt has no --compile" in r.stderr, r.stderr
    import typer.main

    from npgpt.cli.commands import app
    from npgpt.cli.names import _as_ours

    train = typer.main.get_command(app).commands["train"]
    same = ["--dropout=0.0", "--bias=True", "--compile=False", "--wandb_log=False", "--decay_lr=True"]
    assert _as_ours(train, ["t.txt", *same, "--always_save_checkpoint=True", "--eval_only=False"]) == ["t.txt"]
    assert _as_ours(train, ["t.txt", "--dropout=0.2"]) == ["t.txt", "--dropout=0.2"]  # refused, with its line
    generate = typer.main.get_command(app).commands["generate"]
    assert _as_ours(generate, ["Hi", "--dropout=0.0"]) == ["Hi", "--dropout=0.0"]  # no training: nothing like it


def test_a_llama_cpp_and_a_nanogpt_command_line_run(model_file, tmp_path):
    prompt = tmp_path / "my prompt.txt"
    prompt.write_text("In the beginning\n")
    args = [
        "-m",
        model_file,
        "--n-predict",
        "3",
        "--temp",
        "0.7",
        "--top-k",
        "40",
        "--repeat-penalty",
        "1.1",
        "-s",
        "1",
    ]
    r = run_cli("generate", "-p", "In the beginning", *args)
    assert r.returncode == 0 and r.stdout.startswith("In the beginning"), r.stderr
    start = f"--start=FILE:{prompt}"
    r = run_cli(
        "generate", start, "--num_samples=2", "--max_new_tokens=3", "--top_k=200", "--seed=1337", "-m", model_file
    )
    assert r.returncode == 0 and completions(r.stdout) == 2 and "In the beginning" in r.stdout, r.stderr


def test_eval_takes_its_text_file_as_score_and_llama_perplexity_do(model_file, tmp_path):
    """`npgpt eval heldout.txt` (as `npgpt score FILE`) and llama-perplexity's `-f heldout.txt` said "Missing option
    '--data'": the file is taken as an argument, with --data, -d or -f; none, or two, is one line, exit 2."""
    text = tmp_path / "held out.txt"
    text.write_text("In the beginning God created the heaven and the earth.\n")
    runs = [
        run_cli("eval", *how, "-m", model_file, "--json") for how in ([str(text)], ["-d", str(text)], ["-f", str(text)])
    ]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert len({r.stdout for r in runs}) == 1
    for args, said in [
        ([], "npgpt eval FILE (or --data FILE"),
        ([str(text), "-d", str(text)], "give the text file once"),
    ]:
        r = run_cli("eval", *args, "-m", model_file)
        assert r.returncode == 2 and said in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_a_tilde_the_shell_left_is_the_home_folder(model_file, tmp_path):
    """The shell expands no ~ after `=` or in quotes: `--prompt-file=~/p.txt` was "not found", and `npgpt convert M
    "~/m.safetensors"` wrote into a folder named ~ in the current one. Both are the home folder now, unless a file of
    that very name is in the current folder."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "p.txt").write_text("In the beginning")
    env = {**os.environ, "HOME": str(home)}

    def npgpt(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "npgpt", *args], cwd=work, env=env, capture_output=True, text=True)

    for given in ("--prompt-file=~/p.txt", "--start=FILE:~/p.txt"):
        r = npgpt("generate", given, "-m", model_file, "--max-new-tokens", "2")
        assert r.returncode == 0 and r.stdout.startswith("In the beginning"), r.stderr
    r = npgpt("convert", model_file, "~/m.safetensors")
    assert r.returncode == 0 and (home / "m.safetensors").is_file() and not (work / "~").exists(), r.stderr
    (work / "~").mkdir()  # a folder of that very name here: the path as typed
    (work / "~" / "p.txt").write_text("Behold")
    r = npgpt("generate", "--prompt-file=~/p.txt", "-m", model_file, "--max-new-tokens", "2")
    assert r.returncode == 0 and r.stdout.startswith("Behold"), r.stderr


def test_ollamas_commands_run_as_npgpts(model_file, tmp_path):
    """`npgpt run MODEL "PROMPT"`, `pull`, `show`, `ls`, `remove`, `help` and `-v`, as Ollama users type them, were
    refused with npgpt's command in the error: each runs as npgpt's own (run: generate for a prompt, its words joined
    as Ollama joins them, else chat; help COMMAND: its --help)."""
    home = {"NPGPT_HOME": str(tmp_path)}
    same = [
        (["-v"], ["--version"]),
        (
            ["run", model_file, "Why", "is", "the", "sky", "blue?", "-n", "2", "--seed", "1", "--max-new-tokens", "3"],
            ["generate", "Why is the sky blue?", "-m", model_file, "-n", "2", "--seed", "1", "--max-new-tokens", "3"],
        ),
        (["show", model_file], ["info", model_file]),
        (["ls"], ["list"]),
        (["pull", "125M"], ["download", "125M"]),
        (["remove", "124M"], ["rm", "124M"]),
        (["help"], ["--help"]),
        (["help", "generate"], ["generate", "--help"]),
        (["help", "nosuch"], ["nosuch", "--help"]),
    ]
    for theirs, ours in same:
        a, b = run_cli(*theirs, env=home), run_cli(*ours, env=home)
        assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr), theirs
    chat = ["--max-new-tokens", "3", "--seed", "1"]
    a = run_cli("run", model_file, *chat, input="Hello\n")
    b = run_cli("chat", "-m", model_file, *chat, input="Hello\n")
    assert a.returncode == 0 and (a.stdout, a.stderr) == (b.stdout, b.stderr), a.stderr


@pytest.mark.parametrize(
    "args, line",
    [
        (["genrate", "Hi"], "error: No such command 'genrate'. Did you mean 'generate'? (see `npgpt --help`)"),
        (
            ["--max-new-tokens", "5", "generate", "Hi"],
            "error: No such option: --max-new-tokens; options go after the command: npgpt generate --max-new-tokens ..."
            " (see `npgpt generate --help`)",  # the command's options are in its help
        ),
        (
            ["--temp", "1", "generate", "Hi"],
            "error: No such option: --temp; npgpt generate takes --temperature, after the command:"
            " npgpt generate --temperature ... (see `npgpt generate --help`)",
        ),
        (
            ["-m", "x"],
            "error: No such option: -m; options go after the command: npgpt COMMAND -m ... (see `npgpt --help`)",
        ),
        (
            ["generate", "Hi", "there"],
            "error: Got unexpected extra argument (there). Quote text of several words: npgpt generate 'Hi there'"
            " (see `npgpt generate --help`)",
        ),
        # Ollama's `ollama run MODEL "PROMPT"`: chat takes no text argument, and its error said only that
        (
            ["chat", "Hi there"],
            "error: Got unexpected extra argument (Hi there). npgpt chat reads your messages from the terminal, or"
            " piped in: echo 'Hi there' | npgpt chat (see `npgpt chat --help`)",
        ),
        (
            ["chat", "124M"],
            "error: Got unexpected extra argument (124M). The model goes after -m: npgpt chat -m 124M"
            " (see `npgpt chat --help`)",
        ),
        (["convert"], "error: Missing argument 'src' (see `npgpt convert --help`)"),  # no "'src'. (see"
        # an option given last with no value pointed at the root's help, which lists no option of the command's
        (["generate", "Hi", "--stop"], "error: Option '--stop' requires an argument (see `npgpt generate --help`)"),
        (["next", "Hi", "-k"], "error: Option '-k' requires an argument (see `npgpt next --help`)"),
        (["nosuch"], "error: No such command 'nosuch' (see `npgpt --help`)"),
        # the hint named the command's help and the pointer the root's: "(npgpt next --help) (see `npgpt --help`)"
        (
            ["--foo", "next"],
            "error: No such option: --foo; npgpt next has no such option either (see `npgpt next --help`)",
        ),
        (
            ["next", "Hi", "--temp", "1"],
            "error: No such option: --temp; npgpt next has nothing like it (see `npgpt next --help`)",
        ),
        (
            ["--verbose"],
            "error: No such option: --verbose; npgpt has no verbose mode; NPGPT_DEBUG=1 adds a traceback to"
            " an error (see `npgpt --help`)",
        ),
    ],
)
def test_a_command_line_that_does_not_parse_is_one_line(args, line):
    """A typo in a command, an option before its command: click's usage error was a box of 4-5 lines, wrapped
    to the terminal; it is one line like every other error, with click's exit code, 2. No width is set here."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    r = subprocess.run([sys.executable, "-m", "npgpt", *args], capture_output=True, text=True, env=env, timeout=60)
    expected = line.replace("`npgpt", "`python -m npgpt")  # the help command as the user ran npgpt
    assert r.returncode == 2 and r.stderr == expected + "\n" and r.stdout == "", r.stderr


def test_llama_cpps_n_is_told_apart_from_npgpts(model_file):
    """llama.cpp's ``-n 128`` is tokens to generate; npgpt's -n is completions per prompt: said on stderr."""
    r = run_cli("generate", "Hi", "--model", model_file, "-n", "3", "--seed", "1")
    assert r.returncode == 0 and completions(r.stdout) == 3, r.stderr
    assert "-n 3: 3 completions of each prompt" in r.stderr and "use --max-new-tokens 3" in r.stderr
    r = run_cli("generate", "Hi", "--model", model_file, "-n", "2", "--max-new-tokens", "2", "--seed", "1")
    assert r.returncode == 0 and "completions" not in r.stderr, r.stderr  # both given: the user knows
    one_line_error(run_cli("generate", "Hi", "--model", model_file, "-n", "-1"), "got -1", "--max-new-tokens")
    # llama.cpp's -n 4096 (tokens) ran 4096 completions as one batch until memory ran out; OpenAI's n stops at 128
    r = run_cli("generate", "Hi", "--model", model_file, "-n", "4096", timeout=30)
    assert r.returncode == 1 and r.stderr == (
        "error: -n is completions per prompt, from 1 to 128 (OpenAI's limit on n), got 4096; for 4096 new tokens "
        "(llama.cpp's -n), use --max-new-tokens 4096\n"
    ), r.stderr


def test_other_tools_dtype_names_are_taken_as_npgpts(model_file, tmp_path):
    """llama.cpp's converters take --outtype f16/bf16/q8_0, PyTorch says half: `npgpt convert ... --to gguf --dtype
    f16` was refused with "(f16 is float16 here)"; each such name (any case) is now taken as npgpt's dtype, and one
    a format cannot store is refused under npgpt's name."""
    pytest.importorskip("gguf")
    for theirs, ours, to, name in [("f16", "float16", "gguf", "m.gguf"), ("Q8_0", "q8_0", "gguf", "m.gguf")]:
        for dtype, folder in ((theirs, "theirs"), (ours, "ours")):
            (tmp_path / folder).mkdir(exist_ok=True)
            r = run_cli("convert", model_file, str(tmp_path / folder / name), "--to", to, "--dtype", dtype)
            assert r.returncode == 0, r.stderr
        assert (tmp_path / "theirs" / name).read_bytes() == (tmp_path / "ours" / name).read_bytes(), theirs
    line = one_line_error(run_cli("convert", model_file, str(tmp_path / "m.bin"), "--to", "llmc", "--dtype", "half"))
    assert line == "error: --dtype float16 cannot be written as llmc; it stores float32, bfloat16", line
    line = one_line_error(run_cli("generate", "Hi", "-m", model_file, "--dtype", "FP16"))
    assert "--dtype float16" in line and "FP16" not in line, line
    one_line_error(run_cli("generate", "Hi", "-m", model_file, "--dtype", "int4"), "--dtype int4 is unknown")


def test_llama_cpps_f_is_told_apart_from_npgpts(model_file, tmp_path):
    """llama.cpp's ``-f prompt.txt`` is the whole file as one prompt; npgpt's -f is one prompt per line: said."""
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("User: hello\nAssistant:\n")
    r = run_cli("generate", "-f", str(prompt), "--model", model_file, "--max-new-tokens", "2")
    assert r.returncode == 0 and completions(r.stdout) == 2, r.stderr
    assert "2 prompts, one per line" in r.stderr and f"use --prompt-file {prompt}" in r.stderr
    r = run_cli("generate", "--batch-file", str(prompt), "--model", model_file, "--max-new-tokens", "2")
    assert r.returncode == 0 and "one per line" not in r.stderr, r.stderr  # the batch was asked for by name


def test_errors_name_the_flag_the_user_typed(model_file):
    """The library's messages name the Python keyword (max_new_tokens); the CLI user typed --max-new-tokens."""
    r = run_cli("generate", "Hi", "--model", model_file, "--max-new-tokens", "100000")
    assert r.returncode == 1 and "--max-new-tokens is 100000" in r.stderr and "lower --max-new-tokens" in r.stderr
    assert " max_new_tokens" not in r.stderr
    r = run_cli("generate", "Hi", "--model", model_file, "--top-p", "2")
    assert r.stderr.strip() == "error: --top-p must be in [0, 1] (1 = off, 0 = greedy), got 2.0"


def test_llama_cpps_random_seed_is_a_random_seed(model_file):
    """llama.cpp's ``--seed -1`` (its default) means a random seed, as npgpt's server reads a request's seed -1; the
    CLI refused it ("leave --seed out for a random one"): it is taken as no --seed, in generate and chat. Another
    negative seed is a seed, as OpenAI's and vLLM's (its two's complement in 64 bits): the same text each time."""
    r = run_cli("generate", "Hi", "--model", model_file, "--seed", "-1", "--max-new-tokens", "2")
    assert r.returncode == 0 and r.stdout.startswith("Hi"), r.stderr
    r = run_cli("chat", "--model", model_file, "--seed", "-1", "--max-new-tokens", "2", input="Hi\n")
    assert r.returncode == 0, r.stderr
    twice = [run_cli("generate", "Hi", "--model", model_file, "--seed", "-2", "--max-new-tokens", "8") for _ in "ab"]
    assert twice[0].returncode == 0 and twice[0].stdout == twice[1].stdout, twice[0].stderr


def test_top_k_minus_one_is_off_as_in_llama_cpp_and_vllm(model_file):
    """llama.cpp's and vLLM's top-k -1 means no top-k; npgpt generate and chat refused it ('--top-k must be an
    integer >= 0 (0 = off), got -1'): it is off, as 0, and -2 is still refused."""
    same = ["-m", model_file, "--max-new-tokens", "4", "--seed", "3"]
    off, minus_one = run_cli("generate", "Hi", "--top-k", "0", *same), run_cli("generate", "Hi", "--top-k", "-1", *same)
    assert minus_one.returncode == 0 and minus_one.stdout == off.stdout, minus_one.stderr
    r = run_cli("chat", "--top-k", "-1", *same, input="Hi\n")
    assert r.returncode == 0, r.stderr
    one_line_error(run_cli("generate", "Hi", "--top-k", "-2", *same), "--top-k must be", "got -2")


def test_the_keywords_errors_are_translated_from_are_flags():
    """as_flags turns the library's ``dtype='int8'`` and ``window must be`` into ``--dtype int8`` and ``--window
    must be``: each keyword it translates must be an option of some command, spelt as its name with dashes."""
    import typer.main

    from npgpt.cli import app
    from npgpt.cli import flags as cli_flags

    def options(command) -> set[str]:
        found = {o for p in command.params for o in getattr(p, "opts", [])}
        for sub in getattr(command, "commands", {}).values():
            found |= options(sub)
        return found

    flags = options(typer.main.get_command(app))
    assert {cli_flags._flag(name) for name in cli_flags._FLAGS} <= flags


# -- every flag a message names is an option of the command that prints it ---------------------------------------
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_SPAN = re.compile(r"`([^`]*)`")  # a command quoted in a message: `npgpt download --hf ORG/NAME`
_EXAMPLE = re.compile(r"(?:Example|or|then)\b[^\n]*?\bnpgpt ([a-z]+)([^\n`]*)")  # a help's unquoted example
# Library modules whose messages one command prints; every other library module is reached by several commands
# (registry, download, api: generate, chat, info, convert, train --init...) and names no flag of its own.
_PRINTED_BY = {
    "npgpt/train/": "train",
    "npgpt/bench/": "bench",
    "npgpt/server/": "serve",
    "npgpt/formats/__init__.py": "convert",
    "npgpt/chat.py": "chat",
}
# Other programs' flags, in the commands npgpt runs or tells its user to run (cmake, llama.cpp, nvidia-smi).
_NOT_OURS = {"--build", "--target", "--repack", "--no-repack", "--outtype", "--outfile", "--output-format"}
_NOT_OURS |= {"--query-gpu", "--format", "--worker"}


def _commands() -> dict[str, set[str]]:
    import typer.main

    from npgpt.cli import app

    group = typer.main.get_command(app)
    return {
        name: {o for p in c.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}
        for name, c in group.commands.items()
    }


def _strings(tree: ast.AST, skip_docstrings: bool = True) -> list[str]:
    """Every string in ``tree``, an f-string whole (a value as ``X``), docstrings left out if asked."""
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body and isinstance(n.body[0], ast.Expr)
    }
    # an f-string's parts, and the code in its braces, are read as the one message they make
    parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in ast.walk(n) if v is not n}
    texts = []
    for n in ast.walk(tree):
        if isinstance(n, ast.JoinedStr) and id(n) not in parts:
            texts.append("".join(v.value if isinstance(v, ast.Constant) else ast.unparse(v) for v in n.values))
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in parts:
            if not (skip_docstrings and id(n) in docs):
                texts.append(n.value)
    return texts


def _misnamed(text: str, own: set[str] | None, commands: dict[str, set[str]]) -> list[str]:
    """The flags ``text`` names that its printer lacks: a quoted or example ``npgpt CMD ...`` is CMD's, any
    other quoted command another program's, and the rest the printer's (``own``; None: a library module
    that several commands reach, which may name none)."""
    wrong = []
    for cmd, rest in [*(m.groups() for m in _EXAMPLE.finditer(text))] + [
        (m[1].split()[1], m[1]) for m in _SPAN.finditer(text) if m[1].startswith("npgpt ") and len(m[1].split()) > 1
    ]:
        wrong += [f"{f} (on npgpt {cmd})" for f in _FLAG.findall(rest) if f not in commands.get(cmd, set())]
    bare = _EXAMPLE.sub("", _SPAN.sub("", text))
    wrong += [f for f in _FLAG.findall(bare) if f not in _NOT_OURS and (own is None or f not in own)]
    return wrong


def test_every_flag_a_message_names_is_an_option_of_the_command_printing_it():
    """`npgpt download`'s offline hint said "pass a local checkpoint path with --model", which download has not
    (nor info nor convert, where the registry's "no model" error said it too). Every message and help text is
    walked: a command's own functions (and what they call in npgpt/cli) name its flags; a library module that
    one command prints (train/, bench/, server/, convert's) names that command's; any other names none; and a
    quoted `npgpt CMD ...` names CMD's."""
    commands = _commands()
    root = Path(__file__).resolve().parents[1]
    wrong: list[str] = []
    for path in sorted((root / "npgpt").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("npgpt/cli/"):
            continue
        printer = next((c for prefix, c in _PRINTED_BY.items() if rel.startswith(prefix)), None)
        own = commands[printer] if printer else None
        for text in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            wrong += [f"{rel}: {f} in {text[:60]!r}" for f in _misnamed(text, own, commands)]
    # the CLI: each command's callback, and the functions of npgpt/cli it calls, module by module
    import typer.main

    from npgpt.cli import app

    trees = {p.stem: ast.parse(p.read_text(encoding="utf-8")) for p in (root / "npgpt" / "cli").glob("*.py")}
    functions = {
        (mod, n.name): n for mod, tree in trees.items() for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
    }
    imported = {
        (mod, a.asname or a.name): (node.module, a.name)
        for mod, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in trees
        for a in node.names
    }
    for name, command in typer.main.get_command(app).commands.items():
        callback, own = command.callback, commands[name]
        todo, seen = [(callback.__module__.rpartition(".")[2], callback.__name__)], set()
        while todo:
            key = todo.pop()
            if key in seen or key not in functions:
                continue
            seen.add(key)
            fn = functions[key]
            for text in _strings(fn, skip_docstrings=fn.name != callback.__name__):  # a command's docstring: its help
                wrong += [f"npgpt {name} ({key[1]}): {f} in {text[:60]!r}" for f in _misnamed(text, own, commands)]
            for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)):
                todo.append(imported.get((key[0], call.func.id), (key[0], call.func.id)))
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["tokenize", "-f", "p.txt"],
            "npgpt tokenize reads a file's text from standard input: npgpt tokenize - < FILE",
        ),
        (["next", "--file", "p.txt"], "npgpt next reads a file's text from standard input: npgpt next - < FILE"),
        (["lens", "-f", "p.txt"], "npgpt lens - < FILE"),
        (["chat", "-f", "p.txt"], 'llama-cli\'s -f is the system message: npgpt chat --system "$(cat FILE)"'),
        (["tokenize", "--stdin"], "npgpt tokenize reads standard input with - (or with no TEXT)"),
        (["tokenize", "Hi", "--show-count"], "npgpt tokenize's last line is the count (--json: n_tokens)"),
        (["generate", "Hi", "--no-bos"], "npgpt adds no beginning-of-text token (GPT-2 has none)"),
        (["show", "bundled", "--system"], "npgpt's models carry no system message; npgpt chat --system TEXT gives one"),
        (["chat", "-sysf", "s.txt"], 'npgpt chat takes the system message itself: npgpt chat --system "$(cat FILE)"'),
        (["generate", "Hi", "--system-prompt-file", "s.txt"], "npgpt generate has no system message"),
        (["show", "bundled", "--license"], "npgpt's models carry no license text"),
    ],
)
def test_llama_cpps_file_and_tokenize_options_say_npgpts_way(args, said):
    """llama.cpp's -f FILE (its prompt from a file) on next, lens, attention and tokenize said "npgpt next has nothing
    like it", though each reads a file piped in; llama-tokenize's --stdin got click's "(Possible options: --json)",
    its --show-count and --no-bos, and `ollama show`'s --system and --license a bare "No such option". Each now says
    npgpt's way in one line."""
    r = run_cli(*args)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and said in r.stderr, r.stderr


def test_a_one_letter_option_written_with_equals_takes_the_value(model_file):
    """`-k=5`, `-m=model.gguf`, `-n=2` (as Python's argparse and Ollama's pflag take them) were read by click as the
    value '=5': "'=5' is not an integer", "'=model.gguf' is not a file or a known model"; another tool's `-s=1` said
    "No such option: -s. npgpt takes --seed" though `-s 1` runs. Each is now the option with its value."""
    ours = run_cli("generate", "Hi", "-m", model_file, "--max-new-tokens", "2", "--seed", "1", "-n", "2")
    assert ours.returncode == 0, ours.stderr
    r = run_cli("generate", "-p=Hi", f"-m={model_file}", "--max-new-tokens", "2", "-s=1", "-n=2")
    assert (r.returncode, r.stdout) == (0, ours.stdout), r.stderr
    r = run_cli("next", "Hi", "-k=3", f"-m={model_file}", "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["tokens"]) == 3, r.stderr
    r = run_cli("info", f"-m={model_file}", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["file"] == model_file, r.stderr
    r = run_cli("generate", "Hi", "-m", model_file, "--max-new-tokens", "2", "--", "-k=3")  # after --: text
    assert r.returncode == 2 and "Got unexpected extra argument (-k=3)" in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("args", "offered"),
    [
        (["generate", "Hi", "--control-vector", "x"], None),  # click offered --no-echo
        (["generate", "Hi", "--main-gpu", "0"], None),  # --min-p
        (["generate", "Hi", "--prompt-cache", "x"], None),  # --prompt-file
        (["next", "Hi", "--poll", "1"], None),  # --model
        (["--poll"], None),
        (["generate", "Hi", "--temprature", "1"], "--temperature"),  # a typo keeps its suggestion
        (["tokenize", "Hi", "--jsn"], "--json"),
        (["generate", "Hi", "--max-new", "3"], "--max-new-tokens"),  # the start of one, as argparse takes it
        (["--verison"], "--version"),
        (["generate", "Hi", "--max_new_token", "3"], "--max-new-tokens"),  # a snake_case typo, as its kebab-case
        (["generate", "Hi", "--temprature=1"], "--temperature"),
    ],
)
def test_an_unknown_option_is_offered_only_a_near_spelling(args, offered):
    """click offers difflib's close matches for an unknown option, so llama.cpp's options npgpt knows nothing of got an
    unrelated one of npgpt's as if it were their spelling: `--control-vector` "(Possible options: --no-echo)",
    `--main-gpu` "--min-p", `--prompt-cache` "--prompt-file". Only a typo (two edits) or the start of an option is
    offered now."""
    r = run_cli(*args)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    if offered is None:
        assert "Possible options" not in r.stderr, r.stderr
    else:
        assert f"(Possible options: {offered}" in r.stderr, r.stderr


def test_every_other_tools_option_gets_one_line_naming_only_the_commands_flags():
    """Every llama.cpp/Ollama/nanoGPT name npgpt knows, given to every command that lacks it, is answered with
    npgpt's flag or what to do instead, never with click's closest spellings (``--threads``: "--stream"), and
    the answer names only flags that command has."""
    import typer.main

    from npgpt.cli import app, names, parsing

    commands = _commands()
    wrong = []
    for name, command in typer.main.get_command(app).commands.items():
        own = commands[name] | {"--help"}
        for theirs in sorted({*names.OPTIONS, *names.INSTEAD}):
            try:
                command.make_context(name, [theirs, "1"])
            except parsing.NoSuchOption as e:
                message = e.format_message()
            except parsing.UsageError:
                continue  # the command has an option of that name (and wants its arguments)
            else:
                continue
            if not message.startswith(f"No such option: {theirs}") or "Possible options" in message:
                wrong.append(f"npgpt {name} {theirs}: {message}")
            ours = re.sub(rf"(?<![\w-]){re.escape(theirs)}(?![\w-])", "THEIRS", message)  # theirs is named as theirs
            wrong += [f"npgpt {name} {theirs}: {f} in {message!r}" for f in _misnamed(ours, own, commands)]
            assert "\n" not in message
    assert not wrong, "\n".join(wrong)


def test_other_tools_options_before_the_command_are_answered_as_after_it():
    """``npgpt --model x generate``, ``npgpt -v``: the root said click's "No such option: -v" or "(Possible options:
    --help)"; it says where the option goes, or what the command following would say of it, in one line naming
    only that command's flags."""
    import typer.main

    from npgpt.cli import app, names, parsing

    commands = _commands()
    group = typer.main.get_command(app)
    wrong = []
    for name in [*group.commands, None]:
        for theirs in sorted({*names.OPTIONS, *names.INSTEAD, *(o for c in commands.values() for o in c)}):
            args = [theirs, "1", *([name] if name else [])]
            try:
                group.make_context("npgpt", args)
            except parsing.NoSuchOption as e:
                message = e.format_message()
            except typer.Exit:  # Ollama's -v, taken as --version
                continue
            else:
                continue
            if not message.startswith(f"No such option: {theirs}") or "Possible options" in message:
                wrong.append(f"npgpt {' '.join(args)}: {message}")
            ours = re.sub(rf"(?<![\w-]){re.escape(theirs)}(?![\w-])", "THEIRS", message)
            own = {"--version", "--help", *(commands[name] if name else ())}
            wrong += [f"npgpt {' '.join(args)}: {f} in {message!r}" for f in _misnamed(ours, own, commands)]
            assert "\n" not in message
    assert not wrong, "\n".join(wrong)


def test_attention_out_of_range_names_its_flags():
    """npgpt attention --layer 9 said 'layer must be in [0, 3]': the Python keyword, not the flag typed."""
    for flag in ("--layer", "--head"):
        r = run_cli("attention", "In the beginning", flag, "99", "--model", "bundled")
        one_line_error(r, f"{flag} must be a whole number in [-4, 3] for this model (negative: counted", "got 99")


def test_attention_takes_a_layer_and_head_counted_from_the_end():
    """npgpt attention --layer -1 was refused, where TransformerLens and Python take -1 as the last; now it is the
    last block (named by its number, 3 of the bundled model's 4), and -5 is refused naming the range."""
    r = run_cli("attention", "In the beginning", "--layer", "-1", "--head", "-4", "--model", "bundled")
    assert r.returncode == 0, r.stderr
    assert "attention, block 3, head 0:" in r.stdout
    r = run_cli("attention", "In the beginning", "-l", "-5", "--model", "bundled")
    one_line_error(r, "--layer must be a whole number in [-4, 3]", "got -5")


def test_next_says_when_it_reads_only_the_last_n_ctx_tokens():
    """npgpt next quietly used the last n_ctx tokens of an overlong prompt, where generate refuses it: it says so."""
    long = "In the beginning God created the heaven and the earth. " * 40  # > 256 tokens, the bundled context
    r = run_cli("next", long, "-k", "2", "--model", "bundled")
    assert r.returncode == 0, r.stderr
    assert "more than the model's context of 256: the next token is predicted from its last 256" in r.stderr
    r = run_cli("next", "In the beginning", "-k", "2", "--model", "bundled")
    assert r.returncode == 0 and "context" not in r.stderr, r.stderr


def test_ctrl_c_while_streaming_ends_the_line(tmp_path):
    """Ctrl-C in the middle of --stream left the shell's prompt on the text's line: the line is ended, and the
    exit code is still 130."""
    script = (
        "import sys\n"
        "import npgpt.api\n"
        "def stream(self, *args, **kwargs):\n"
        "    yield 'And God'\n"
        "    raise KeyboardInterrupt\n"
        "npgpt.api.GPT2.stream = stream\n"
        "from npgpt.cli import main\n"
        "sys.argv = ['npgpt', 'generate', 'Hi', '--stream', '--model', 'bundled']\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 130 and r.stdout == "HiAnd God\n" and "Traceback" not in r.stderr, (r.stdout, r.stderr)


@pytest.mark.parametrize(
    "patch, argv, said",
    [
        ("npgpt.formats.convert", ["convert", "bundled", "out.safetensors"], "error: interrupted (Ctrl-C)"),
        (
            "npgpt.download.download_openai",
            ["download", "124M"],
            "error: download interrupted (Ctrl-C); run the same command again to resume it",
        ),
    ],
)
def test_ctrl_c_is_one_line_and_exit_130(tmp_path, patch, argv, said):
    """Ctrl-C during convert or download exited 130 with nothing said (a download's .part, kept to resume from,
    was never mentioned): one line says it, and how to resume a download."""
    module, _, name = patch.rpartition(".")
    script = (
        "import sys, importlib\n"
        "def stop(*args, **kwargs):\n"
        "    raise KeyboardInterrupt\n"
        f"setattr(importlib.import_module({module!r}), {name!r}, stop)\n"
        "from npgpt.cli import main\n"
        f"sys.argv = ['npgpt', *{argv!r}]\n"
        "main()\n"
    )
    env = {**os.environ, "NPGPT_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-c", script]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 130 and r.stderr.strip().splitlines() == [said], (r.returncode, r.stderr)


@pytest.mark.parametrize("args", [["-h"], ["generate", "-h"], ["chat", "-h"]])
def test_h_is_help(args):
    """llama.cpp, Ollama and nanoGPT's argparse scripts all take -h; npgpt said "No such option: -h"."""
    r = run_cli(*args)
    assert r.returncode == 0 and "Usage: npgpt" in r.stdout and r.stderr == "", r.stderr


@pytest.mark.parametrize("words", [["Hi", "word " * 3000], ["gpt2", "a page\nof text"], ["Hi", "two\nlines"]])
def test_extra_arguments_are_repeated_in_one_short_line(words):
    """A page pasted unquoted after a prompt was repeated twice in the error (60 kB on "one" line), a line break
    broke it in two; the error cuts and escapes the text and says to pipe it in."""
    r = run_cli("generate", *words)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and len(r.stderr) < 400, r.stderr
    assert "npgpt generate < FILE" in r.stderr


@pytest.mark.parametrize(
    "args, hint",
    [
        (["generate", "max_new_tokens=3"], "npgpt takes --max-new-tokens 3 (to continue that very text, pipe it in"),
        (["generate", "Hi", "num_samples=2"], "num_samples=2 is nanoGPT's way to set num_samples; npgpt takes -n 2"),
        (["generate", "init_from=gpt2"], "npgpt takes --model gpt2"),
        (["generate", "start=FILE:prompt.txt"], "npgpt takes --prompt-file prompt.txt"),
        (["chat", "temperature=0.8"], "npgpt takes --temperature 0.8"),
    ],
)
def test_nanogpts_key_value_arguments_name_npgpts_flags(args, hint):
    """nanoGPT sets its options as key=value: `npgpt generate max_new_tokens=3` continued the text
    "max_new_tokens=3" and exited 0; with a prompt before it, it was told to quote "Hi num_samples=2"."""
    r = run_cli(*args)
    assert r.returncode == 2 and hint in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_text_with_an_equals_sign_is_still_a_prompt(model_file):
    r = run_cli("generate", "x=1", "--model", model_file, "--max-new-tokens", "2", "--seed", "1")
    assert r.returncode == 0 and r.stdout.startswith("x=1"), r.stderr


def test_key_value_text_after_double_dash_is_the_prompt(model_file):
    """`--` ends the options, so what follows is text (as for a prompt that starts with '-'); nanoGPT's key=value
    refusal read past it, so `npgpt generate -- temperature=hot` was refused as a setting, not continued."""
    r = run_cli("generate", "--model", model_file, "--max-new-tokens", "2", "--seed", "1", "--", "temperature=hot")
    assert r.returncode == 0 and r.stdout.startswith("temperature=hot"), r.stderr


@pytest.mark.parametrize("words", ["npgpt -ngl 3 gen", "npgpt generate -ngl 3 --te"])
def test_tab_completion_after_another_tools_grouped_option_completes(words):
    """Completing a line holding llama.cpp's -ngl printed npgpt's "No such option: -ngl" error into the terminal at
    each Tab, and completed nothing: click's parsing for completion lets a bad option be, and so does npgpt's."""
    env = {"_NPGPT_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    r = run_cli(env=env)
    assert (r.returncode, r.stderr) == (0, "") and r.stdout.split()[0] in ("generate", "--temperature"), r


@pytest.mark.parametrize(
    "args, fix",
    [
        (["generate", "-5 degrees"], "npgpt generate -- '-5 degrees'"),
        (["generate", "--- title ---", "--seed", "1"], "npgpt generate -- '--- title ---'"),
        (["tokenize", "-1"], "npgpt tokenize -- -1"),
    ],
)
def test_text_that_starts_with_a_dash_is_told_to_follow_double_dash(args, fix):
    """A prompt that starts with '-' ('-5 degrees', a Markdown rule) was 'No such option: -5', naming no way to give
    it; the error says to put it after `--`, where every word is text."""
    r = run_cli(*args)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and fix in r.stderr, r.stderr


def test_info_json_names_the_default_bundled_model_as_model_takes_it(tmp_path):
    """npgpt info --json, with no GPT-2 downloaded, gave "model": "bundled (npgpt's own, trained on the King James
    Bible)": a description where a script reads a name; it is "bundled", as `npgpt info bundled --json` says (the
    table keeps the description)."""
    env = {"NPGPT_HOME": str(tmp_path)}
    r = run_cli("info", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == json.loads(run_cli("info", "bundled", "--json", env=env).stdout)["model"]
    assert json.loads(r.stdout)["model"] == "bundled"
    assert "King James" in run_cli("info", env=env).stdout


@pytest.mark.parametrize(
    "option, value, bounds",
    [
        ("--max-batch", "100000000", "from 1 to 1024"),  # accepted, then every request a 500: a 3.7 TiB kv cache
        ("--max-queue", "-1", "from 0 to 65536"),
        ("--max-rows", "10000000", "from 1 to 65536"),  # a limit that never binds: one request takes the server
        ("--max-request-tokens", "0", "from 1 to 16777216"),
        ("--max-request-logprobs", "99999999999", "from 1 to 33554432"),
        ("--max-unread-events", "1000000000", "from 1 to 16777216"),
        ("--shutdown-timeout", "inf", "from 0 to 3600"),  # a drain that never ends
    ],
)
def test_serve_refuses_a_setting_outside_its_range_naming_the_option_and_range(option, value, bounds):
    """Huge values of every serve limit were accepted; each has a range now (npgpt.server.settings.RANGES),
    refused in one line before anything is loaded."""
    line = one_line_error(run_cli("serve", "--port", "0", option, value, timeout=60), option, bounds)
    assert line.endswith("got infinity" if value == "inf" else f"got {value}"), line


def test_ollamas_run_has_its_own_help(model_file):
    """`npgpt run --help` (and -h, `npgpt help run`) said "No such command 'run'" though `npgpt run MODEL PROMPT` runs:
    run has its help, as Ollama's, wherever -h stands; run without a model says the model is missing. `help pull`
    said "No such command 'pull'" where `pull --help` is download's help: the same help."""
    for args in (["run", "--help"], ["run", "-h"], ["help", "run"], ["run", model_file, "Hi", "-h"]):
        r = run_cli(*args)
        assert r.returncode == 0 and "ollama run MODEL [PROMPT]" in r.stdout and "Example" in r.stdout, (args, r.stderr)
    for args in (["run"], ["run", "--seed", "1"]):
        r = run_cli(*args)
        assert (r.returncode, r.stderr) == (2, "error: Missing argument 'model' (see `npgpt run --help`)\n"), args
    assert run_cli("help", "pull").stdout == run_cli("download", "--help").stdout
    # options before the model, as Ollama's cobra reads them, and npgpt's own -m MODEL
    ours = run_cli("generate", "Hi there", "-m", model_file, "--seed", "1", "--max-new-tokens", "3")
    assert ours.returncode == 0, ours.stderr
    for args in (["--seed", "1", model_file, "Hi", "there"], ["-m", model_file, "Hi", "there", "--seed", "1"]):
        r = run_cli("run", *args, "--max-new-tokens", "3")
        assert (r.returncode, r.stdout) == (0, ours.stdout), (args, r.stderr)


def test_ollamas_run_with_the_prompt_where_the_model_goes_says_what_was_meant(model_file):
    """`npgpt run "Why is the sky blue?"` (no model: Ollama's habit with its default in mind) read the prompt as the
    model: "'Why is the sky blue?' is not a file or a known model". It now says run takes a model first, and the
    command for the default model; `npgpt run PROMPT MODEL` says the model goes first."""
    r = run_cli("run", "Why is the sky blue?")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "npgpt run MODEL 'Why is the sky blue?'" in r.stderr, r.stderr
    assert "with the default model: npgpt generate 'Why is the sky blue?'" in r.stderr, r.stderr
    for args in (["Why is the sky blue?", model_file], ["Why", "is", "it", "--seed", "1", model_file]):
        r = run_cli("run", *args)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
        assert "the model goes first, then the prompt: npgpt run" in r.stderr, r.stderr
    ours = run_cli("run", model_file, "Why is the sky blue?", "--seed", "1", "--max-new-tokens", "2")  # still runs
    assert ours.returncode == 0 and ours.stdout.startswith("Why is the sky blue?"), ours.stderr
    r = run_cli("run", "nosuchmodel", "Hi")  # a mistyped name: the list of models, as before
    assert r.returncode == 1 and "'nosuchmodel' is not a file or a known model; available" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("generate", "Hi", "-m", "{L}"),
        ("info", "{L}"),
        ("rm", "{L}"),
        ("chat", "{L}"),
        ("run", "{L}"),
        ("run", "x y{L}"),
        ("generate", "Hi", "-m", "a/{L}"),
        ("download", "{L}"),
        ("serve", "-m", "x={L}", "--port", "0"),
        ("convert", "bundled", "{L}"),
        ("train", "x", "--out", "{L}"),
        ("eval", "~{L}"),
    ],
    ids=lambda a: " ".join(a).replace("{L}", "LONG"),
)
def test_a_name_too_long_for_a_file_is_one_line(args):
    """A model name or path past the system's limit on a file name (255 bytes), as a prompt given where the model
    goes is, made `Path.exists` raise: "internal error: File name too long: wordword..." with the whole text. It is
    no file: one line, the name cut."""
    long = "word" * 300
    r = run_cli(*(a.replace("{L}", long) for a in args))
    lines = r.stderr.splitlines()
    assert r.returncode in (1, 2) and len(lines) == 1 and "internal error" not in r.stderr, r.stderr
    assert len(lines[0]) < 600, r.stderr


def test_ollamas_run_puts_text_piped_in_before_the_prompt(model_file):
    """`cat notes.txt | npgpt run MODEL "Summarize:"` continued "Summarize:" alone, the piped text dropped without a
    word; Ollama's run puts text piped in before the prompt's words, one prompt. So does npgpt's now (the text, less
    echo's newline, then a line of the words); nothing piped (a terminal, /dev/null) leaves the words alone."""
    args = ("--seed", "1", "--max-new-tokens", "3")
    ours = run_cli("generate", "In the beginning\nContinue:", "-m", model_file, *args)
    assert ours.returncode == 0, ours.stderr
    r = run_cli("run", model_file, "Continue:", *args, input="In the beginning\n")
    assert (r.returncode, r.stdout) == (0, ours.stdout), r.stderr
    alone = run_cli("run", model_file, "Continue:", *args)  # standard input empty
    assert (alone.returncode, alone.stdout) == (0, run_cli("generate", "Continue:", "-m", model_file, *args).stdout)


def test_ollamas_run_takes_a_prompt_after_double_dash_as_text():
    """`npgpt run MODEL -- -5 degrees` (a prompt that starts with '-', after -- as every npgpt command takes it) ran
    chat with '-5 degrees' as an extra argument; the words after -- are the prompt, as generate's."""
    import typer

    from npgpt.cli.commands import app
    from npgpt.cli.names import _ollama_args

    commands = typer.main.get_command(app).commands  # whether -n takes a value is generate's say
    assert _ollama_args(commands, ["run", "m", "--", "-5", "degrees"]) == ["generate", "-m", "m", "--", "-5 degrees"]
    assert _ollama_args(commands, ["run", "m", "Hi", "-n", "2", "--", "-x"]) == [
        "generate",
        "-m",
        "m",
        "-n",
        "2",
        "--",
        "Hi -x",
    ]
    assert _ollama_args(commands, ["run", "m", "Hi", "there"]) == ["generate", "-m", "m", "--", "Hi there"]
    assert _ollama_args(commands, ["run", "m", "--seed", "1"]) == ["chat", "-m", "m", "--seed", "1"]


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_list_with_the_cache_a_file_says_so(tmp_path, json_flag):
    """`NPGPT_HOME=/etc/passwd npgpt list` said "no models downloaded in /etc/passwd" (exit 0), as if the
    cache were an empty folder: it now says the cache is a file, in one line, exit 1."""
    home = tmp_path / "home"
    home.write_text("not a folder\n")
    r = run_cli("list", *json_flag, env={"NPGPT_HOME": str(home)})
    assert r.returncode == 1 and r.stdout == ""
    assert one_line_error(r, str(home), "is a file, not a folder", "NPGPT_HOME")


@pytest.mark.parametrize(
    "args", [["rm", "124M"], ["generate", "hi", "--model", "124M"], ["info", "openai-community/gpt2"]]
)
def test_a_model_looked_up_in_a_cache_that_is_a_file_says_so(tmp_path, args):
    """With NPGPT_HOME set to a file, `npgpt list` said so, but `npgpt rm 124M` said "'124M' is not in the cache;
    downloaded models: none" and `--model 124M` "not downloaded; run npgpt download 124M", which then failed for
    the file: every lookup in the cache now names the file, in one line."""
    home = tmp_path / "home"
    home.write_text("not a folder\n")
    r = run_cli(*args, env={"NPGPT_HOME": str(home)})
    assert r.returncode == 1
    assert one_line_error(r, str(home), "is a file, not a folder; set NPGPT_HOME to a folder")
    assert "downloaded models: none" not in r.stderr and "npgpt download" not in r.stderr


def _number_options():
    """(command, option, type) for every int and float option of every command."""
    import typer

    from npgpt.cli.commands import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for p in command.params:
            kind = getattr(getattr(p, "type_descriptor", None), "annotation", None)
            if p.param_type_name == "option" and kind in (int, float, int | None, float | None):
                yield group, name, p.opts[0], int if kind in (int, int | None) else float


def test_a_bad_number_names_the_value_and_the_option():
    """typer said "Invalid value for '--top-k': Input should be a valid integer, unable to parse string as an integer",
    never repeating what was typed (click's own said "'abc' is not a valid integer"): every number option of every
    command names the value, and how to write a number written otherwise (1e3, a decimal comma)."""
    from npgpt.cli.parsing import UsageError

    options = list(_number_options())
    assert len(options) > 50  # every command's, not a few
    for group, name, option, kind in options:
        cases = [("abc", f"'abc' is not {'an integer' if kind is int else 'a number'}")]
        cases += [("1e3", "'1e3' is not an integer; write it as 1000")] if kind is int else []
        cases += [("0,8", "'0,8' is not a number; write decimals with a point: 0.8")] if kind is float else []
        number = "an integer" if kind is int else "a number"  # `--top-k "$K"`, K unset: '' named as -m's '' is
        cases += [("", f"the value is empty (an unset shell variable?); give {number}")]
        for value, said in cases:
            with pytest.raises(UsageError) as e:
                group.main([name, option, value], standalone_mode=False)
            message = e.value.format_message()  # "Invalid value for '--layer' / '-l': ..."
            assert message.startswith(f"Invalid value for '{option}'") and message.endswith(f": {said}"), message
    r = run_cli("generate", "Hi", "--temp", "hot")  # llama.cpp's spelling: named as typed
    assert r.returncode == 2 and r.stderr == (
        "error: Invalid value for '--temp': 'hot' is not a number (see `npgpt generate --help`)\n"
    ), r.stderr


@pytest.mark.parametrize(
    "args, said",
    [
        (["generate", "Hi", "--n-predict", "abc"], "Invalid value for '--n-predict': 'abc' is not an integer"),
        (["generate", "Hi", "--n-predict=abc"], "Invalid value for '--n-predict': 'abc' is not an integer"),
        (["generate", "Hi", "--num_samples=x"], "Invalid value for '--num_samples': 'x' is not an integer"),
        (["generate", "Hi", "--top_k=x"], "Invalid value for '--top_k': 'x' is not an integer"),
        (["generate", "Hi", "--model-path", ""], "Invalid value for '--model-path': the model is empty"),
        (["chat", "-n", "x"], "Invalid value for '-n': 'x' is not an integer"),
        (["bench", "-p", "x"], "Invalid value for '-p': 'x' is not an integer"),
        (["train", "t.txt", "--learning_rate=abc"], "Invalid value for '--learning_rate': 'abc' is not a number"),
        (["generate", "Hi", "--n-predict"], "Option '--n-predict' requires an argument"),
        (["chat", "-r"], "Option '-r' requires an argument"),
        (["generate", "Hi", "--max-new-tokens", "x"], "Invalid value for '--max-new-tokens': 'x' is not an integer"),
    ],
)
def test_a_bad_value_of_another_tools_spelling_is_named_as_typed(args, said):
    """`npgpt generate Hi --n-predict abc` said "Invalid value for '--max-new-tokens'", an option not on the command
    line: another tool's spelling taken as npgpt's option is named as the user typed it, in a bad value's error and
    in "requires an argument"."""
    import typer

    from npgpt.cli.commands import app
    from npgpt.cli.parsing import UsageError

    with pytest.raises(UsageError) as e:
        typer.main.get_command(app).main(args, standalone_mode=False)
    assert e.value.format_message().startswith(said), e.value.format_message()


@pytest.mark.parametrize(
    "args, said",
    [
        (["generate", "Hi", "--temp", "-1"], "--temp must be a finite number >= 0"),
        (["generate", "Hi", "--n-predict", "0"], "--n-predict must be >= 1, or -1"),
        (["generate", "Hi", "--top_k=-5"], "--top_k must be an integer >= 0"),
        (["generate", "Hi", "--repeat-penalty", "-1"], "--repeat-penalty must be a finite number > 0"),
        (["chat", "--n-predict", "-3"], "--n-predict must be >= 1, or -1"),
        (["generate", "Hi", "--temperature", "-1"], "--temperature must be a finite number >= 0"),
        (["generate", "Hi", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1, or -1"),
    ],
)
def test_a_value_out_of_range_under_another_tools_spelling_is_named_as_typed(args, said):
    """README: 'An error about the value of one names it as typed (--n-predict)'. A value that parses but is out of
    range named npgpt's option, not on the command line: `npgpt generate Hi --temp -1` said "--temperature must be a
    finite number >= 0", --n-predict 0 "--max-new-tokens must be >= 1". It now names the spelling typed, as a value
    that does not parse already did; npgpt's own spellings are named as they are."""
    import typer

    from npgpt.cli.commands import app
    from npgpt.cli.flags import as_flags

    with pytest.raises(NpgptError) as e:
        typer.main.get_command(app).main(args, standalone_mode=False)
    assert as_flags(e.value).startswith(said), as_flags(e.value)


def test_llama_cpps_n_predict_minus_one_runs_until_the_context_is_full(model_file, tmp_path):
    """llama.cpp's ``--n-predict -1`` (its default: until end of text; -2: until the context is full) was refused
    ("--max-new-tokens must be an integer >= 1, got -1"). npgpt shifts no context, so -1 and -2 both generate until
    end of text or the context is full, each prompt of a batch to its own room; chat's replies too."""
    from npgpt.tokenizer import Tokenizer

    n_ctx = CONFIGS["tiny"].n_ctx
    tok = Tokenizer()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("In the beginning\nAnd God said unto Moses, go down\n")
    base = ["-m", model_file, "--seed", "5", "--json"]
    r = run_cli("generate", "--batch-file", str(prompts), "--n-predict", "-1", "-n", "2", *base)
    assert r.returncode == 0, r.stderr
    choices = json.loads(r.stdout)["choices"]
    assert len(choices) == 4
    for c in choices:
        room = n_ctx - len(tok.encode(c["prompt"]))
        assert c["completion_tokens"] == room or c["finish_reason"] == "stop", (c, room)
    # the same as asking for that room by number, for -1 and for -2
    first = "In the beginning"
    room = run_cli("generate", first, *base, "--max-new-tokens", str(n_ctx - len(tok.encode(first))))
    for value in ("-1", "-2"):
        r = run_cli("generate", first, *base, "--max-new-tokens", value)
        assert r.returncode == 0 and json.loads(r.stdout)["choices"] == json.loads(room.stdout)["choices"], r.stderr
    r = run_cli("chat", "-m", model_file, "-n", "-1", "--seed", "1", input="Hi\n")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    line = one_line_error(run_cli("generate", "Hi", "-m", model_file, "--max-new-tokens", "-3"), "got -3")
    assert "or -1 to generate until end of text or the context is full" in line, line
    one_line_error(run_cli("generate", "Hi", "-m", model_file, "-n", "-1"), "use --max-new-tokens -1")


def test_ollamas_run_joins_the_words_on_both_sides_of_an_option(model_file):
    """`npgpt run MODEL hi --seed 1 more words` took only the words before the first option as the prompt and refused
    "more words" as extra arguments; Ollama joins every word that is not an option or its value, wherever it stands.
    Whether an option takes a value is generate's say (--stream takes none, --temp one), so a value is never text."""
    import typer

    from npgpt.cli.commands import app
    from npgpt.cli.names import _ollama_args

    commands = typer.main.get_command(app).commands
    for theirs, ours in [
        (["hi", "--seed", "1", "more", "words"], ["--seed", "1", "--", "hi more words"]),
        (["hi", "--temp", "0.5", "there", "--stream", "you"], ["--temp", "0.5", "--stream", "--", "hi there you"]),
        (["--seed", "-1", "why", "is"], ["--seed", "-1", "--", "why is"]),
        (["a", "--top-k=3", "b", "--", "-c"], ["--top-k=3", "--", "a b -c"]),
    ]:
        assert _ollama_args(commands, ["run", "m", *theirs]) == ["generate", "-m", "m", *ours], theirs
    assert _ollama_args(commands, ["run", "m", "--seed", "1"]) == ["chat", "-m", "m", "--seed", "1"]
    same = ["--seed", "1", "--max-new-tokens", "3"]
    a = run_cli("run", model_file, "Why", "is", "--seed", "1", "the", "sky", "--max-new-tokens", "3", "blue?")
    b = run_cli("generate", "Why is the sky blue?", "-m", model_file, *same)
    assert a.returncode == 0 and (a.stdout, a.stderr) == (b.stdout, b.stderr), a.stderr


@pytest.mark.parametrize(
    "option, said",
    [
        ("-fa", "No such option: -fa"),  # was -f a: "give one of PROMPT, --prompt-file FILE or --batch-file FILE ..."
        ("-no-cnv", "No such option: -no-cnv"),  # was -n o-cnv: "'o-cnv' is not an integer"
        ("-ctk", "No such option: -ctk"),  # was -c tk: "the context length is the model's own"
        ("-st", "No such option: -st"),  # was -s t: "npgpt takes --seed"
    ],
)
def test_llama_cpps_other_several_letter_options_are_named_as_typed(model_file, option, said):
    """click reads a single-dash option of several letters as short options with a value attached, so llama.cpp's
    -fa, -no-cnv, -ctk and -st were answered about -f, -n, -c and -s; each is one option, named as typed. A value
    attached in click's way still works (-n2), and such a word as an option's value is the value (--stop -fa)."""
    r = run_cli("generate", "Hi", "-m", model_file, option, "--max-new-tokens", "2")
    assert r.stderr.startswith((f"error: {said} (see", f"error: {said}; ")), r.stderr  # a hint, where npgpt has one
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    r = run_cli("generate", "Hi", "-m", model_file, "-n2", "--stop", option, "--max-new-tokens", "2")
    assert r.returncode == 0 and completions(r.stdout) == 2, r.stderr


@pytest.mark.parametrize(
    "args, line",
    [
        # "unknown backend 'foo'", "unknown format 'foo'", "expected a comma-separated list, got '1,x'": no option
        (["generate", "Hi", "--backend", "foo"], "--backend foo is unknown; choose one of numpy, jax, torch"),
        (["chat", "--backend", "foo"], "--backend foo is unknown; choose one of numpy, jax, torch"),
        (["bench", "--backend", "foo"], "--backend foo is unknown; choose from numpy, jax, torch"),
        (["convert", "bundled", "x.safetensors", "--to", "foo"], "--to foo is unknown; choose one of npgpt, hf"),
        (["bench", "--batch", "1,x"], "--batch takes a comma-separated list; 'x' in '1,x' is not an integer"),
    ],
)
def test_a_bad_choice_names_the_option_and_the_value(tmp_path, args, line):
    """A value that is none of an option's choices named the value but not the option it was given to."""
    r = subprocess.run(
        [sys.executable, "-m", "npgpt", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=None
    )
    assert one_line_error(r).startswith(f"error: {line}"), r.stderr


@pytest.mark.parametrize("theirs", [["hi", "--seed"], ["hi", "there", "--temp"], ["hi", "--seed", "--", "more"]])
def test_ollamas_run_with_an_option_missing_its_value_says_so(model_file, theirs):
    """`npgpt run MODEL hi --seed` (the value forgotten) said "Invalid value for '--seed': '--' is not an integer": the
    `--` run puts before the prompt was read as --seed's value. It is click's own "requires an argument", as
    `npgpt generate hi --seed` says."""
    r = run_cli("run", model_file, *theirs)
    assert r.returncode == 2 and "requires an argument" in r.stderr, r.stderr  # --temp is named --temperature
    assert "'--'" not in r.stderr, r.stderr


def test_ollamas_run_keeps_nanogpts_init_from_value_out_of_the_prompt():
    """`npgpt run MODEL hi --init_from gpt2 there` joined 'gpt2' into the prompt ('hi gpt2 there'): run's word
    joining asks whether an option takes a value, and --init_from, read by its value (--model NAME), was told it
    takes none; --init_from then took the `--` before the prompt, and click answered "unexpected extra argument"."""
    import typer

    from npgpt.cli.commands import app
    from npgpt.cli.names import _ollama_args

    commands = typer.main.get_command(app).commands
    args = _ollama_args(commands, ["run", "m", "hi", "--init_from", "gpt2", "there"])
    assert args == ["generate", "-m", "m", "--init_from", "gpt2", "--", "hi there"], args


def test_serves_model_argument_is_named_model_in_its_usage_and_errors():
    """The models npgpt serve takes as arguments (5d58a36) were shown as "[[MODEL]...]..." in the usage line, and an
    empty one was "Invalid value for '[MODEL]...'": the argument's metavar carried the brackets and dots that typer
    adds around it. It is "model", as every other command's model argument is named (npgpt info [model])."""
    usage = next(line for line in run_cli("serve", "--help").stdout.splitlines() if "Usage:" in line)
    assert "serve [OPTIONS] [model]..." in usage and "[[" not in usage, usage
    r = run_cli("serve", "")
    assert r.returncode == 2 and "Invalid value for 'model': the model is empty" in r.stderr, r.stderr


def test_ignore_eos_goes_on_past_the_end_token(tmp_path):
    """llama.cpp's `--ignore-eos` (the server's ignore_eos) got only a hint to use the Python API or the server: it
    is generate's and chat's option, as in llama-cli; without it, <|endoftext|> ends the text."""
    from npgpt.params import flatten, unflatten

    config = CONFIGS["tiny"]
    flat = flatten(random_params(config))
    flat["wte"][50256] *= 10  # with ln_f's gain 0 and its bias this row, <|endoftext|> is every step's likeliest
    flat["ln_f.g"][:] = 0
    flat["ln_f.b"][:] = flat["wte"][50256]
    path = tmp_path / "eot.safetensors"
    npgpt_format.save(path, config, unflatten(flat, config))
    base = ["generate", "Hi", "-m", str(path), "--temperature", "0", "--max-new-tokens", "5", "--json"]
    r = run_cli(*base)
    assert r.returncode == 0, r.stderr
    choice = json.loads(r.stdout)["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["completion_tokens"] <= 1, choice
    r = run_cli(*base, "--ignore-eos")
    assert r.returncode == 0, r.stderr
    choice = json.loads(r.stdout)["choices"][0]
    assert choice["finish_reason"] == "length" and choice["completion_tokens"] == 5, choice
    r = run_cli("chat", "-m", str(path), "--temperature", "0", "--max-new-tokens", "3", "--ignore-eos", input="Hi\n")
    assert r.returncode == 0, r.stderr
    r = run_cli("serve", "--ignore-eos")  # npgpt serve's is each request's own
    assert r.returncode == 2 and "a client sets ignore_eos in each request" in r.stderr, r.stderr


def test_llama_cpps_escape_reads_the_prompts_escapes(model_file, tmp_path):
    """llama.cpp's `-e`/`--escape` (llama-cli reads \\n in -p as a line break) was 'No such option: -e': npgpt
    generate takes it, reading the prompt's escapes as --stop's are; without it the prompt is as typed."""
    base = ["generate", "-p", r"Q: a\tb\nA:", "-m", model_file, "--max-new-tokens", "1", "--json"]
    r = run_cli(*base, "-e")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["choices"][0]["prompt"] == "Q: a\tb\nA:"
    r = run_cli(*base)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["choices"][0]["prompt"] == r"Q: a\tb\nA:"
    batch = tmp_path / "prompts.txt"
    batch.write_text("one\\ntwo\nthree\n")
    r = run_cli("generate", "--batch-file", str(batch), "--escape", *base[3:])
    assert [c["prompt"] for c in json.loads(r.stdout)["choices"]] == ["one\ntwo", "three"], r.stderr
    r = run_cli("generate", "Hi", "--no-escape")
    assert r.returncode == 2 and "npgpt reads the prompt as typed unless --escape is given" in r.stderr, r.stderr


def test_llama_cpps_logit_bias_bans_and_favours_tokens(tmp_path):
    """llama.cpp's `-l/--logit-bias TOKEN_ID(+|-)BIAS` ('-l 50256-inf' bans <|endoftext|>) was 'No such option', though
    the library and the server take logit_bias: generate and chat take it, -inf as the API's -100 (a ban); a value
    written otherwise, a bias past 100, a token twice or one past the vocabulary is one line naming --logit-bias."""
    from npgpt.params import flatten, unflatten

    config = CONFIGS["tiny"]
    flat = flatten(random_params(config))
    flat["wte"][50256] *= 10  # as in test_ignore_eos_goes_on_past_the_end_token: <|endoftext|> is always likeliest
    flat["ln_f.g"][:] = 0
    flat["ln_f.b"][:] = flat["wte"][50256]
    path = tmp_path / "eot.safetensors"
    npgpt_format.save(path, config, unflatten(flat, config))
    base = ["generate", "Hi", "-m", str(path), "--temperature", "0", "--max-new-tokens", "4", "--json"]
    for ban in (["-l", "50256-inf"], ["--logit-bias", "50256-100"], ["--logit-bias=50256 - 100"]):
        r = run_cli(*base, *ban)
        assert r.returncode == 0, r.stderr
        choice = json.loads(r.stdout)["choices"][0]
        assert choice["finish_reason"] == "length" and choice["completion_tokens"] == 4, (ban, choice)
    r = run_cli(*base, "-l", "50256+0")
    assert json.loads(r.stdout)["choices"][0]["finish_reason"] == "stop", r.stderr
    r = run_cli("chat", "-m", str(path), "--temperature", "0", "-l", "50256-inf", "-l", "13+1.5", input="Hi\n")
    assert r.returncode == 0, r.stderr
    for value, said in [
        ("abc", "--logit-bias 'abc' is not TOKEN_ID+BIAS or TOKEN_ID-BIAS; write it as llama.cpp does"),
        ("-5+1", "--logit-bias '-5+1' is not TOKEN_ID+BIAS or TOKEN_ID-BIAS"),
        ("5+200", "--logit-bias 5+200: a bias is in [-100, 100] (-100 or -inf bans the token)"),
        ("99999-inf", "--logit-bias names token id 99999, outside the vocabulary [0, 50257)"),
    ]:
        one_line_error(run_cli(*base, f"--logit-bias={value}"), said)
    one_line_error(run_cli(*base, "-l", "5+1", "-l", "5-1"), "--logit-bias gives token 5 a bias twice")


def test_eval_batches_reaches_the_run_settings(tmp_path):
    """nanoGPT's eval_iters (batches per held-out loss) had no npgpt train option, though TrainSettings has
    eval_batches: --eval-batches (and --eval_iters, and eval_batches in --config) is checked with the run's settings."""
    text = tmp_path / "d.txt"
    text.write_text("hello world " * 20)
    for given, named in ((["--eval-batches", "0"], "--eval-batches"), (["--eval_iters=0"], "--eval_iters")):
        r = run_cli("train", str(text), "--out", str(tmp_path / "run"), *given)
        one_line_error(r, f"{named} must be at least 1, got 0")  # named as typed (README)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--max_length=20"], "--max_length; transformers' max_length counts the prompt too; npgpt's --max-new-tokens"),
        (["--max-length", "20"], "--max-length; transformers' max_length counts the prompt too"),
        (["--do_sample=True"], "--do_sample; npgpt samples unless --temperature 0"),
        (["--num_beams=4"], "--num_beams; npgpt has no beam search"),
        (["--min_new_tokens=5"], "--min_new_tokens; npgpt has no minimum length; --ignore-eos"),
        (["--typical_p=0.9"], "--typical_p; npgpt's samplers are --temperature"),
        (["--no_repeat_ngram_size=3"], "--no_repeat_ngram_size; npgpt's samplers are --temperature"),
        (["--num_ctx=2048"], "--num_ctx; the context length is the model's own"),
    ],
)
def test_transformers_and_ollamas_generation_settings_are_answered_npgpts_way(args, said):
    """transformers' generate keywords and Ollama's parameters, typed as options (`--max_length=20`, `--do_sample`,
    `--num_ctx 2048`), said only "No such option: --max_length", with no way forward; each now says npgpt's."""
    r = run_cli("generate", "Hi", "-m", "bundled", *args)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert f"error: No such option: {said}" in r.stderr, r.stderr


def test_transformers_and_ollamas_names_of_generates_options_are_taken():
    """transformers' num_return_sequences is npgpt's -n and Ollama's num_predict its --max-new-tokens: both were
    unknown options."""
    r = run_cli("generate", "Hi", "-m", "bundled", "--num_return_sequences=2", "--num_predict", "3", "--json")
    assert r.returncode == 0, r.stderr
    choices = json.loads(r.stdout)["choices"]
    assert len(choices) == 2 and all(c["completion_tokens"] == 3 for c in choices), choices


@pytest.mark.parametrize("spelt", ["--num_samples", "--num_return_sequences"])
def test_completions_out_of_range_are_named_as_typed(spelt):
    """nanoGPT's `--num_samples=0` (transformers' `--num_return_sequences=500`) said "-n is completions per prompt ...;
    for a number of new tokens (llama.cpp's -n), use --max-new-tokens": an option not typed, and llama.cpp's reading
    of it. The error names the option as typed, without llama.cpp's -n; `-n 500` keeps its hint."""
    for value in ("0", "500"):
        r = run_cli("generate", "Hi", "-m", "bundled", f"{spelt}={value}")
        line = one_line_error(r, f"error: {spelt} is completions per prompt, from 1 to 128", f"got {value}")
        assert "-n" not in line.replace(spelt, ""), line
    r = run_cli("generate", "Hi", "-m", "bundled", "-n", "500")
    one_line_error(r, "error: -n is completions per prompt", "(llama.cpp's -n), use --max-new-tokens 500")


@pytest.mark.parametrize("command", ["detokenize", "decode"])
def test_ids_back_to_text_is_not_offered_tokenize(command):
    """`npgpt detokenize 15496 995` (llama-server's and vLLM's /detokenize, transformers' decode) said "Did you mean
    'tokenize'?", which splits the ids' digits as text; it now says how to turn ids back to text, and that way runs."""
    r = run_cli(command, "15496", "995")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert f"No such command '{command}'. npgpt has no command for token ids back to text" in r.stderr, r.stderr
    assert "Did you mean" not in r.stderr, r.stderr
    code = re.search(r"python -c '([^']*)'", r.stderr)
    assert code is not None, r.stderr
    out = subprocess.run([sys.executable, "-c", code.group(1)], capture_output=True, text=True, check=True).stdout
    assert out == "Hello world\n", out
