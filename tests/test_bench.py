"""npgpt/bench/: `npgpt bench --json` runs end to end and reports every field (not the speed)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import SMALL_BENCH, run_cli

from npgpt.config import GPT2Config
from npgpt.formats import save_checkpoint
from npgpt.params import init_params

ENGINE_FIELDS = {
    "startup_s",
    "ttft_ms",
    "decode_tps",
    "prefill_tps",
    "rss_load_mb",
    "rss_decode_mb",
    "rss_peak_mb",
    "bandwidth_fraction",
}


def in_flags(e):
    """The library's message about BenchSettings (``backends='x'``), as npgpt bench prints it (``--backend x``); and
    the library's own words name no flag (npgpt.bench is a library: the CLI is the one that has flags)."""
    from npgpt.cli.bench import as_bench_flags

    assert not re.search(r"(?<![\w-])--[a-z]", str(e)), str(e)
    return str(as_bench_flags(e))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    config = GPT2Config(n_vocab=512, n_ctx=96, n_embd=32, n_head=2, n_layer=2)
    return str(save_checkpoint(tmp_path_factory.mktemp("bench") / "tiny.safetensors", config, init_params(config)))


def test_bench_json_has_every_field(tiny_checkpoint, tmp_path):
    plot = tmp_path / "decode.png"
    proc = run_cli(
        "bench",
        "--model",
        tiny_checkpoint,
        "--backend",
        "numpy",
        "--batch",
        "1,2",
        *SMALL_BENCH,
        "--baseline-tokens",
        "4",
        "--compare",
        "hf",
        "--train",
        "--train-batch",
        "2",
        "--train-seq",
        "8",
        "--precision",
        "--json",
        "--plot",
        str(plot),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)

    assert {"bandwidth_gbs", "cpu", "cores", "threads"} <= result["machine"].keys()
    assert result["machine"]["bandwidth_gbs"] > 0
    assert {"n_params", "weight_mb", "bytes_per_token"} <= result["model"].keys()
    assert {"import_s", "import_api_s"} <= result["import"].keys()
    assert ENGINE_FIELDS | {"other_cpu", "rounds"} <= result["engines"]["npgpt-numpy"].keys()
    for name in ("npgpt-numpy", "hf-torch"):
        engine = result["engines"][name]
        assert ENGINE_FIELDS <= engine.keys(), (name, engine)
        assert set(engine["decode_tps"]) == {"1", "2"}
        assert all(v > 0 for v in engine["decode_tps"].values())
    assert set(result["engines"]["npgpt-numpy"]["vs_hf"]) == {"decode_1", "decode_2", "prefill", "ttft"}
    assert {"tokens", "cached_s", "nocache_s", "speedup"} <= result["nocache"].keys()
    for name in ("npgpt-jax", "hf-torch"):
        assert {"tokens_per_s", "step_s"} <= result["train"][name].keys(), result["train"]
    numpy_int8 = result["precision"]["numpy"]  # int8 on NumPy: Q8_0 blocks through ONNX Runtime
    assert numpy_int8["backend"] == "numpy" and set(numpy_int8) & {"float16", "bfloat16"} == set()
    for precision, dtype in [(result["precision"], d) for d in ("float16", "bfloat16", "int8")] + [
        (numpy_int8, "int8")
    ]:
        assert {"logits_max_abs_diff", "cross_entropy_change"} <= precision[dtype].keys()
        assert 0 < precision[dtype]["logits_max_abs_diff"] < 0.05  # really narrower, and close
        # the bundled model on its held-out text; greedy output as float32's
        assert abs(precision["heldout"][dtype]["cross_entropy_change"]) < 0.01
        assert precision["greedy_same_tokens"][dtype] >= 20
    assert "instruction_sets" in result["machine"]
    # every figure docs/benchmarks.md sets a target for is measured; batch 8 and 32 were not run
    ours = result["engines"]["npgpt-numpy"]
    figures = [
        ours["vs_hf"]["decode_1"],
        ours["bandwidth_fraction"],
        ours["vs_hf"]["prefill"],
        result["nocache"]["speedup"],
        ours["rss_decode_mb"] / result["model"]["weight_mb"],
        result["import"]["import_s"],
        ours["ttft_ms"],
    ]
    assert all(f > 0 for f in figures), figures
    assert not {"decode_8", "decode_32"} & ours["vs_hf"].keys()
    assert "goals" not in result  # the project's targets are in the docs, not in user output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_runs_16bit_weights_as_engines_of_their_own(tiny_checkpoint):
    proc = run_cli(
        "bench",
        "--model",
        tiny_checkpoint,
        "--backend",
        "torch",
        "--dtype",
        "float32,bfloat16",
        "--batch",
        "2",
        *SMALL_BENCH,
        "--baseline-tokens",
        "0",
        "--json",
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    engines = json.loads(proc.stdout)["engines"]
    f32, bf16 = engines["npgpt-torch"], engines["npgpt-torch-bfloat16"]
    assert ENGINE_FIELDS <= bf16.keys() and bf16["decode_tps"]["2"] > 0
    # the matrices are most of the bytes, and half as many in bfloat16
    assert 0.5 < bf16["model_bytes"] / f32["model_bytes"] < 0.75


def test_bench_help_has_an_example():
    proc = run_cli("bench", "--help")
    assert proc.returncode == 0
    assert "npgpt bench --model 124M --random" in proc.stdout


def test_bad_backend_is_one_line_error():
    proc = run_cli("bench", "--random", "--backend", "numpy,fortran")
    assert proc.returncode == 1
    assert "fortran" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("bench", "--random", "--dtype", "float32,int4")
    assert proc.returncode == 1
    assert "--dtype takes a comma list of float32, float16, bfloat16, int8, got 'float32,int4'" in proc.stderr
    proc = run_cli("bench", "--random", "--backend", "numpy", "--dtype", "float16")
    assert proc.returncode == 1
    assert "no backend in --backend numpy stores float16 weights; add one that does: jax, torch, cupy" in proc.stderr


def test_a_backend_not_installed_is_reported_with_its_install_command(monkeypatch):
    """The default --backend numpy,jax,torch on a plain install said "npgpt-jax: backend jax is not installed"
    without naming what to install; it now gives the backend's own error, naming the extra."""
    import importlib.util
    import sys

    from npgpt.bench.run import unavailable

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else find_spec(name, *a))
    monkeypatch.setitem(sys.modules, "jax", None)  # `import jax` fails, as when the extra is not installed
    assert unavailable("jax") == "backend 'jax' is not installed; pip install 'npgpt[jax]'"
    assert unavailable("numpy") is None


