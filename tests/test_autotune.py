"""``--dtype auto`` (npgpt/autotune.py): the choice, the per-machine cache, and load/CLI wiring."""

from __future__ import annotations

import json
import os
import sys

import pytest

import npgpt
from npgpt import autotune
from npgpt.backends import get_backend
from npgpt.config import GPT2Config
from npgpt.errors import NpgptError
from npgpt.registry import bundled_path
from tests.conftest import run_cli

CONFIG = GPT2Config(n_vocab=96, n_ctx=32, n_embd=48, n_head=3, n_layer=2)


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch):
    """A 1-minute load average of 0: a busy test host must not decide what these tests see (one test sets it)."""
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NPGPT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def fake_timer(monkeypatch, seconds: dict[str, float]) -> list[str]:
    """Replace the product timer: each product of a storage takes ``seconds[dtype]`` (1 ms if not named);
    returns the list of the storages timed, one entry a call."""
    calls: list[str] = []

    def timed(product: autotune.Product) -> float:
        calls.append(product.dtype)
        return seconds.get(product.dtype, 1e-3)

    monkeypatch.setattr(autotune, "time_product", timed)
    return calls


@pytest.mark.parametrize(
    ("int8_seconds", "expected"),
    [(0.5e-3, "int8"), (0.95e-3, "float32"), (1e-3, "float32"), (2e-3, "float32")],
    ids=["2x-faster-chosen", "5pct-faster-not", "equal", "slower"],
)
def test_choice_needs_a_clear_margin_over_float32(home, monkeypatch, int8_seconds, expected):
    fake_timer(monkeypatch, {"float32": 1e-3, "int8": int8_seconds})
    choice = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert choice.dtype == expected
    assert choice.measured and set(choice.seconds) == {"float32", "int8"}
    # a step = 4 block products x n_layer + the head (n_vocab columns, all timed here: 96 < HEAD_COLUMNS)
    assert choice.seconds["int8"] == pytest.approx(int8_seconds * (4 * CONFIG.n_layer + 1))
    assert choice.cache == home / "autotune.json"


def test_pick_prefers_the_fastest_past_the_margin():
    assert autotune.pick({"float32": 1.0, "float16": 0.6, "bfloat16": 0.4, "int8": 0.5}) == "bfloat16"
    assert autotune.pick({"float32": 1.0, "bfloat16": 0.92}) == "float32"  # 1.087x: under 1.10x
    assert autotune.pick({"float32": 1.0}) == "float32"


def test_a_cache_hit_does_not_measure(home, monkeypatch):
    calls = fake_timer(monkeypatch, {"int8": 0.4e-3})
    first = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    n = len(calls)
    assert n > 0 and first.measured
    second = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert len(calls) == n  # nothing timed
    assert not second.measured
    assert (second.dtype, second.seconds, second.key) == (first.dtype, first.seconds, first.key)
    assert "cached in" in second.describe() and "measured now" not in second.describe()


@pytest.mark.parametrize(
    "other",
    [
        {"rows": 4},
        {"config": GPT2Config(n_vocab=96, n_ctx=32, n_embd=64, n_head=4, n_layer=2)},
        {"config": GPT2Config(n_vocab=96, n_ctx=32, n_embd=48, n_head=3, n_layer=2, n_inner=96)},
    ],
    ids=["rows", "n_embd", "mlp-width"],
)
def test_a_different_key_measures_again_and_keeps_both(home, monkeypatch, other):
    calls = fake_timer(monkeypatch, {})
    a = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    n = len(calls)
    b = autotune.choose_dtype(get_backend("numpy"), other.get("config", CONFIG), rows=other.get("rows", 1))
    assert b.measured and len(calls) > n and a.key != b.key
    entries = json.loads((home / "autotune.json").read_text())["entries"]
    assert set(entries) == {a.key, b.key}


def test_the_key_names_what_decides_the_choice(monkeypatch):
    from npgpt.hostinfo import instruction_sets

    for var in autotune.THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    key = autotune.cache_key(get_backend("numpy"), CONFIG, rows=3)
    for part in (
        f"npgpt={npgpt.__version__}",
        "backend=numpy",
        "device=cpu",
        "numpy=",
        "onnxruntime=",
        "n_embd=48",
        "n_inner=192",
        "rows=3",
    ):
        assert part in key
    assert "n_vocab=96" in key
    assert ", ".join(instruction_sets()) in key and f"cores={os.cpu_count()}" in key
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a thread limit changes which kernel wins
    assert autotune.cache_key(get_backend("numpy"), CONFIG, rows=3) == key.replace(
        f"cores={os.cpu_count()}", f"cores={os.cpu_count()} OMP_NUM_THREADS=1"
    )


