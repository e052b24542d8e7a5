"""``npgpt train`` as people run it: in a log file, stopped by Ctrl-C and resumed, from a TOML
config, and a character-level model that then generates with no tokenizer flag.

Models are tiny (one or two layers, width 16-32, a character vocabulary).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

from conftest import run_cli

import npgpt
from npgpt.char_tokenizer import CharTokenizer
from npgpt.errors import NpgptError
from npgpt.formats import npgpt_format
from npgpt.params import flatten
from npgpt.train.checkpoint import STATE_FILE, load_state, model_step
from npgpt.train.loop import train
from npgpt.train.settings import TrainSettings

ROOT = Path(__file__).resolve().parents[1]
KJV = (ROOT / "tests" / "fixtures" / "kjv_heldout.txt").read_text(encoding="utf-8")
SHAPE = dict(n_layer=1, n_embd=16, n_head=2, n_ctx=16, seq_len=8, batch_size=2, tokenizer="char")


def cli_args(settings: dict) -> list[str]:
    return [a for k, v in settings.items() for a in (f"--{k.replace('_', '-')}", str(v))]


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "kjv.txt"
    path.write_text(KJV[:6000], encoding="utf-8")
    return path


def test_sigint_checkpoints_and_resume_reaches_the_uninterrupted_weights(text, tmp_path):
    """A real SIGINT to ``npgpt train`` with stdout in a pipe (as under nohup): plain interval lines,
    exit 130 after checkpointing the step reached; ``--resume`` ends on the uninterrupted weights."""
    run = {**SHAPE, "steps": 800, "eval_interval": 200}
    out = tmp_path / "run"
    exe = Path(sys.executable).parent / "npgpt"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "npgpt.cli"]
    proc = subprocess.Popen(
        [*cmd, "train", str(text), "--out", str(out), *cli_args(run), "--log-interval", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("step 3/"):
                proc.send_signal(signal.SIGINT)
                break
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += rest.splitlines(keepends=True)
    assert proc.returncode == 130, (proc.returncode, err)
    assert lines[0].startswith("step 1/800: loss ") and ", lr " in lines[0] and "tokens/s" in lines[0], lines[0]
    assert len(err.strip().splitlines()) == 1 and "SIGINT" in err and "--resume" in err, err
    stopped_at = load_state(out / STATE_FILE)[3]["step"]
    assert 3 <= stopped_at < 800 and model_step(out) == stopped_at
    assert lines[-1].startswith(f"step {stopped_at}/800") and "checkpoint saved" in lines[-1]

    resumed = run_cli("train", str(text), "--out", str(out), "--resume", "--log-interval", "100", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    logged = [ln for ln in resumed.stdout.splitlines() if ln.startswith("step ") and "/800" in ln]
    assert any(ln.startswith("step 400/800") and "held-out loss" in ln for ln in logged), resumed.stdout
    assert any(ln.startswith("step 500/800") for ln in logged), resumed.stdout

    reference = train(text, tmp_path / "reference", TrainSettings(**run))
    got = npgpt_format.load(out / npgpt_format.MODEL_FILE)[1]
    for name, value in flatten(reference.params).items():
        np.testing.assert_array_equal(flatten(got)[name], value, err_msg=name)


def invoke(args: list[str]):
    import typer
    from typer.testing import CliRunner

    from npgpt.cli.train import train_command

    app = typer.Typer()
    app.command("train")(train_command)
    app.command("other")(lambda: None)  # two commands, so "train" is a subcommand as in npgpt's CLI
    return CliRunner().invoke(app, ["train", *args])


def test_config_file_with_command_line_overrides(text, tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "run.toml"
    config.write_text(
        f'data = "{text}"\nout = "{out}"\nn_layer = 1\nn-embd = 16\nn_head = 2\nn_ctx = 16\n'
        'seq_len = 8\nbatch_size = 2\nsteps = 5\nlr = 1e-3\ntokenizer = "char"\nlog-interval = 1\n'
    )
    result = invoke(["--config", str(config), "--steps", "3"])  # the command line wins
    assert result.exit_code == 0, result.output
    meta = load_state(out / STATE_FILE)[3]
    assert meta["step"] == 3 and meta["settings"]["lr"] == 1e-3 and meta["settings"]["tokenizer"] == "char"
    assert "step 1/3: loss" in result.output and "step 3/3: loss" in result.output

    for line, message in [
        ("n_layers = 2", "unknown key 'n_layers'"),
        ('steps = "many"', "wrong type for --steps"),
        ("lr = [1]", "wrong type for --lr"),
        ("lr = nan", "lr must be a finite number"),
        ("config = 'x.toml'", "unknown key 'config'"),
        ("steps = ", "not valid TOML"),
        ("n-layer = 2\nn_layer = 3\nsteps = 0", "'n-layer' and 'n_layer' are the same option; keep one of them"),
        # nanoGPT's names, as the command line takes them (--max_iters is --steps) or names npgpt's (--block_size)
        ("max_iters = 0", "steps must be at least 1, got 0"),
        ("learning_rate = -1.0", "lr must be a finite number more than 0, got -1.0"),
        ("gradient_accumulation_steps = 0", "grad_accum must be at least 1, got 0"),
        ("block_size = 64", "unknown key 'block_size'; npgpt train's is seq_len"),
        ("out_dir = 'x'", "unknown key 'out_dir'; npgpt train's is out"),
    ]:
        config.write_text(f'data = "{text}"\nout = "{tmp_path / "other"}"\n{line}\n')
        result = invoke(["--config", str(config)])
        assert isinstance(result.exception, NpgptError), (line, result.output)
        assert message in str(result.exception) and "\n" not in str(result.exception), (line, result.exception)


def test_config_paths_starting_with_a_tilde_are_in_the_home_folder(text, tmp_path, monkeypatch):
    """out = "~/runs/x" in --config made a folder named "~" in the current one (no shell expands a TOML file's ~;
    removing it with rm -rf ~ removes the home folder), and data = "~/corpus.txt" was "no such file". Both are read
    as in the home folder, as transformers reads its output_dir."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "corpus.txt").write_text(text.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    config = work / "run.toml"
    config.write_text(
        'data = "~/corpus.txt"\nout = "~/runs/x"\n'
        + "".join(f"{k} = {v!r}\n" if isinstance(v, str) else f"{k} = {v}\n" for k, v in SHAPE.items())
        + "steps = 1\n"
    )
    result = invoke(["--config", str(config)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert (home / "runs" / "x" / "model.safetensors").is_file() and not (work / "~").exists()


def test_character_level_model_generates_with_no_tokenizer_flag(text, tmp_path):
    out = tmp_path / "run"
    settings = TrainSettings(
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_ctx=32,
        seq_len=32,
        batch_size=8,
        steps=200,
        lr=3e-3,
        warmup=20,
        eval_interval=200,
        tokenizer="char",
    )
    result = train(text, out, settings)
    chars = sorted(set(text.read_text(encoding="utf-8")))
    assert result.config.n_vocab == len(chars) + 1 and result.config.n_params < 60_000
    assert result.history["loss"][-1] < result.history["loss"][0] - 1.0  # it learned the characters

    model = npgpt.load(out)
    assert isinstance(model.tokenizer, CharTokenizer) and model.tokenizer.chars == "".join(chars)
    r = run_cli("generate", "--model", str(out), "And the", "--max-new-tokens", "24", "--seed", "0")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip()) > len("And the") and set(r.stdout) <= set(chars), r.stdout
    bad = run_cli("generate", "--model", str(out), "And €", "--max-new-tokens", "4")
    assert bad.returncode == 1 and "not in this character-level model's vocabulary" in bad.stderr, bad.stderr

    tuned = train(text, tmp_path / "tuned", TrainSettings(init=out, steps=2, seq_len=32, batch_size=2))
    assert tuned.config == result.config  # fine-tuning a character model keeps its characters
    assert npgpt.load(tmp_path / "tuned").tokenizer.chars == "".join(chars)


def test_training_without_matplotlib_is_refused_before_it_starts(text, tmp_path, monkeypatch):
    """With JAX and optax but no matplotlib (the train extra's third package), the run died with an internal
    ImportError at its first checkpoint, when the loss plot is drawn: it is refused before any step."""
    from typer.testing import CliRunner

    from npgpt.cli import app

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    r = CliRunner().invoke(app, ["train", str(text), "--out", str(tmp_path / "run"), *cli_args(SHAPE), "--steps", "2"])
    assert isinstance(r.exception, NpgptError), r.exception
    assert str(r.exception) == "npgpt train draws its loss curve with matplotlib: pip install 'npgpt[train]'"
    assert not (tmp_path / "run").exists()


def interrupted_mid_run(text, out, *args: str) -> subprocess.CompletedProcess:
    """``npgpt train`` whose training is interrupted by a second signal once a step is done (as progress marks it)."""
    script = (
        "import sys\n"
        "import npgpt.train.loop\n"
        "def train(*args, **kwargs):\n"
        "    kwargs['should_stop'].__self__.started = True\n"
        "    raise KeyboardInterrupt\n"
        "npgpt.train.loop.train = train\n"
        "from npgpt.cli import main\n"
        f"sys.argv = ['npgpt', 'train', {str(text)!r}, '--out', {str(out)!r}, *{list(args)!r}]\n"
        "main()\n"
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_a_second_ctrl_c_still_exits_130(text, tmp_path):
    """A second Ctrl-C, which stops the run mid-step, exited 1 as if the input were bad (the first one exits 130):
    it exits 130 too, with its one line saying where to resume from."""
    r = interrupted_mid_run(text, tmp_path / "run")
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr.strip().splitlines() == [
        "error: interrupted at step 0; no checkpoint was written yet; run the same command with --resume to continue"
    ], r.stderr


def test_a_second_ctrl_c_in_a_resumed_run_names_its_checkpoint(text, tmp_path):
    """Interrupted at once in a run resumed from step 2, it said "no checkpoint was written yet": the checkpoint of
    step 2 was there, and a user told nothing was saved may delete the folder. It reads the folder's own state."""
    out = tmp_path / "run"
    train(text, out, TrainSettings(**SHAPE, steps=4), stop_after=2)
    r = interrupted_mid_run(text, out, "--resume")
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr.strip().splitlines() == [
        "error: interrupted at step 2; the last checkpoint is step 2; run the same command with --resume to continue"
    ], r.stderr


def test_sigterm_and_sigint_ask_for_a_stop_and_a_second_one_interrupts():
    from npgpt.cli.train import _StopOnSignal

    before = signal.getsignal(signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGINT):
        with _StopOnSignal() as stop:
            stop.started = True  # a step is done
            assert not stop.requested()
            os.kill(os.getpid(), sig)
            assert stop.requested() and stop.signum == sig
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), sig)
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