def test_no_downloaded_gpt2_without_random_is_one_line_naming_random(tmp_path):
    """The help said "default 124M"; with none downloaded the bundled model was measured in its place,
    and the default --prompt-len 512 then failed on its 256-token context, naming the wrong fix."""
    proc = run_cli("bench", "--backend", "numpy", "--batch", "1", env={"NPGPT_HOME": str(tmp_path)})
    assert proc.returncode == 1 and "no GPT-2 is downloaded to measure; add --random" in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error:")


def test_an_unwritable_plot_is_refused_before_the_run(tiny_checkpoint, tmp_path):
    (tmp_path / "file").write_text("x")
    small = ("--model", tiny_checkpoint, "--backend", "numpy", "--batch", "1", *SMALL_BENCH, "--baseline-tokens", "0")
    proc = run_cli("bench", *small, "--plot", str(tmp_path / "file" / "decode.png"), timeout=180)
    assert proc.returncode == 1
    assert f"cannot write {tmp_path / 'file' / 'decode.png'}" in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr and "preparing the weights" not in proc.stderr


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("threads", 0, "--threads must be >= 1, got 0"),
        ("bandwidth_mib", 0, "--bandwidth-mib must be >= 1, got 0"),
        ("train_batch", 0, "--train-batch must be >= 1, got 0"),
        ("train_seq", 0, "--train-seq must be >= 1, got 0"),
        ("new_tokens", 0, "--new-tokens must be >= 1, got 0"),
        ("short_prompt", 0, "--short-prompt must be >= 1, got 0"),
        ("repeat", 0, "--repeat must be >= 1, got 0"),
        ("batches", (1, 0), "--batch sizes must be >= 1, got 1,0"),
        ("batches", (), "--batch sizes must be >= 1, got none"),
        ("prompt_len", 8, "--prompt-len must be >= 16, got 8"),
    ],
)
def test_counts_below_their_least_are_refused_naming_the_flag(field, value, message):
    from npgpt.bench.settings import BenchSettings, npgpt_engines
    from npgpt.errors import NpgptError

    # --threads 0 ran on the default thread count and reported "0 threads"; --bandwidth-mib 0 measured 1 MiB.
    # --prompt-len 8 was refused as "batch sizes, --new-tokens, --short-prompt and --repeat must be >= 1,
    # --prompt-len >= 16": five flags named, not the one given
    with pytest.raises(NpgptError) as e:
        npgpt_engines(BenchSettings(backends=("numpy",), **{field: value}))
    assert message in in_flags(e.value), in_flags(e.value)