def test_the_key_names_the_device_the_backend_computes_on():
    """The torch backend runs on a GPU where PyTorch sees one: a choice measured there must not be
    read back on the CPU (CUDA_VISIBLE_DEVICES="" on the same machine), nor the other way round."""
    import dataclasses

    torch = pytest.importorskip("torch")
    cpu = get_backend("torch")
    elsewhere = dataclasses.replace(cpu, asarray=lambda a: torch.from_numpy(a).to("meta"))  # stands in for a GPU
    key = autotune.cache_key(cpu, CONFIG, rows=1)
    assert "device=cpu" in key
    assert autotune.cache_key(elsewhere, CONFIG, rows=1) == key.replace("device=cpu", "device=meta")


@pytest.mark.parametrize("text", ["{not json", "[]", '{"entries": []}', "\xff\xfe", "KEY", "[" * 100_000])
def test_a_corrupt_cache_is_measured_again_and_rewritten(home, monkeypatch, text):
    calls = fake_timer(monkeypatch, {})
    path = home / "autotune.json"
    path.parent.mkdir(parents=True)
    key = autotune.cache_key(get_backend("numpy"), CONFIG, 1)
    if text == "KEY":  # the right key with an entry of the wrong shape
        text = json.dumps({"version": 1, "entries": {key: {"dtype": "int4", "seconds": 3}}})
    path.write_text(text, encoding="latin-1")
    choice = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert choice.measured and calls
    assert json.loads(path.read_text())["entries"][key]["dtype"] == choice.dtype == "float32"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
@pytest.mark.timeout(60)  # a bound on a hang (opening a FIFO that no one writes), not a speed threshold
def test_a_cache_that_is_a_fifo_is_measured_again_not_waited_on(home, monkeypatch):
    """``autotune.json`` a FIFO (``mkfifo``, a pipe a script left): ``npgpt generate --dtype auto`` waited for a
    writer for ever. It is a cache that cannot be read: measured again, the choice given, nothing written."""
    calls = fake_timer(monkeypatch, {"int8": 0.3e-3})
    home.mkdir()
    os.mkfifo(home / "autotune.json")
    choice = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert choice.measured and calls and choice.dtype == "int8" and choice.cache is None


@pytest.mark.parametrize("seconds", [{"float32": 0.1}, {"float32": 0.1, "int8": 0}, {"float32": 0.1, "int8": "1"}])
def test_a_cached_entry_without_a_usable_time_for_its_choice_is_measured_again(home, monkeypatch, seconds):
    calls = fake_timer(monkeypatch, {})
    path = home / "autotune.json"
    path.parent.mkdir(parents=True)
    key = autotune.cache_key(get_backend("numpy"), CONFIG, 1)
    path.write_text(json.dumps({"version": 1, "entries": {key: {"dtype": "int8", "seconds": seconds}}}))
    choice = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert choice.measured and calls and choice.dtype == "float32"
    assert "float32" in choice.describe()  # was KeyError / ZeroDivisionError


