"""npgpt/bench/llamacpp.py and `npgpt bench --compare llama.cpp`, against a fake llama.cpp build.

No llama.cpp exists in CI, so the fake's llama-bench, llama-batched-bench and convert_hf_to_gguf.py are
small Python scripts that print what the real ones print (the structure of llama-bench -o json and
llama-batched-bench --output-format jsonl, trimmed from real runs) with numbers computed from the flags
they were given, and log their argv, so the tests see both the parsing and the flags that reach them.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytest
from conftest import SMALL_BENCH, run_cli

from npgpt.bench import BenchSettings, add_derived, table_rows
from npgpt.bench.llamacpp import find_tools, measure_llamacpp, to_gguf
from npgpt.config import GPT2Config
from npgpt.errors import NpgptError
from npgpt.formats import save_checkpoint
from npgpt.params import init_params

SCALE = {"f32": 1, "f16": 2, "q8_0": 3}  # the fakes' speed factor per weight type, so entries differ

# Shared by the fakes: argv logging (FAKE_LLAMA_LOG) and failing on demand (FAKE_LLAMA_FAIL=tool:type).
COMMON = r"""
import json, os, sys
from pathlib import Path
TOOL = Path(sys.argv[0]).name
args = sys.argv[1:]
def flag(name, default=None):
    return args[args.index(name) + 1] if name in args else default
if os.environ.get("FAKE_LLAMA_LOG"):
    with open(os.environ["FAKE_LLAMA_LOG"], "a") as f:
        f.write(json.dumps([TOOL, *args]) + "\n")
def crash_if_repacked(outtype, batched_prompt):
    # FAKE_LLAMA_CRASH_REPACKED=tool:type: a segfault on a batched prompt with repacked weights (llama.cpp's
    # AMX-repacked Q8_0 does that on some hosts), as the real tool dies: killed by SIGSEGV
    import signal
    repacked = flag("--repack", "1") != "0" and "--no-repack" not in args
    if os.environ.get("FAKE_LLAMA_CRASH_REPACKED") == f"{TOOL}:{outtype}" and repacked and batched_prompt:
        os.kill(os.getpid(), signal.SIGSEGV)
"""

LLAMA_BENCH = (
    COMMON
    + r"""
model = Path(flag("-m"))
outtype = model.read_text().split()[0]  # the fake converter writes its --outtype first
scale = {"f32": 1, "f16": 2, "q8_0": 3}[outtype]
if os.environ.get("FAKE_LLAMA_FAIL") == f"{TOOL}:{outtype}":
    sys.exit("main: error: failed to load model '%s'" % model)
assert flag("-o") == "json"
crash_if_repacked(outtype, int(flag("-p", "512")) > 0)
reps, threads = int(flag("-r", "5")), int(flag("-t", "2"))
tests = []
for n_prompt, n_gen in ((int(flag("-p", "512")), 0), (0, int(flag("-n", "128")))):
    if n_prompt == 0 and n_gen == 0:
        continue
    # prefill: 1000*scale + prompt tokens; decode: 100*scale + tokens; + threads/10 (checks -t arrived)
    ts = (1000 * scale + n_prompt if n_prompt else 100 * scale + n_gen) + threads / 10
    tests.append({
        "build_commit": "abc1234", "build_number": 4242, "cpu_info": "Fake CPU", "gpu_info": "",
        "backends": "CPU", "model_filename": str(model),
        "model_type": {"f32": "gpt2 0.1B all F32", "f16": "gpt2 0.1B F16", "q8_0": "gpt2 0.1B Q8_0"}[outtype],
        "model_size": model.stat().st_size - 100, "model_n_params": 124439808, "n_batch": 2048,
        "n_ubatch": 512, "n_threads": threads, "type_k": "f16", "type_v": "f16", "flash_attn": -1,
        "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": 0, "test_time": "2026-11-25T14:43:59Z",
        "avg_ns": int((n_prompt or n_gen) / ts * 1e9), "stddev_ns": 1000, "avg_ts": ts, "stddev_ts": 0.5,
        "samples_ns": [int((n_prompt or n_gen) / ts * 1e9)] * reps, "samples_ts": [ts] * reps,
    })
print(json.dumps(tests, indent=2))
"""
)

BATCHED_BENCH = (
    COMMON
    + r"""