def test_best_of_rounds_keeps_best_speed_and_highest_memory():
    from npgpt.bench import best_of

    a = {
        "decode_tps": {"1": 10.0, "8": 80.0},
        "prefill_tps": 500.0,
        "ttft_ms": 40.0,
        "startup_s": 0.5,
        "rss_decode_mb": 600.0,
    }
    b = {
        "decode_tps": {"1": 12.0, "8": 70.0},
        "prefill_tps": 450.0,
        "ttft_ms": 45.0,
        "startup_s": 0.4,
        "rss_decode_mb": 610.0,
    }
    best = best_of([a, {"error": "worker failed"}, b])
    assert best == {
        "decode_tps": {"1": 12.0, "8": 80.0},
        "prefill_tps": 500.0,
        "ttft_ms": 40.0,
        "startup_s": 0.4,
        "rss_decode_mb": 610.0,
        "rounds": 2,
    }


@pytest.mark.parametrize(
    ("field", "values", "flag"),
    [
        ("backends", ("numpy", "numpy"), "--backend"),
        ("dtypes", ("float32", "float32"), "--dtype"),
        ("batches", (1, 8, 1), "--batch"),
        ("compare", ("hf", "hf"), "--compare"),
    ],
)
def test_a_value_given_twice_is_refused(field, values, flag):
    from npgpt.bench.settings import BenchSettings, npgpt_engines
    from npgpt.errors import NpgptError

    # --backend numpy,numpy ran npgpt-numpy twice a round and kept the best as if one engine; --batch 1,1 twice
    with pytest.raises(NpgptError) as e:
        npgpt_engines(BenchSettings(**{"backends": ("numpy",), field: values}))
    assert f"{flag} {','.join(map(str, values))} names {values[0]} twice" in in_flags(e.value), in_flags(e.value)


@pytest.mark.parametrize("value", ["", ",", " , "])
def test_an_empty_backend_list_is_named_as_empty(value):
    """--backend '' said "no backend in --backend  stores float32 weights; add one that does": an empty list, read
    as a backend without float32 weights."""
    r = run_cli("bench", "--random", "--model", "bundled", "--backend", value)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "error: --backend takes a comma list of numpy, jax, torch, cupy, cupynumeric, got none" in r.stderr


def test_a_negative_baseline_is_refused():
    from npgpt.bench.settings import BenchSettings, npgpt_engines
    from npgpt.errors import NpgptError

    with pytest.raises(NpgptError) as e:
        npgpt_engines(BenchSettings(backends=("numpy",), baseline_tokens=-1))
    assert in_flags(e.value).startswith("--baseline-tokens must be >= 0 (0 skips"), in_flags(e.value)
    npgpt_engines(BenchSettings(backends=("numpy",), baseline_tokens=0))