def test_an_unwritable_home_still_gives_the_choice(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("NPGPT_HOME", str(tmp_path / "file" / "home"))  # mkdir fails: a part of the path is a file
    fake_timer(monkeypatch, {"int8": 0.3e-3})
    choice = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert choice.dtype == "int8" and choice.measured and choice.cache is None
    assert "cached" not in choice.describe()


def test_a_storage_whose_library_is_missing_is_skipped(home, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    fake_timer(monkeypatch, {})
    choice = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert set(choice.seconds) == {"float32"} and choice.dtype == "float32"
    assert "npgpt[int8]" in choice.skipped["int8"]  # the reason, with the install hint


def test_every_storage_the_backend_declares_is_a_candidate(home, monkeypatch):
    pytest.importorskip("torch")
    fake_timer(monkeypatch, {"float32": 1e-3, "float16": 0.8e-3, "bfloat16": 0.3e-3, "int8": 0.5e-3})
    backend = get_backend("torch")
    choice = autotune.choose_dtype(backend, CONFIG)
    assert tuple(choice.seconds) == backend.dtypes and choice.dtype == "bfloat16"
    assert choice.describe().startswith("bfloat16 (3.3x float32 at 1 row on this host; measured now; cached in ")


def test_rows_must_be_positive(home):
    with pytest.raises(ValueError, match="rows must be >= 1"):
        autotune.choose_dtype(get_backend("numpy"), CONFIG, rows=0)


def test_auto_is_a_request_not_a_storage():
    from npgpt.backends import AUTO, WEIGHT_DTYPES, check_dtype

    assert AUTO not in WEIGHT_DTYPES
    check_dtype(AUTO, allow_auto=True)
    with pytest.raises(NpgptError, match="dtype='auto' is unknown"):
        check_dtype(AUTO)
    with pytest.raises(NpgptError, match="choose one of .*int8, auto"):
        npgpt.load(bundled_path(), dtype="int4")


def greedy(m: npgpt.api.GPT2) -> str:
    return m.generate("And God said", max_new_tokens=20, temperature=0)


def test_load_auto_gives_one_of_the_backends_dtypes_and_float32s_greedy_text(home):
    m = npgpt.load(bundled_path(), dtype="auto")
    assert m.dtype in m.backend.dtypes and m.dtype_choice is not None
    assert m.dtype == m.dtype_choice.dtype and m.dtype_choice.measured
    assert (home / "autotune.json").is_file()  # cached (for a while only, if doubted)
    assert greedy(m) == greedy(npgpt.load(bundled_path()))
    assert npgpt.load(bundled_path()).dtype_choice is None  # the default stays float32, unmeasured


def test_load_auto_converts_to_the_storage_chosen(home, monkeypatch):
    fake_timer(monkeypatch, {"int8": 0.2e-3})  # int8 is chosen whatever this host measures
    m = npgpt.load(bundled_path(), dtype="auto", auto_rows=3)  # the server measures at its max batch
    assert m.dtype == m.engine.dtype == "int8"
    assert m.dtype_choice is not None and m.dtype_choice.rows == 3 and "rows=3" in m.dtype_choice.key
    assert type(m.params["wte"]).__name__ == "Q8Matrix"  # really converted, not only labelled
    assert greedy(m) == greedy(npgpt.load(bundled_path()))


def test_cli_dtype_auto_names_the_choice(home):
    r = run_cli("generate", "Hi", "--dtype", "auto", "--max-new-tokens", "5", env={"NPGPT_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    line = next(li for li in r.stderr.splitlines() if li.startswith("dtype auto: "))
    assert line.split()[2] in get_backend("numpy").dtypes and "measured now" in line
    trusted = "float32 kept" not in line  # this host may be too busy for its timings to be kept
    r = run_cli("generate", "Hi", "--dtype", "auto", "--max-new-tokens", "5", env={"NPGPT_HOME": str(home)})
    assert r.returncode == 0 and (f"cached in {home / 'autotune.json'}" in r.stderr or not trusted)
    assert "Traceback" not in r.stderr


def test_every_command_that_loads_a_model_offers_dtype_auto_and_keeps_float32_the_default():
    """Every --dtype that picks how a loaded model's weights are stored; not bench's list of storages to
    compare, nor convert's storage of a written file."""
    import typer.main

    from npgpt.cli import app

    offered = set()
    for name, command in typer.main.get_command(app).commands.items():
        for p in command.params:
            if "--dtype" in getattr(p, "opts", ()) and name not in ("bench", "convert"):
                assert "auto" in (p.help or "") and p.default == "float32", name
                offered.add(name)
    assert offered >= {"generate", "next", "chat", "eval", "score", "lens", "attention", "serve"}


def test_serve_measures_at_its_max_batch(home, monkeypatch):
    """The server decodes up to --max-batch rows together, so that is where auto's measurement runs."""
    pytest.importorskip("fastapi")
    from typer.testing import CliRunner

    from npgpt.cli import app
    from npgpt.cli import serve as serve_cli

    fake_timer(monkeypatch, {})
    loaded = []

    def load_model(path, backend, dtype, auto_rows=1, cap_blas=True):
        loaded.append(npgpt.load(path, backend=backend, dtype=dtype, auto_rows=auto_rows))
        raise NpgptError("stop before serving")

    monkeypatch.setattr(serve_cli, "load_model", load_model)
    r = CliRunner().invoke(
        app, ["serve", "--model", str(bundled_path()), "--dtype", "auto", "--max-batch", "5", "--port", "0"]
    )
    assert isinstance(r.exception, NpgptError) and "stop before serving" in str(r.exception), r.output
    assert loaded[0].dtype_choice is not None and loaded[0].dtype_choice.rows == 5


def test_a_busy_machines_measurement_is_not_used_and_not_paid_again_while_busy(home, monkeypatch):
    """int8 was picked at "29.2x float32" on a host at load 4.2 (2 cores) and cached as the machine's truth;
    then a host whose load never fell below its core count kept float32 but measured again on every start."""
    calls = fake_timer(monkeypatch, {"int8": 0.3e-3})
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0 * (os.cpu_count() or 1), 0.0, 0.0))
    busy = f"measured at load {2.0 * (os.cpu_count() or 1):.1f} on {os.cpu_count() or 1} cores"
    first = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert first.dtype == "float32" and first.measured and busy in first.describe()
    assert "measured again after" in first.describe()
    n = len(calls)
    again = autotune.choose_dtype(get_backend("numpy"), CONFIG)  # still busy: the outcome is reused
    assert len(calls) == n and again.dtype == "float32" and not again.measured and busy in again.describe()
    assert again.key == first.key and "cached in" in again.describe()
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    quiet = autotune.choose_dtype(get_backend("numpy"), CONFIG)  # measured again, now trusted
    assert len(calls) > n and quiet.dtype == "int8" and quiet.cache is not None and "load" not in quiet.describe()
    assert quiet.doubt is None and "doubt" not in json.loads((home / "autotune.json").read_text())["entries"][quiet.key]


def test_a_doubted_outcome_expires(home, monkeypatch):
    import time

    calls = fake_timer(monkeypatch, {"int8": 0.3e-3})
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0 * (os.cpu_count() or 1), 0.0, 0.0))
    assert autotune.choose_dtype(get_backend("numpy"), CONFIG).retry_at is not None
    n = len(calls)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + autotune.DOUBT_S + 1)  # an hour later, still busy
    later = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert len(calls) > n and later.measured and later.dtype == "float32"