model = Path(flag("-m"))
outtype = model.read_text().split()[0]
scale = {"f32": 1, "f16": 2, "q8_0": 3}[outtype]
if os.environ.get("FAKE_LLAMA_FAIL") == f"{TOOL}:{outtype}":
    sys.exit("main: error: failed to create the context")
assert flag("--output-format") == "jsonl" and "-kvu" in args
crash_if_repacked(outtype, True)
pp, tg, ctx = int(flag("-npp")), int(flag("-ntg")), int(flag("-c"))
print("main: n_kv_max = %d, n_batch = 2048, n_ubatch = 512" % ctx, file=sys.stderr)
for pl in map(int, flag("-npl").split(",")):
    if pl * (pp + tg) > ctx:  # as the real one: the unified KV cache must hold every sequence
        sys.exit("decode: failed to find a memory slot for batch of size %d" % pl)
    speed_tg = 10 * pl * scale + tg  # total generated tokens/s; "speed" (with prefill) is set apart on purpose
    t_tg = pl * tg / speed_tg
    print(json.dumps({"n_kv_max": ctx, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "is_pp_shared": 0,
                      "n_gpu_layers": -1, "n_threads": int(flag("-t")), "n_threads_batch": int(flag("-tb")),
                      "pp": pp, "tg": tg, "pl": pl, "n_kv": pl * (pp + tg), "t_pp": 0.03,
                      "speed_pp": 500.0, "t_tg": t_tg, "speed_tg": speed_tg, "t": t_tg + 0.03,
                      "speed": 1.0}))
"""
)

CONVERTER = (
    COMMON
    + r"""
import argparse
p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--outtype")
p.add_argument("--outfile")
a = p.parse_args(args)
d = Path(a.model)
config = json.loads((d / "config.json").read_text())
if "n_ctx" not in config:
    sys.exit("KeyError: 'n_ctx'")
if not ((d / "vocab.json").is_file() and (d / "merges.txt").is_file() or (d / "tokenizer.json").is_file()):
    sys.exit("OSError: no tokenizer files in %s" % d)
if not (d / "model.safetensors").is_file():
    sys.exit("FileNotFoundError: model.safetensors")
Path(a.outfile).write_text(a.outtype + "\n" + "x" * {"f32": 4000, "f16": 2000, "q8_0": 1000}[a.outtype])
"""
)


def write_fake_llama(root: Path) -> Path:
    """A directory laid out like a llama.cpp checkout built with cmake, with the fakes in it."""
    (root / "build" / "bin").mkdir(parents=True)
    for rel, body in (
        ("build/bin/llama-bench", LLAMA_BENCH),
        ("build/bin/llama-batched-bench", BATCHED_BENCH),
        ("convert_hf_to_gguf.py", CONVERTER),
    ):
        path = root / rel
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(0o755)
    return root


@pytest.fixture
def fake_llama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(fake llama.cpp dir, its argv log)."""
    log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("FAKE_LLAMA_LOG", str(log))
    return write_fake_llama(tmp_path / "llama.cpp"), log


@pytest.fixture
def hf_dir(tmp_path: Path) -> Path:
    """A Hugging Face checkpoint as transformers 5 writes it: no n_ctx in config.json, no tokenizer files."""
    config = GPT2Config(n_vocab=50257, n_ctx=64, n_embd=8, n_head=2, n_layer=1)
    path = save_checkpoint(tmp_path / "hf", config, init_params(config), "hf")
    cfg = json.loads((path / "config.json").read_text())
    del cfg["n_ctx"]
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """An npgpt checkpoint small enough to bench in seconds, with GPT-2's vocabulary (the converter's tokenizer)."""
    config = GPT2Config(n_vocab=50257, n_ctx=96, n_embd=32, n_head=2, n_layer=2)
    return save_checkpoint(tmp_path / "tiny.safetensors", config, init_params(config))