def test_a_run_that_does_not_fit_the_context_is_refused_before_the_weights_are_made(monkeypatch):
    import npgpt.params
    from npgpt.bench import BenchSettings, run_bench
    from npgpt.errors import NpgptError

    def no_weights(*args, **kwargs):  # 1558M's random weights took a minute and 6 GB before the refusal
        raise AssertionError("random weights made for a run refused anyway")

    monkeypatch.setattr(npgpt.params, "init_params", no_weights)
    with pytest.raises(NpgptError) as e:
        run_bench(BenchSettings(model="1558M", random=True, backends=("numpy",), prompt_len=2000))
    assert in_flags(e.value).startswith("--prompt-len must be below the model's context of 1024 tokens")


@pytest.mark.parametrize(
    "change, said",
    [
        (
            dict(prompt_len=256),
            "--prompt-len must be below the model's context of 256 tokens (its cache also holds the next token), "
            "got 256; lower --prompt-len",
        ),
        (
            dict(short_prompt=16, new_tokens=300),
            "--short-prompt + --new-tokens must be below the model's context of 256 tokens (its cache also holds the "
            "next token), got 16 + 300 = 316; lower --short-prompt or --new-tokens",
        ),
        (dict(baseline_tokens=252), "--short-prompt + --baseline-tokens must be below"),
    ],
)
def test_a_run_past_the_context_names_the_flags_and_values(monkeypatch, change, said):
    """--prompt-len 256 on a 256-token model said "prompts plus new tokens must fit the context of 256 tokens;
    lower --prompt-len, --new-tokens or --baseline-tokens": 256 does fit, and which flag was over was the user's
    to find. The line names the flags that add up past the context and their values."""
    import npgpt.bench.run
    from npgpt.bench import BenchSettings, run_bench
    from npgpt.errors import NpgptError

    def no_worker(*args, **kwargs):
        raise AssertionError("a worker ran for a run refused anyway")

    monkeypatch.setattr(npgpt.bench.run, "spawn", no_worker)
    short = dict(prompt_len=16, short_prompt=4, new_tokens=4, baseline_tokens=0)
    with pytest.raises(NpgptError) as e:
        run_bench(BenchSettings(model="bundled", random=True, backends=("numpy",), batches=(1,), **{**short, **change}))
    assert said in in_flags(e.value), in_flags(e.value)


def test_a_training_window_longer_than_the_context_is_refused_before_any_worker(monkeypatch):
    """npgpt bench --train --train-seq 1000 on a 256-token model ran: JAX reads positions past wpe as NaN, so npgpt's
    figure timed steps of NaN loss (and HF's failed). It is refused, like a prompt too long, before any worker."""
    import npgpt.bench.run
    from npgpt.bench import BenchSettings, run_bench
    from npgpt.errors import NpgptError

    def no_worker(*args, **kwargs):
        raise AssertionError("a worker ran for a run refused anyway")

    monkeypatch.setattr(npgpt.bench.run, "spawn", no_worker)
    short = dict(model="bundled", random=True, backends=("numpy",), batches=(1,), prompt_len=16, short_prompt=4)
    settings = BenchSettings(**short, new_tokens=4, baseline_tokens=0, bandwidth_mib=1, train=True, train_seq=1000)
    with pytest.raises(NpgptError) as e:
        run_bench(settings)
    assert in_flags(e.value).startswith("--train-seq 1000 is longer than the context of 256 tokens; give")


def test_a_plot_that_fails_to_write_after_the_run_keeps_the_measurements(tmp_path, monkeypatch):
    """--plot was written before the results were printed: a write that failed after minutes of measuring (a
    full disk, the folder gone) lost every figure. The figures are printed first, then the plot is written."""
    from typer.testing import CliRunner

    import npgpt.bench
    from npgpt.cli import app
    from npgpt.errors import NpgptError

    result = {"engines": {"npgpt-numpy-float32": {"decode_tps": {"1": 123.0}}}}
    monkeypatch.setattr(npgpt.bench, "run_bench", lambda settings, progress=None: result)

    def disk_full(result, path):
        raise NpgptError(f"cannot write {path}: No space left on device; free some space")

    monkeypatch.setattr(npgpt.bench, "plot_decode", disk_full)
    args = ["bench", "--random", "--backend", "numpy", "--json", "--plot", str(tmp_path / "d.png")]
    r = CliRunner().invoke(app, args)
    assert isinstance(r.exception, NpgptError) and "No space left" in str(r.exception)
    assert json.loads(r.stdout) == result