def test_a_doubted_outcome_never_replaces_a_trusted_one_written_meanwhile(home, monkeypatch):
    """Two processes measured at once: one on a calm moment cached int8 as this machine's truth while the other,
    measuring at a busy one, still ran; the busy one's write (read again, its own entry added) replaced the
    trusted entry with its doubt, so every start kept float32 for an hour. A doubted outcome is now not written
    over a trusted entry: the busy process keeps float32 for itself, not cached, and the next start reads int8."""
    fake_timer(monkeypatch, {"int8": 0.3e-3})
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    trusted = autotune.choose_dtype(get_backend("numpy"), CONFIG, cache=home / "calm.json")
    measure = autotune.measure

    def measured_while_another_wrote(*args, **kwargs):
        entries = {trusted.key: json.loads((home / "calm.json").read_text())["entries"][trusted.key]}
        (home / "autotune.json").write_text(json.dumps({"version": autotune.CACHE_VERSION, "entries": entries}))
        monkeypatch.setattr(os, "getloadavg", lambda: (2.0 * (os.cpu_count() or 1), 0.0, 0.0))  # busy now
        return measure(*args, **kwargs)

    monkeypatch.setattr(autotune, "measure", measured_while_another_wrote)
    busy = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert busy.dtype == "float32" and busy.doubt is not None and busy.cache is None, busy.describe()
    entry = json.loads((home / "autotune.json").read_text())["entries"][busy.key]
    assert entry["dtype"] == "int8" and "doubt" not in entry
    monkeypatch.setattr(autotune, "measure", measure)
    assert autotune.choose_dtype(get_backend("numpy"), CONFIG).dtype == "int8"


def test_an_unwritable_home_still_keeps_float32_when_busy(tmp_path, monkeypatch):
    monkeypatch.setenv("NPGPT_HOME", "/proc/npgpt-home")
    fake_timer(monkeypatch, {"int8": 0.3e-3})
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0 * (os.cpu_count() or 1), 0.0, 0.0))
    choice = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert choice.dtype == "float32" and choice.cache is None and "not cached" in choice.describe()


def noisy_timer(monkeypatch, rounds: list[float]) -> None:
    """float32's products take ``rounds[i]`` ms in the i-th timed round, int8's 0.4 ms."""
    n_products = 4 + 1  # a block's four and the head
    calls = {"float32": 0}

    def timed(product: autotune.Product) -> float:
        if product.dtype != "float32":
            return 0.4e-3
        i = calls["float32"] // n_products
        calls["float32"] += 1
        return rounds[min(i, len(rounds) - 1)] * 1e-3

    monkeypatch.setattr(autotune, "time_product", timed)
    monkeypatch.setattr(autotune, "BUDGET_S", 0.0)  # two rounds, then no more: the fake timer takes no time


def test_rounds_that_disagree_keep_float32_until_measured_again(home, monkeypatch):
    noisy_timer(monkeypatch, [1.0, 4.0])  # round 1 at 1 ms, round 2 at 4 ms: median 2.5x the best
    choice = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert choice.dtype == "float32" and "noisy" in choice.describe() and choice.retry_at is not None
    noisy_timer(monkeypatch, [1.0, 1.05])
    assert autotune.choose_dtype(get_backend("numpy"), CONFIG).dtype == "float32"  # the doubt is kept a while
    monkeypatch.setattr(autotune, "DOUBT_S", 0.0)
    assert autotune.choose_dtype(get_backend("numpy"), CONFIG).dtype == "int8"  # 2.5x, steady: trusted