def calls(log: Path, tool: str) -> list[list[str]]:
    return [c[1:] for c in map(json.loads, log.read_text().splitlines()) if c[0] == tool]


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_measure_parses_every_engine_and_passes_the_settings(fake_llama, hf_dir, tmp_path):
    root, log = fake_llama
    s = BenchSettings(batches=(1, 4, 8), prompt_len=64, short_prompt=8, new_tokens=16, threads=3)
    engines = measure_llamacpp(root, hf_dir, tmp_path / "work", s)

    assert list(engines) == ["llama.cpp-f32", "llama.cpp-f16", "llama.cpp-q8_0"]
    for outtype, e in zip(("f32", "f16", "q8_0"), engines.values(), strict=True):
        k = SCALE[outtype]
        assert "error" not in e, e
        assert e["prefill_tps"] == pytest.approx(1000 * k + 64 + 0.3)  # -p prompt_len, -t threads
        assert e["decode_tps"] == pytest.approx(
            {
                "1": 100 * k + 16 + 0.3,  # llama-bench -n new_tokens
                "4": 40 * k + 16,
                "8": 80 * k + 16,
            }
        )  # batched speed_tg
        assert e["weight_type"] == {"f32": "F32", "f16": "F16", "q8_0": "Q8_0"}[outtype]
        assert e["version"] == "abc1234 (build 4242)"
        assert e["gguf_mb"] == pytest.approx((len(outtype) + 1 + 4000 // 2 ** (k - 1)) / 1e6)
        assert e["model_bytes"] == len(outtype) + 1 + 4000 // 2 ** (k - 1) - 100
        assert e["threads"] == 3 and e["kv_cache_type"] == "f16"
        if sys.platform == "linux":  # /proc/stat: how busy the machine was while llama.cpp was timed
            assert 0 <= e["other_cpu"] <= 1

    bench = calls(log, "llama-bench")
    assert len(bench) == 6  # two runs per GGUF (decode, then prefill: a crash in one keeps the other)
    assert [(flag(a, "-p"), flag(a, "-n")) for a in bench] == [("0", "16"), ("64", "0")] * 3
    for argv in bench:
        assert (flag(argv, "-r"), flag(argv, "-t")) == ("3", "3") and "--repack" not in argv  # llama.cpp's default
    batched = calls(log, "llama-batched-bench")
    assert len(batched) == 3
    for argv in batched:
        assert (flag(argv, "-npp"), flag(argv, "-ntg"), flag(argv, "-npl")) == ("8", "16", "4,8")  # no batch 1
        assert (flag(argv, "-t"), flag(argv, "-tb")) == ("3", "3")
        assert int(flag(argv, "-c")) >= 8 * (8 + 16)
    converted = calls(log, "convert_hf_to_gguf.py")
    assert [flag(argv, "--outtype") for argv in converted] == ["f32", "f16", "q8_0"]
    assert not list((tmp_path / "work").iterdir())  # GGUFs and prepared dirs are removed once timed
    assert "n_ctx" not in json.loads((hf_dir / "config.json").read_text())  # the source dir is left alone


def test_batch_1_only_skips_batched_bench(fake_llama, hf_dir, tmp_path):
    root, log = fake_llama
    engines = measure_llamacpp(root, hf_dir, tmp_path / "work", BenchSettings(batches=(1,), threads=1))
    assert set(engines["llama.cpp-f16"]["decode_tps"]) == {"1"}
    assert calls(log, "llama-batched-bench") == []


def test_failing_tool_gives_an_error_entry(fake_llama, hf_dir, tmp_path, monkeypatch):
    root, _ = fake_llama
    monkeypatch.setenv("FAKE_LLAMA_FAIL", "llama-batched-bench:q8_0")
    engines = measure_llamacpp(root, hf_dir, tmp_path / "work", BenchSettings(batches=(1, 8), threads=1))
    assert engines["llama.cpp-q8_0"] == {
        "error": "llama-batched-bench failed (1): main: error: failed to create the context"
    }
    assert "error" not in engines["llama.cpp-f16"] and set(engines["llama.cpp-f16"]["decode_tps"]) == {"1", "8"}

    monkeypatch.setenv("FAKE_LLAMA_FAIL", "llama-bench:f32")
    engines = measure_llamacpp(root, hf_dir, tmp_path / "work", BenchSettings(batches=(1,), threads=1))
    assert "failed to load model" in engines["llama.cpp-f32"]["error"]
    assert "error" not in engines["llama.cpp-q8_0"]


def test_crash_with_repacked_weights_is_measured_again_without_and_noted(fake_llama, hf_dir, tmp_path, monkeypatch):
    """A tool that dies on batched prompts with repacked weights (llama.cpp's AMX Q8_0 on some hosts) loses
    nothing: batch-1 decode keeps llama.cpp's default, prefill and batches run again with repacking off."""
    root, log = fake_llama
    monkeypatch.setenv("FAKE_LLAMA_CRASH_REPACKED", "llama-bench:q8_0")
    s = BenchSettings(batches=(1, 8), prompt_len=64, short_prompt=8, new_tokens=16, threads=1)
    q8 = measure_llamacpp(root, hf_dir, tmp_path / "work", s)["llama.cpp-q8_0"]
    assert "error" not in q8, q8
    assert q8["prefill_tps"] == pytest.approx(3000 + 64 + 0.1) and set(q8["decode_tps"]) == {"1", "8"}
    assert len(q8["notes"]) == 1 and q8["notes"][0].startswith("prefill: llama-bench failed (-11)")
    assert q8["notes"][0].endswith("measured again with weight repacking off (--repack 0)")
    runs = [a for a in calls(log, "llama-bench") if "q8_0" in flag(a, "-m")]
    assert [(flag(a, "-p"), a[-1]) for a in runs] == [("0", "json"), ("64", "json"), ("64", "0")]

    monkeypatch.setenv("FAKE_LLAMA_CRASH_REPACKED", "llama-batched-bench:f16")
    f16 = measure_llamacpp(root, hf_dir, tmp_path / "work", s)["llama.cpp-f16"]
    assert set(f16["decode_tps"]) == {"1", "8"} and f16["notes"][0].startswith("batched: llama-batched-bench failed")


def test_converter_failure_is_an_error_entry(fake_llama, tmp_path):
    root, _ = fake_llama
    bad = tmp_path / "bad-hf"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"n_positions": 64, "vocab_size": 50257}))  # no weights
    engines = measure_llamacpp(root, bad, tmp_path / "work", BenchSettings(batches=(1,), threads=1))
    assert engines["llama.cpp-f16"] == {
        "error": "convert_hf_to_gguf.py --outtype f16 failed (1): FileNotFoundError: model.safetensors"
    }