def test_before_the_first_step_a_signal_interrupts_at_once():
    from npgpt.cli.train import _StopOnSignal

    for sig in (signal.SIGTERM, signal.SIGINT):
        with _StopOnSignal() as stop, pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), sig)
        assert stop.signum == sig


def _run_train_script(patch: str, args: list[str]) -> subprocess.CompletedProcess:
    argv = ["npgpt", "train", *args]
    script = f"import os, signal, sys\n{patch}\nfrom npgpt.cli import main\nsys.argv = {argv!r}\nmain()\n"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def test_ctrl_c_while_tokenising_stops_at_once_leaving_nothing(text, tmp_path):
    """A first Ctrl-C while npgpt train tokenised a large text only asked for a stop after the next step: the
    whole text was tokenised, the step compiled and run, a checkpoint written, then it stopped. Before the first
    step there is nothing to keep, so it stops at once: exit 130, one line, no run folder, no token file."""
    patch = (
        "from npgpt.tokenizer import Tokenizer\n"
        "encode = Tokenizer.encode\n"
        "def interrupted(self, *args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the tokenisation\n"
        "    return encode(self, *args, **kwargs)\n"
        "Tokenizer.encode = interrupted\n"
    )
    out = tmp_path / "run"
    settings = {**SHAPE, "tokenizer": "gpt2", "steps": 5}
    r = _run_train_script(patch, [str(text), "--out", str(out), *cli_args(settings)])
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "interrupted" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
    assert not list(tmp_path.iterdir()), list(tmp_path.iterdir())