def test_a_written_plot_is_named(tmp_path, monkeypatch):
    """--plot wrote its PNG without a word (npgpt lens --png and convert say what they wrote): a line on stderr
    names it, so stdout stays the one JSON object of --json."""
    from typer.testing import CliRunner

    import npgpt.bench
    from npgpt.cli import app

    result = {"engines": {"npgpt-numpy-float32": {"decode_tps": {"1": 123.0}}}}
    monkeypatch.setattr(npgpt.bench, "run_bench", lambda settings, progress=None: result)
    monkeypatch.setattr(npgpt.bench, "plot_decode", lambda result, path: path.write_bytes(b"png") and path)
    plot = tmp_path / "d.png"
    r = CliRunner().invoke(app, ["bench", "--random", "--backend", "numpy", "--json", "--plot", str(plot)])
    assert r.exit_code == 0 and json.loads(r.stdout) == result, r.output
    assert r.stderr.strip().splitlines()[-1] == f"wrote {plot}", r.stderr


def test_a_batch_past_the_machines_memory_is_refused_before_any_worker(monkeypatch):
    """npgpt bench --batch 100000 ran: the worker went into swap for minutes (or met the OOM killer), and then the
    bench printed an empty table and exited 0. A decode batch whose kv cache and logits alone outgrow the machine's
    memory is refused first, naming the flag and the figures."""
    import npgpt.bench.run
    import npgpt.score
    from npgpt.bench import BenchSettings, run_bench
    from npgpt.errors import NpgptError

    def no_worker(*args, **kwargs):
        raise AssertionError("a worker ran for a run refused anyway")

    monkeypatch.setattr(npgpt.bench.run, "spawn", no_worker)
    monkeypatch.setattr(npgpt.score, "physical_memory", lambda: 8 * 2**30)  # an 8 GiB machine, whatever this one is
    short = dict(model="bundled", random=True, backends=("numpy",), prompt_len=16, short_prompt=4, new_tokens=4)
    with pytest.raises(NpgptError) as e:
        run_bench(BenchSettings(**short, batches=(1, 100000), baseline_tokens=0))
    assert re.match(r"--batch 100000 needs [\d,]+ GiB for its kv cache and logits alone, more ", in_flags(e.value))
    with pytest.raises(NpgptError) as e:
        run_bench(BenchSettings(**short, batches=(100000,), baseline_tokens=0))
    assert in_flags(e.value).endswith("lower --batch (or --new-tokens)"), in_flags(e.value)


def test_a_worker_refused_by_npgpt_reports_its_one_line_and_an_all_failed_run_exits_1(tmp_path, monkeypatch):
    """A worker ending in an npgpt error reported the traceback's last line, the class path included
    ('npgpt worker failed (1): npgpt.errors.NpgptError: out of memory ...'), and a run whose every engine failed
    printed an empty table and exited 0. The worker reports the message alone, and the CLI exits 1 after the run."""
    from typer.testing import CliRunner

    import npgpt.bench
    from npgpt.bench import BenchSettings
    from npgpt.bench.workers import spawn
    from npgpt.cli import app
    from npgpt.errors import NpgptError

    garbage = tmp_path / "model.safetensors"
    garbage.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    e = spawn("npgpt", BenchSettings(backends=("numpy",)), path=str(garbage), backend="numpy", dtype="float32")
    assert e["error"].startswith("npgpt worker failed (1): ") and "npgpt.errors" not in e["error"], e
    assert str(garbage) in e["error"] and "Traceback" not in e["error"], e

    failed = {"engines": {"npgpt-numpy": {"error": "npgpt worker failed (1): out of memory"}}}
    monkeypatch.setattr(npgpt.bench, "run_bench", lambda settings, progress=None: failed)
    r = CliRunner().invoke(app, ["bench", "--random", "--backend", "numpy", "--json"])
    assert isinstance(r.exception, NpgptError) and "every engine failed" in str(r.exception), r.output
    assert json.loads(r.stdout) == failed  # the figures (here, the errors) are out before the refusal