def test_to_gguf_adds_n_ctx_and_npgpt_tokenizer(fake_llama, hf_dir, tmp_path):
    root, log = fake_llama
    out = to_gguf(hf_dir, find_tools(root), "f16", tmp_path / "m.gguf")
    assert out.read_text().startswith("f16\n")  # the fake converter got n_ctx and tokenizer files, or fails
    assert not (tmp_path / "m-hf").exists()


def test_a_full_work_disk_is_an_error_entry_and_leaves_nothing(fake_llama, hf_dir, tmp_path):
    """The folder prepared for the converter (links to the weights, config.json with n_ctx) on a full disk: the
    write error escaped the bench as a traceback (config.json was written in place, not through npgpt's atomic
    writes) and the half-made folder stayed. Now each engine is one line, an error entry naming the file and
    the full disk, and the work folder is left empty."""
    from conftest import small_disk

    root, _ = fake_llama
    with small_disk(tmp_path / "disk", "256k") as disk:
        work = disk / "work"
        work.mkdir()
        with open(disk / "filler", "wb") as f, contextlib.suppress(OSError):  # fill the disk
            f.write(b"x" * (256 * 1024))
        engines = measure_llamacpp(root, hf_dir, work, BenchSettings(batches=(1,), threads=1))
        for outtype in ("f32", "f16", "q8_0"):
            error = engines[f"llama.cpp-{outtype}"]["error"]
            config = work / f"model-{outtype}-hf" / "config.json"
            assert error.startswith(f"cannot write {config}: No space left on device")
            assert "\n" not in error
        assert not list(work.iterdir())


def test_to_gguf_refuses_a_vocabulary_smaller_than_the_tokenizer(fake_llama, tmp_path):
    root, _ = fake_llama
    config = GPT2Config(n_vocab=512, n_ctx=64, n_embd=8, n_head=2, n_layer=1)
    hf = save_checkpoint(tmp_path / "hf", config, init_params(config), "hf")
    with pytest.raises(NpgptError, match="50257 tokens, the model's vocabulary 512"):
        to_gguf(hf, find_tools(root), "f32", tmp_path / "m.gguf")


@pytest.mark.parametrize(
    "remove, missing",
    [("build/bin/llama-batched-bench", "llama-batched-bench"), ("convert_hf_to_gguf.py", "convert_hf_to_gguf.py")],
)
def test_missing_tool_is_a_one_line_error(fake_llama, remove, missing):
    root, _ = fake_llama
    (root / remove).unlink()
    with pytest.raises(NpgptError) as err:
        find_tools(root)
    message = str(err.value)
    assert message.startswith(f"{missing} not found in {root}") and "cmake --build build" in message
    assert "\n" not in message