def test_sigterm_before_the_first_step_exits_143(text, tmp_path):
    """SIGTERM (a batch scheduler's, `kill`'s) before the first step exited 130 saying "interrupted", as Ctrl-C
    does; a shell reports a command that SIGTERM ended as 128 + 15 = 143, as npgpt train does once a step is done
    (and as generate, chat and serve do, which leave SIGTERM to Python): 143, with the signal named."""
    patch = (
        "from npgpt.tokenizer import Tokenizer\n"
        "encode = Tokenizer.encode\n"
        "def terminated(self, *args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return encode(self, *args, **kwargs)\n"
        "Tokenizer.encode = terminated\n"
    )
    out = tmp_path / "run"
    settings = {**SHAPE, "tokenizer": "gpt2", "steps": 5}
    r = _run_train_script(patch, [str(text), "--out", str(out), *cli_args(settings)])
    assert r.returncode == 143, (r.returncode, r.stderr)
    assert r.stderr.strip().splitlines() == [
        "error: stopped by SIGTERM at step 0; no checkpoint was written yet; run the same command with --resume to "
        "continue"
    ], r.stderr


def test_ctrl_c_before_a_resumed_runs_first_step_says_its_checkpoint_is_kept(text, tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", str(text), "--out", str(out), *cli_args({**SHAPE, "steps": 2}), timeout=300)
    assert r.returncode == 0, r.stderr
    kept = (out / STATE_FILE).read_bytes()
    patch = (
        "import npgpt.train.loop\ndef train(*a, **k):\n    raise KeyboardInterrupt\nnpgpt.train.loop.train = train\n"
    )
    r = _run_train_script(patch, [str(text), "--out", str(out), "--resume", "--steps", "4"])
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr.strip().splitlines() == [
        f"error: interrupted before the first step; the checkpoint in {out} is as it was; run the same command to "
        "continue"
    ], r.stderr
    assert (out / STATE_FILE).read_bytes() == kept


def test_a_missing_data_or_out_is_named_alone(tmp_path):
    """npgpt train corpus.txt (no --out) said 'give the training text and --out': the text, given, was named as
    missing too. Each run now names only what is missing."""
    text = tmp_path / "corpus.txt"
    text.write_text("In the beginning God created the heaven and the earth.\n")
    r = run_cli("train", str(text))
    assert r.returncode == 1 and "give --out" in r.stderr and "training text" not in r.stderr, r.stderr
    r = run_cli("train", "--out", str(tmp_path / "run"))
    assert r.returncode == 1 and "give the training text" in r.stderr and "--out" not in r.stderr, r.stderr
    r = run_cli("train")
    assert r.returncode == 1 and "give the training text and --out" in r.stderr, r.stderr


def test_a_model_parallel_size_that_divides_no_devices_is_one_line(text, tmp_path):
    """--model-parallel 0 (or 3 on one device) was make_mesh's ValueError, printed as an internal error."""
    r = run_cli(
        "train", str(text), "--out", str(tmp_path / "run"), *cli_args({**SHAPE, "steps": 1}), "--model-parallel", "0"
    )
    assert r.returncode == 1 and "--model-parallel 0 must be a whole number that divides the" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "internal error" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_a_config_data_of_the_wrong_type_names_the_argument(tmp_path):
    """data = 5 in --config was "the wrong type for --data", an option npgpt train does not have: DATA is named."""
    config = tmp_path / "run.toml"
    config.write_text(f'data = 5\nout = "{tmp_path / "run"}"\n')
    result = invoke(["--config", str(config)])
    assert isinstance(result.exception, NpgptError), result.output
    assert "data = 5 has the wrong type for DATA, the training text (expected text)" in str(result.exception)


@pytest.mark.parametrize(
    "out, said",
    [
        ("/proc/npgpt-run", "No such file or directory (its folder cannot be created or cannot hold new files)"),
        ("/proc/version/run", "a part of the path is a file, not a folder (/proc/version)"),
    ],
)
def test_a_run_folder_that_cannot_be_made_is_one_line(tmp_path, out, said):
    """--out /proc/npgpt-run ended as "internal error: No such file or directory: /proc/npgpt-run" after JAX
    loaded; the CLI now says it before any work, and the library names the folder it could not make."""
    text = tmp_path / "corpus.txt"
    text.write_text(KJV[:2000], encoding="utf-8")
    r = run_cli("train", str(text), "--out", out, *cli_args(SHAPE), "--steps", "1")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: cannot write {out}/model.safetensors: {said}; choose a folder"), r.stderr
    with pytest.raises(NpgptError, match=f"^cannot write {out}: {said.replace('(', '.').replace(')', '.')}; choose"):
        train(text, Path(out), TrainSettings(**SHAPE, steps=1))


@pytest.mark.parametrize(
    "data, said",
    [
        ("/dev/zero", "/dev/zero: not a regular file or folder (a device, a pipe or a socket)"),
        ("/nonexistent/corpus.txt", "/nonexistent/corpus.txt: no such file or folder"),
    ],
)
def test_training_data_that_is_a_device_is_not_called_missing(tmp_path, data, said):
    """npgpt train /dev/zero said '/dev/zero: no such file or folder', sending the user looking for a typo."""
    r = run_cli("train", data, "--out", str(tmp_path / "run"), *cli_args(SHAPE), "--steps", "1")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: {said}; pass a text file"), r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "options, said",
    [
        (["--distributed"], "cannot join a multi-host run: JAX detected no cluster"),
        (["--num-processes", "2"], "give --coordinator HOST:PORT of process 0 with --num-processes and --process-id"),
        (["--coordinator", "nonsense", "--num-processes", "1", "--process-id", "0"], "--coordinator must be HOST:PORT"),
        (["--coordinator", "localhost:70000", "--num-processes", "1", "--process-id", "0"], "got 'localhost:70000'"),
        (["--coordinator", "localhost:1234", "--num-processes", "0", "--process-id", "0"], "--num-processes must be"),
        (
            ["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "5"],
            "--process-id must be a whole number, from 0 to 1 (below --num-processes 2), got 5",
        ),
    ],
)
def test_multi_host_options_jax_refuses_are_one_line(text, tmp_path, options, said):
    """--distributed off a cluster, --num-processes without --coordinator, a coordinator that is no HOST:PORT or a
    process id past the count ended as "internal error: coordinator_address should be defined." (or "list index
    out of range"): JAX's own ValueError. Each is now one line naming the option."""
    if any(k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR")) for k in os.environ):
        pytest.skip("inside a cluster JAX detects: --distributed would join it")
    r = run_cli("train", str(text), "--out", str(tmp_path / "run"), *cli_args({**SHAPE, "steps": 1}), *options)
    assert r.returncode == 1 and said in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "internal error" not in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_a_width_the_heads_do_not_divide_names_the_flags(text, tmp_path):
    """`npgpt train --n-embd 16 --n-head 3` said "n_embd (16) must be divisible by n_head (3)": GPT2Config's field
    names where the user typed flags. The message names them as the options given."""
    args = cli_args({**SHAPE, "n_head": 3, "steps": 1})
    r = run_cli("train", str(text), "--out", str(tmp_path / "run"), *args)
    assert r.returncode == 1 and r.stderr == (
        "error: --n-embd 16 must be divisible by --n-head 3; pick a width that is a multiple of the head count\n"
    ), r.stderr


def test_the_held_out_batches_are_an_option_as_nanogpts_eval_iters(text, tmp_path):
    """TrainSettings' eval_batches (batches per held-out loss) had no option: nanoGPT's --eval_iters=20 got "No such
    option: --eval_iters (Possible options: --eval-interval)", a neighbour of another meaning. It is --eval-batches,
    taken from --eval_iters too, checked as every count is and kept in the run's settings."""
    out = tmp_path / "run"
    r = run_cli("train", str(text), "--out", str(out), *cli_args(SHAPE), "--eval_iters=0")
    assert r.returncode == 1 and r.stderr == "error: --eval_iters must be at least 1, got 0\n", r.stderr
    r = run_cli("train", str(text), "--out", str(out), *cli_args({**SHAPE, "steps": 1}), "--eval-batches", "3")
    assert r.returncode == 0, r.stderr
    assert load_state(out / STATE_FILE)[3]["settings"]["eval_batches"] == 3