def test_a_gain_past_what_the_bytes_allow_is_not_believed(home, monkeypatch):
    fake_timer(monkeypatch, {"float32": 29.2e-3, "int8": 1e-3})  # the 29.2x
    choice = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert choice.dtype == "float32" and choice.doubt is not None
    assert "int8 timed 29.2x float32, more than its bytes allow" in choice.describe()
    assert autotune.doubt({"float32": 1.0, "int8": 0.2}, {}, 0.0, 2) is None  # 5x: an int8 kernel can


def test_a_cached_measurement_an_older_npgpt_trusted_is_measured_again(home, monkeypatch):
    calls = fake_timer(monkeypatch, {})
    path = home / "autotune.json"
    path.parent.mkdir(parents=True)
    key = autotune.cache_key(get_backend("numpy"), CONFIG, 1)
    entry = {"dtype": "int8", "seconds": {"float32": 29.2, "int8": 1.0}, "load": 4.2}
    path.write_text(json.dumps({"version": autotune.CACHE_VERSION, "entries": {key: entry}}))
    choice = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert choice.measured and calls and choice.dtype == "float32"
    assert json.loads(path.read_text())["entries"][key]["dtype"] == "float32"


@pytest.mark.parametrize("version", [2, None, "1"], ids=["newer", "none", "string"])
def test_a_cache_of_another_layout_is_not_read_back(home, monkeypatch, version):
    """A newer npgpt's file (or one without a version) was read as this one's: its entry's choice came back."""
    calls = fake_timer(monkeypatch, {})
    path = home / "autotune.json"
    path.parent.mkdir(parents=True)
    key = autotune.cache_key(get_backend("numpy"), CONFIG, 1)
    entry = {"dtype": "int8", "seconds": {"float32": 1.0, "int8": 0.1}}
    path.write_text(json.dumps({"version": version, "entries": {key: entry}}))
    choice = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert choice.measured and calls and choice.dtype == "float32"
    assert json.loads(path.read_text())["version"] == autotune.CACHE_VERSION


def test_a_choice_measured_under_another_npgpt_is_not_read_back(home, monkeypatch):
    fake_timer(monkeypatch, {"int8": 0.3e-3})
    assert autotune.choose_dtype(get_backend("numpy"), CONFIG).dtype == "int8"
    monkeypatch.setattr(npgpt, "__version__", "99.0")  # its kernels may differ: measured again
    calls = fake_timer(monkeypatch, {})
    choice = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    assert choice.measured and calls and choice.dtype == "float32"


def test_an_entry_another_process_writes_while_this_one_measures_is_kept(home, monkeypatch):
    other = autotune.cache_key(get_backend("numpy"), CONFIG, rows=4)
    measure = autotune.measure

    def measured_meanwhile(backend, config, rows):
        if rows == 1:  # the other process finishes its rows=4 measurement during this one's
            autotune.choose_dtype(backend, config, rows=4)
        return measure(backend, config, rows)

    fake_timer(monkeypatch, {})
    monkeypatch.setattr(autotune, "measure", measured_meanwhile)
    mine = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    entries = json.loads((home / "autotune.json").read_text())["entries"]
    assert set(entries) == {mine.key, other}  # the other's entry was written over with the stale copy


def test_a_doubt_for_the_load_is_read_from_its_flag_not_its_words(home, monkeypatch):
    """Whether a cached doubt was for the machine's load (measured again once it calms) was read from its message's
    first words ("measured at load"): rewording the message would have kept every such doubt for its full hour. The
    entry carries ``"busy": true``; the words are for people."""
    import time

    calls = fake_timer(monkeypatch, {"int8": 0.3e-3})
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0 * (os.cpu_count() or 1), 0.0, 0.0))
    first = autotune.choose_dtype(get_backend("numpy"), CONFIG)
    data = json.loads((home / "autotune.json").read_text())
    assert data["entries"][first.key]["busy"] is True
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    for busy, words, measured in [(True, "the host was busy", True), (False, "measured at load 9.0 on 2 cores", False)]:
        data["entries"][first.key].update(busy=busy, doubt=words, retry_at=time.time() + 600)
        (home / "autotune.json").write_text(json.dumps(data))
        n = len(calls)
        choice = autotune.choose_dtype(get_backend("numpy"), CONFIG)
        assert (len(calls) > n) is measured and choice.measured is measured, (busy, words)