def test_tools_found_in_bin_or_the_dir_itself(tmp_path):
    root = write_fake_llama(tmp_path / "llama.cpp")
    (root / "bin").mkdir()
    (root / "build/bin/llama-bench").rename(root / "bin/llama-bench")
    (root / "build/bin/llama-batched-bench").rename(root / "llama-batched-bench")
    tools = find_tools(root)
    assert tools == {
        "llama-bench": root / "bin/llama-bench",
        "llama-batched-bench": root / "llama-batched-bench",
        "convert": root / "convert_hf_to_gguf.py",
    }


def test_derived_figures_and_table_cope_with_llamacpp_entries():
    result = {
        "machine": {"bandwidth_gbs": 10.0},
        "model": {"bytes_per_token": 400, "n_params": 100, "weight_mb": 4e-4},
        "settings": {"batches": [1, 8], "prompt_len": 64, "short_prompt": 8},
        "import": {},
        "engines": {
            "npgpt-numpy": {
                "decode_tps": {"1": 30.0, "8": 160.0},
                "prefill_tps": 600.0,
                "ttft_ms": 10.0,
                "startup_s": 0.2,
                "rss_decode_mb": 600.0,
                "rss_peak_mb": 700.0,
            },
            "llama.cpp-q8_0": {"decode_tps": {"1": 60.0, "8": 320.0}, "prefill_tps": 1200.0, "model_bytes": 100},
            "llama.cpp-f16": {"error": "llama-bench failed (1): boom"},
            "npgpt-torch": {"decode_tps": {"1": 300.0, "8": 900.0}, "prefill_tps": 9e3, "device": "gpu"},
        },
    }
    add_derived(result)
    # on the GPU machine, torch's "fraction of the CPU's bandwidth" read 46 %: a GPU engine gets none
    assert "bandwidth_fraction" not in result["engines"]["npgpt-torch"]
    assert "bandwidth_fraction" in result["engines"]["npgpt-numpy"]
    del result["engines"]["npgpt-torch"]
    ours = result["engines"]["npgpt-numpy"]
    assert ours["vs_llama.cpp-q8_0"] == {"decode_1": 0.5, "decode_8": 0.5, "prefill": 0.5}
    assert "vs_llama.cpp-f16" not in ours and "vs_hf" not in ours
    # a q8_0 model reads a quarter of float32's bytes: its ceiling is four times higher
    assert result["engines"]["llama.cpp-q8_0"]["bandwidth_fraction"] == pytest.approx(60 / 4 / (10e9 / 400))
    names, rows = table_rows(result)
    assert names == ["npgpt-numpy", "llama.cpp-q8_0"]
    cells = {r[0]: r[1:] for r in rows}
    assert cells["start-up (import + load), s"] == ["0.20", ""]
    assert cells["decode batch 8 vs llama.cpp-q8_0 (x)"] == ["0.50", ""]
    assert cells["prefill vs llama.cpp-q8_0 (x)"] == ["0.50", ""]


def test_compare_llamacpp_needs_a_directory():
    proc = run_cli("bench", "--random", "--backend", "numpy", "--compare", "llama.cpp", env={"NPGPT_LLAMA_CPP": ""})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--llama-cpp DIR" in proc.stderr


def test_compare_rejects_unknown_engines():
    proc = run_cli("bench", "--random", "--backend", "numpy", "--compare", "hf,vllm")
    assert proc.returncode == 1 and "'hf' and 'llama.cpp'" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_tools_fail_before_any_measurement(tmp_path):
    proc = run_cli(
        "bench", "--random", "--backend", "numpy", "--compare", "llama.cpp", env={"NPGPT_LLAMA_CPP": str(tmp_path)}
    )  # the environment variable is the default
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "llama-bench, llama-batched-bench, convert_hf_to_gguf.py not found" in proc.stderr
    assert "running" not in proc.stderr  # no engine ran first


def test_bench_cli_compares_with_llamacpp(tmp_path, tiny_checkpoint):
    log = tmp_path / "argv.jsonl"
    root = write_fake_llama(tmp_path / "llama.cpp")
    ckpt = tiny_checkpoint
    proc = run_cli(
        "bench",
        "--model",
        str(ckpt),
        "--backend",
        "numpy",
        "--batch",
        "1,2",
        *SMALL_BENCH,
        "--baseline-tokens",
        "0",
        "--threads",
        "1",
        "--compare",
        "hf,llama.cpp",
        "--llama-cpp",
        str(root),
        "--json",
        env={"FAKE_LLAMA_LOG": str(log)},
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    engines = result["engines"]
    assert list(engines) == ["npgpt-numpy", "hf-torch", "llama.cpp-f32", "llama.cpp-f16", "llama.cpp-q8_0"]
    assert result["settings"]["llama_cpp"] == str(root)
    for outtype, k in SCALE.items():
        e = engines[f"llama.cpp-{outtype}"]
        assert e["decode_tps"] == pytest.approx({"1": 100 * k + 4 + 0.1, "2": 20 * k + 4})
        assert e["prefill_tps"] == pytest.approx(1000 * k + 32 + 0.1)
        assert e["bandwidth_fraction"] > 0
        ours = engines["npgpt-numpy"]
        ratios = ours[f"vs_llama.cpp-{outtype}"]
        assert ratios == pytest.approx(
            {
                "decode_1": ours["decode_tps"]["1"] / e["decode_tps"]["1"],
                "decode_2": ours["decode_tps"]["2"] / e["decode_tps"]["2"],
                "prefill": ours["prefill_tps"] / e["prefill_tps"],
            }
        )
    assert set(engines["npgpt-numpy"]["vs_hf"]) == {"decode_1", "decode_2", "prefill", "ttft"}
    assert "vs_llama.cpp-f32" not in engines["hf-torch"]
    converted = calls(log, "convert_hf_to_gguf.py")
    assert len(converted) == 3

    # the same result as a table: llama.cpp columns with blank start-up/memory cells, ratio rows
    names, rows = table_rows(result)
    cells = {r[0]: r[1:] for r in rows}
    assert cells["peak RSS overall, MB"][2:] == ["", "", ""]
    assert cells["decode batch 2 vs llama.cpp-f16 (x)"][0] == format(
        engines["npgpt-numpy"]["vs_llama.cpp-f16"]["decode_2"], ".2f"
    )


def test_bench_table_output_with_llamacpp(tmp_path, tiny_checkpoint):
    """The human-readable output (not --json) prints llama.cpp's columns and what they were run on."""
    root = write_fake_llama(tmp_path / "llama.cpp")
    ckpt = tiny_checkpoint
    proc = run_cli(
        "bench",
        "--model",
        str(ckpt),
        "--backend",
        "numpy",
        "--batch",
        "1",
        *SMALL_BENCH,
        "--baseline-tokens",
        "0",
        "--threads",
        "1",
        "--compare",
        "llama.cpp",
        "--llama-cpp",
        str(root),
        env={"COLUMNS": "400"},
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert "llama.cpp-q8_0" in proc.stdout and "prefill vs llama.cpp-f32 (x)" in proc.stdout
    assert "llama.cpp-f16: llama.cpp abc1234 (build 4242), F16 weights" in proc.stdout


def test_device_kind_reads_where_an_array_lives():
    import numpy as np

    from npgpt.bench.engines import device_kind

    assert device_kind(np.zeros(1)) == "cpu"
    torch = pytest.importorskip("torch")
    assert device_kind(torch.zeros(1)) == "cpu" and device_kind(torch.zeros(1, device="meta")) == "gpu"
    jnp = pytest.importorskip("jax.numpy")
    assert device_kind(jnp.zeros(1)) == "cpu"

    class CupyLike:  # a CuPy array's device is a cupy.cuda.Device, printed "<CUDA Device 0>"
        device = type("Device", (), {"__str__": lambda self: "<CUDA Device 0>"})()

    assert device_kind(CupyLike()) == "gpu"


def test_llama_cpp_typed_without_compare_is_refused_but_the_variable_is_not(tmp_path):
    """--llama-cpp DIR without --compare llama.cpp was ignored: minutes of measuring and no llama.cpp."""
    proc = run_cli("bench", "--random", "--backend", "numpy", "--llama-cpp", str(tmp_path), "--batch", "0")
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == f"error: --llama-cpp {tmp_path} is used by --compare llama.cpp; add --compare llama.cpp"
    )
    # the environment variable is a standing setting: the run goes on to its own checks (--batch 0 here)
    proc = run_cli("bench", "--random", "--backend", "numpy", "--batch", "0", env={"NPGPT_LLAMA_CPP": str(tmp_path)})
    assert proc.returncode == 1 and "batch sizes" in proc.stderr and "--llama-cpp" not in proc.stderr, proc.stderr
