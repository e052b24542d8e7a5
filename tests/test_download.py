"""Downloads against a real HTTP server on 127.0.0.1: complete, cut and resumed, corrupt, offline.

The server serves a tiny random GPT-2 in OpenAI's layout, answers ``Range`` requests with 206,
and can be told to close a transfer after N bytes, to flip a byte of a file, or to ignore
``Range`` and answer 200 as some servers do.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from npgpt import download, registry
from npgpt.config import GPT2Config
from npgpt.errors import CheckpointError, NpgptError
from npgpt.formats import hf, npgpt_format, openai_tf
from npgpt.model import gpt2
from npgpt.params import init_params

CONFIG = GPT2Config(n_vocab=96, n_ctx=16, n_embd=32, n_head=4, n_layer=2)
DATA = "model.ckpt.data-00000-of-00001"  # ~120 KB for CONFIG
IDS = np.array([[5, 17, 3, 95, 0, 42]])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Params, and a directory serving them as OpenAI's ``124M``."""
    root = tmp_path_factory.mktemp("openai")
    params = init_params(CONFIG, seed=1)
    openai_tf.save(root / "124M", CONFIG, params)
    return params, root


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut: dict[str, int] = {}  # file name -> bytes sent before the connection closes (once)
        self.corrupt: set[str] = set()  # file names served with one byte flipped
        self.ignore_range = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address):  # a client gone mid-transfer is expected
        pass


class Handler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self):
        srv, rng = self.server, self.headers.get("Range")
        srv.requests.append((self.path, rng))
        path = srv.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = bytearray(path.read_bytes())
        if path.name in srv.corrupt:
            data[len(data) // 2] ^= 0xFF
        start = 0
        asked = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if asked and not srv.ignore_range:
            start = int(asked[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = bytes(data[start:])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # HTTP/1.0: the connection closes when the handler returns, so a cut body arrives short.
        self.wfile.write(body[: srv.cut.pop(path.name, len(body))])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(source):
    srv = FileServer(source[1])
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NPGPT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def assert_same_model(path: Path, params) -> None:
    config, loaded = npgpt_format.load(path)
    assert config == CONFIG
    np.testing.assert_array_equal(gpt2(IDS, loaded, CONFIG)[0], gpt2(IDS, params, CONFIG)[0])


def data_requests(srv: FileServer) -> list[str | None]:
    return [rng for path, rng in srv.requests if path.endswith(DATA)]


def test_download_converts_once_and_matches_the_source(server, source, cache):
    calls = []
    path = download.download_openai("124M", base_url=server.url, progress=lambda *a: calls.append(a))
    assert path == cache / "124M" / "model.safetensors"
    assert_same_model(path, source[0])
    assert sorted(p for p, _ in server.requests) == sorted(f"/124M/{f}" for f in download.OPENAI_FILES)
    assert data_requests(server) == [None]
    size = (source[1] / "124M" / DATA).stat().st_size
    assert calls[-1][0] == "model.safetensors" and (DATA, size, size) in calls
    assert not (cache / "downloads").exists()  # originals are gone once converted
    # Converted already: the alias resolves to it with no request at all.
    assert download.download_openai("gpt2", base_url=server.url) == path
    assert len(server.requests) == 3


@pytest.mark.parametrize("damage", ["truncated", "empty", "not-npgpt"])
def test_a_damaged_converted_model_is_downloaded_again_not_returned(server, source, cache, damage):
    """A converted model cut short in the cache (a disk that filled, a copy that broke): loading it said "truncated;
    re-download or re-convert it", and `npgpt download 124M` said "saved ...", exit 0, and changed nothing: the file
    existed. A converted file that is not a whole npgpt file is fetched and converted again."""
    path = download.download_openai("124M", base_url=server.url)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:-100], "empty": b"", "not-npgpt": b"<html>502</html>"}[damage])
    again = download.download_openai("124M", base_url=server.url)
    assert again == path and len(data_requests(server)) == 2
    assert_same_model(again, source[0])


def test_cut_transfer_resumes_on_the_next_run(server, source, cache):
    server.cut[DATA] = 50_000
    with pytest.raises(NpgptError, match="stopped at 50,000 of .* run the same command again to resume"):
        download.download_openai("124M", base_url=server.url, retries=0)
    part = cache / "downloads" / "openai" / "124M" / f"{DATA}.part"
    assert part.stat().st_size == 50_000
    assert not (cache / "124M").exists()
    path = download.download_openai("124M", base_url=server.url)
    assert data_requests(server) == [None, "bytes=50000-"]
    assert_same_model(path, source[0])


@pytest.mark.parametrize("ignore_range", [False, True], ids=["206", "200-restarts"])
def test_cut_transfer_is_retried_within_one_call(server, source, ignore_range):
    server.cut[DATA] = 30_000
    server.ignore_range = ignore_range  # a server that ignores Range sends it all again: start over
    path = download.download_openai("124M", base_url=server.url)
    assert data_requests(server) == [None, "bytes=30000-"]
    assert_same_model(path, source[0])


@pytest.mark.parametrize("extra", [0, 7], ids=["complete-part", "oversized-part"])
def test_part_file_not_shorter_than_the_file(server, source, cache, extra):
    # The server answers 416 to a Range past the end: a .part of exactly the file's size was
    # complete (the rename never happened); a longer one is garbage and is fetched again.
    staging = cache / "downloads" / "openai" / "124M"
    staging.mkdir(parents=True)
    full = (source[1] / "124M" / DATA).read_bytes()
    (staging / f"{DATA}.part").write_bytes(full + b"x" * extra)
    path = download.download_openai("124M", base_url=server.url)
    assert data_requests(server) == [f"bytes={len(full) + extra}-"] + ([None] if extra else [])
    assert_same_model(path, source[0])


def test_a_second_process_cannot_write_the_same_download(server, cache):
    fcntl = pytest.importorskip("fcntl")
    staging = cache / "downloads" / "openai" / "124M"
    staging.mkdir(parents=True)
    fd = os.open(staging, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # flock locks belong to the open file, so this "is" another process
        with pytest.raises(NpgptError, match="another npgpt process is downloading GPT-2 124M"):
            download.download_openai("124M", base_url=server.url)
    finally:
        os.close(fd)
    assert server.requests == []


def test_rm_of_a_model_being_downloaded_is_refused_and_the_download_ends_whole(server, source, cache):
    """``npgpt rm 124M`` while ``npgpt download 124M`` ran deleted the folder the download was writing into; the
    download then ended as "internal error: [Errno 2] No such file or directory: '.../hparams.json.part'". rm now
    refuses a model whose download holds its folder, in one line, and the download ends whole."""
    pytest.importorskip("fcntl")
    refused: list[str] = []

    def progress(name, done, total):
        if name == DATA and done and not refused:  # the weights arriving: another process runs rm now
            with pytest.raises(NpgptError) as e:
                registry.remove("124M")
            refused.append(str(e.value))

    path = download.download_openai("124M", base_url=server.url, progress=progress)
    assert refused and "being downloaded by another npgpt process" in refused[0] and "\n" not in refused[0]
    assert_same_model(path, source[0])
    assert registry.remove("124M") == [cache / "124M"]  # once the download ended, rm removes it

    def removed_by_hand(name, done, total):  # rm -r of the cache, which takes no lock: one line still
        if name == DATA and done and (cache / "downloads").exists():
            shutil.rmtree(cache / "downloads")

    with pytest.raises(NpgptError, match=f"cannot write .*{DATA}: No such file or directory") as e:
        download.download_openai("124M", base_url=server.url, progress=removed_by_hand)
    assert "\n" not in str(e.value)


def test_corrupt_download_is_rejected_deleted_then_refetched(server, source, cache):
    server.corrupt.add(DATA)
    with pytest.raises(CheckpointError, match="corrupt.*crc32c.*run the same command again"):
        download.download_openai("124M", base_url=server.url)
    assert not (cache / "124M").exists()
    assert list(cache.rglob("*.safetensors")) == []
    assert not (cache / "downloads" / "openai" / "124M" / DATA).exists()
    with pytest.raises(NpgptError, match="not downloaded"):
        registry.resolve("124M")
    server.corrupt.clear()
    assert_same_model(download.download_openai("124M", base_url=server.url), source[0])
    assert data_requests(server) == [None, None]


def test_unreachable_server_is_one_line_with_what_to_do(cache):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NpgptError) as e:
        download.download_openai("355M", base_url=f"http://127.0.0.1:{port}", timeout=5)
    msg = str(e.value)
    assert "\n" not in msg and f"127.0.0.1:{port}/355M/hparams.json" in msg
    assert (
        "check your connection" in msg and "path of a checkpoint" in msg and "--model" not in msg
    )  # download has none
    assert list(cache.rglob("*.safetensors")) == []


def test_http_error_and_unknown_name(server):
    with pytest.raises(NpgptError, match="HTTP 404"):
        download.download_openai("774M", base_url=server.url)
    with pytest.raises(NpgptError, match="124M, 355M, 774M, 1558M, gpt2"):
        download.download_openai("125M", base_url=server.url)


def test_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert registry.home() == tmp_path / "home"
    monkeypatch.delenv("NPGPT_HOME")
    assert registry.home() == tmp_path / "xdg" / "npgpt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert registry.home() == tmp_path / "user" / ".cache" / "npgpt"


def test_an_empty_home_variable_is_the_default_and_the_help_says_so(monkeypatch, tmp_path):
    """``NPGPT_HOME=`` (an empty export in a script) counts as unset, as XDG says of its own variables: the default
    cache, not the current folder. It did so unsaid; the help of download and list and the README now say it."""
    monkeypatch.setenv("NPGPT_HOME", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert registry.home() == tmp_path / "user" / ".cache" / "npgpt"
    for command in ("download", "list"):
        r = run_cli(command, "--help", env={"COLUMNS": "200"})
        assert "`$NPGPT_HOME`; unset or empty: $XDG_CACHE_HOME/npgpt" in r.stdout, r.stdout
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "`$NPGPT_HOME` (unset or empty: `$XDG_CACHE_HOME/npgpt`" in readme


@pytest.mark.parametrize("variable", ["NPGPT_HOME", "XDG_CACHE_HOME"])
def test_a_home_of_an_unknown_user_is_one_line(monkeypatch, variable):
    """``NPGPT_HOME=~nosuchuser/x`` ended every command as "internal error: Could not determine home directory."
    (Python's RuntimeError from expanding it)."""
    monkeypatch.delenv("NPGPT_HOME")
    monkeypatch.setenv(variable, "~npgpt-no-such-user/cache")
    with pytest.raises(NpgptError, match=rf"{variable}='~npgpt-no-such-user/cache' names a home folder that cannot"):
        registry.home()
    r = run_cli("list", env={variable: "~npgpt-no-such-user/cache"})
    assert r.returncode == 1 and r.stderr.startswith("error: cannot place npgpt's cache"), r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_a_relative_home_keeps_naming_the_same_folder_after_a_chdir(server, source, monkeypatch, tmp_path):
    """A relative NPGPT_HOME was used as given: the path a download returned was relative too, and named
    another file once the program changed directory."""
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("NPGPT_HOME", "cache")
    path = download.download_openai("124M", base_url=server.url)
    assert path == tmp_path / "work" / "cache" / "124M" / npgpt_format.MODEL_FILE
    monkeypatch.chdir(tmp_path)
    assert path.is_file()
    assert_same_model(path, source[0])


@pytest.fixture
def bundled(tmp_path, monkeypatch):
    path = tmp_path / "bundled.safetensors"
    monkeypatch.setattr(registry, "bundled_path", lambda: path)
    return path


def fake_model(cache: Path, name: str) -> Path:
    path = cache / name / "model.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # resolve only picks files; loading is not its job
    return path


def test_resolve_rules(cache, bundled, tmp_path):
    own = tmp_path / "mine.safetensors"
    own.write_bytes(b"")
    assert registry.resolve(str(own)) == (own, None)
    with pytest.raises(NpgptError, match=r"model 124M is not downloaded; run `npgpt download 124M`"):
        registry.resolve("gpt2")
    with pytest.raises(NpgptError, match="bundled model is missing"):
        registry.resolve(None)
    bundled.write_bytes(b"")
    path, notice = registry.resolve(None)
    assert path == bundled and "bundled" in notice and "npgpt download 124M" in notice
    assert registry.resolve("bundled") == (bundled, None)
    m355 = fake_model(cache, "355M")
    assert registry.resolve(None) == (m355, None)
    m124 = fake_model(cache, "124M")
    assert registry.resolve(None) == (m124, None)  # the smallest GPT-2 downloaded
    assert registry.resolve("gpt2-medium") == (m355, None)
    assert registry.resolve("gpt2-small") == (m124, None)  # TransformerLens's name for it
    with pytest.raises(NpgptError, match=r"npgpt download --hf org/tiny"):
        registry.resolve("org/tiny")
    with pytest.raises(NpgptError, match="available: 124M, 355M, bundled"):
        registry.resolve("nonsense")
    assert registry.list_cached() == [("124M", m124), ("355M", m355)]


@pytest.mark.parametrize(
    "path", ["./gpt2.safetensors", "../models/ckpt.pt", "/no/such/model.gguf", "~/gpt2", r"C:\models\gpt2", "a/b/c"]
)
def test_a_missing_path_is_not_offered_as_a_repo_to_download(cache, path):
    """A path that names no file was told to `npgpt download --hf ./gpt2.safetensors`, a repo id the Hub refuses."""
    with pytest.raises(NpgptError) as e:
        registry.resolve(path)
    assert str(e.value) == f"no such file or directory: {path}"


@pytest.mark.parametrize(
    "name",
    ["org/tiny", "openai-community/gpt2", "a/b", "o/x.y_z-1", "./x", "../x", "org/.hidden", "org/x-", "-o/x", "o/x.git",
     "o--r/x", "o/x..y", "o/" + "x" * 97, "café/gpt2", "o/x/y", "o/", "/x", "gpt2"],
)  # fmt: skip
def test_repo_ids_are_the_ones_huggingface_hub_accepts(name):
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
        hub_accepts = "/" in name  # npgpt takes ORG/NAME only
    except HFValidationError:
        hub_accepts = False
    assert bool(registry._REPO_ID.fullmatch(name)) == hub_accepts, name


def test_download_hf_converts_once(monkeypatch, tmp_path, cache, source):
    import huggingface_hub

    snapshot = hf.save(tmp_path / "snapshot", CONFIG, source[0])
    fetched = []

    def fake_hf_hub_download(repo_id, filename, *, revision=None, tqdm_class=None):
        from huggingface_hub.errors import EntryNotFoundError

        fetched.append((repo_id, filename, revision))
        if not (snapshot / filename).is_file():
            raise EntryNotFoundError(f"404 Client Error. Entry Not Found for url: .../{filename}")
        size = (snapshot / filename).stat().st_size
        bar = tqdm_class(total=size, initial=0, unit="B", unit_scale=True, desc=filename)
        bar.update(size)
        bar.close()
        return str(snapshot / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    calls = []
    path = download.download_hf("org/tiny", progress=lambda *a: calls.append(a))
    assert path == cache / "hf" / "org--tiny" / "model.safetensors"
    assert_same_model(path, source[0])
    size = (snapshot / "model.safetensors").stat().st_size
    assert ("model.safetensors", size, size) in calls and ("config.json", 0, calls[0][2]) == calls[0]
    n = len(fetched)  # config.json, the tokenizer files the repo may have, the weights
    assert download.download_hf("org/tiny") == path and len(fetched) == n  # converted once
    assert registry.resolve("org/tiny") == (path, None)
    assert registry.list_cached() == [("org/tiny", path)]
    with pytest.raises(NpgptError, match="not a Hugging Face repo id"):
        download.download_hf("../escape")


def test_download_hf_onto_a_full_disk_leaves_no_empty_folder_in_the_cache(monkeypatch, tmp_path, cache, source):
    """The Hub's files arrived, the conversion's write failed (a full disk): the one-line error left an empty
    hf/ORG--NAME folder in npgpt's cache (the OpenAI download already removed its own)."""
    import errno

    import huggingface_hub

    from npgpt import files

    snapshot = hf.save(tmp_path / "snapshot", CONFIG, source[0])
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo_id, filename, **kw: str(snapshot / filename))

    def full(tmp, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "publish", full)
    with pytest.raises(NpgptError, match="No space left on device; free some space"):
        download.download_hf("org/tiny")
    assert not (cache / "hf").exists(), list((cache / "hf").iterdir())  # nor the hf/ folder made for it


def test_rm_of_a_hf_model_being_converted_is_refused_and_the_download_ends_whole(monkeypatch, tmp_path, cache, source):
    """``npgpt rm org/tiny`` while ``npgpt download --hf org/tiny`` converted it deleted the folder holding the
    conversion's temp file, and the download ended "cannot write .../model.safetensors: No such file or directory";
    a second download of the same repo meanwhile converted it again alongside. The model's folder is locked as
    the OpenAI download's is: rm and the second download are refused in one line, the first ends whole."""
    pytest.importorskip("fcntl")
    import huggingface_hub

    from npgpt import files

    snapshot = hf.save(tmp_path / "snapshot", CONFIG, source[0])
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo_id, filename, **kw: str(snapshot / filename))
    refused: list[str] = []
    real = files.publish

    def publish(tmp, path):  # the converted file is written, not yet renamed: another process runs now
        if Path(path).name == "model.safetensors" and not refused:
            for other in (lambda: registry.remove("org/tiny"), lambda: download.download_hf("org/tiny")):
                with pytest.raises(NpgptError) as e:
                    other()
                refused.append(str(e.value))
        real(tmp, path)

    monkeypatch.setattr(files, "publish", publish)
    path = download.download_hf("org/tiny")
    assert "being downloaded by another npgpt process" in refused[0]
    assert "another npgpt process is downloading org/tiny" in refused[1]
    assert not any("\n" in r for r in refused)
    assert_same_model(path, source[0])
    assert registry.remove("org/tiny") == [cache / "hf" / "org--tiny"]  # once the download ended, rm removes it


def test_download_hf_offline_is_one_line(monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError

    def offline(repo_id, filename, **kw):
        raise LocalEntryNotFoundError("Cannot reach the Hub.\nSecond line of detail.")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(NpgptError) as e:
        download.download_hf("org/tiny", revision="v1")
    msg = str(e.value)
    # npgpt download has no --model: the hint names none (31436e3), it says to give a checkpoint's path
    assert "\n" not in msg and "org/tiny/config.json at revision v1" in msg and download.OFFLINE_HINT in msg
    assert "--model" not in msg


HUB_PARAGRAPH = (
    "An error happened while trying to locate the file on the Hub and we cannot find the requested files in the "
    "local cache. Please check your connection and try again or make sure your Internet connection is on."
)


@pytest.mark.parametrize("hub_offline", [False, True])
def test_download_hf_offline_names_the_cause_not_the_hubs_paragraph(monkeypatch, hub_offline):
    """Offline, npgpt download --hf printed huggingface_hub's paragraph ("... Please check your connection ...")
    then its own "check your connection": the cause (DNS: "Name or service not known") was in the error it wraps.
    With HF_HUB_OFFLINE=1 set (as clusters do) it said the same, sending the user to a connection that works."""
    import socket

    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import LocalEntryNotFoundError

    def offline(repo_id, filename, **kw):
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except OSError as e:
            raise LocalEntryNotFoundError(HUB_PARAGRAPH) from e

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", hub_offline)
    with pytest.raises(NpgptError) as e:
        download.download_hf("org/tiny")
    msg = str(e.value)
    assert "\n" not in msg and "Please check your connection" not in msg, msg
    if hub_offline:
        assert "HF_HUB_OFFLINE is set" in msg and "unset HF_HUB_OFFLINE" in msg and "connection" not in msg, msg
    else:
        assert "Hugging Face Hub (Name or service not known); check your connection" in msg, msg


def test_conversion_onto_a_full_disk_is_one_line_and_keeps_the_download(server, source, tmp_path, monkeypatch):
    """The download fits, its conversion does not: one line, no half-written model, and the next run (with
    room) converts without fetching again. Needs a small tmpfs (root can mount one); skipped, with the
    reason printed, where mounting is not allowed."""
    import subprocess

    from conftest import small_disk

    data = (source[1] / "124M" / DATA).stat().st_size
    with small_disk(tmp_path / "disk", f"{data * 3 // 2 // 4096 * 4}k") as disk:
        monkeypatch.setenv("NPGPT_HOME", str(disk))
        with pytest.raises(NpgptError) as e:
            download.download_openai("124M", base_url=server.url)
        assert "No space left on device" in str(e.value) and "\n" not in str(e.value)
        assert not (disk / "124M").exists()  # no model, no temp file: nothing half-written
        staged = disk / "downloads" / "openai" / "124M"
        assert sorted(p.name for p in staged.iterdir() if not p.name.startswith(".")) == sorted(download.OPENAI_FILES)
        fetched = len(server.requests)
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        path = download.download_openai("124M", base_url=server.url)
        assert len(server.requests) == fetched  # converted from what was already downloaded
        assert_same_model(path, source[0])


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("ENOSPC", "No space left on device; free some space or"),
        ("EDQUOT", "Disk quota exceeded; free some space or"),
        ("EROFS", "read-only file system;"),
        ("EACCES", "permission denied;"),
        ("ENOTDIR", "a part of the path is a file, not a folder;"),
    ],
)
def test_a_failed_download_write_says_it_as_every_writer_does(server, cache, monkeypatch, code, why):
    """Downloads had their own twin of files' message: it gave every errno but a full disk as the OS's bare
    text ("Not a directory", "Read-only file system"); only the fix differs, set NPGPT_HOME."""
    import errno

    num = getattr(errno, code)

    def fail(*args, **kwargs):
        raise OSError(num, os.strerror(num))

    monkeypatch.setattr(npgpt_format, "save", fail)
    with pytest.raises(NpgptError) as e:
        download.download_openai("124M", base_url=server.url)
    target = cache / "124M" / npgpt_format.MODEL_FILE
    assert str(e.value) == f"cannot write {target}: {why} set NPGPT_HOME to a folder you can write to"


def test_a_web_page_served_in_place_of_the_files_says_so(tmp_path, cache):
    """A network's login page (a hotel's, a captive portal) answers every URL with HTML: the download was called
    corrupt and "run the same command again" was advised, which fetches the same page. It says a web page came."""
    root = tmp_path / "portal"
    (root / "124M").mkdir(parents=True)
    for name in download.OPENAI_FILES:
        (root / "124M" / name).write_text("<!DOCTYPE html><html><body>Log in to use the Wi-Fi</body></html>")
    srv = FileServer(root)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with pytest.raises(NpgptError) as e:
            download.download_openai("124M", base_url=srv.url)
    finally:
        srv.shutdown()
        srv.server_close()
    said = str(e.value)
    assert said.startswith(f"{srv.url}/124M/hparams.json sent a web page (HTML), not the file"), said
    assert "sign in to the network" in said and "again" not in said.split(";")[0]
    assert not (cache / "124M").exists() and not list(cache.rglob("hparams.json"))


@pytest.mark.parametrize(
    "given, repo",
    [
        ("https://huggingface.co/openai-community/gpt2", "openai-community/gpt2"),
        ("huggingface.co/distilbert/distilgpt2/tree/main", "distilbert/distilgpt2"),
        ("https://hf.co/openai-community/gpt2-medium?library=transformers", "openai-community/gpt2-medium"),
    ],
)
def test_a_pasted_hub_url_names_the_repo_id_in_it(given, repo, tmp_path, monkeypatch):
    """npgpt download --hf https://huggingface.co/openai-community/gpt2, a repo's address pasted from the browser,
    was refused with only 'expected ORG/NAME, e.g. openai-community/gpt2': it now names the id in the URL."""
    from npgpt.registry import hf_dir

    monkeypatch.setenv("NPGPT_HOME", str(tmp_path))
    with pytest.raises(NpgptError, match=f"give the repo id in it: {repo}$"):
        hf_dir(given)
    r = run_cli("download", "--hf", given, env={"NPGPT_HOME": str(tmp_path)})
    assert r.returncode == 1 and f"give the repo id in it: {repo}" in r.stderr and "Traceback" not in r.stderr


def test_a_hub_url_as_model_says_to_download_it_by_its_id(tmp_path):
    """--model https://huggingface.co/openai-community/gpt2 said only 'no such file or directory': it names the
    download and the --model value to use."""
    r = run_cli("info", "https://huggingface.co/openai-community/gpt2", env={"NPGPT_HOME": str(tmp_path)})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "npgpt download --hf openai-community/gpt2`, then load it by its name, openai-community/gpt2" in r.stderr


def test_a_revision_for_openais_files_is_refused_not_ignored(tmp_path):
    """npgpt download 124M --revision v2 went on to fetch OpenAI's only version, the --revision silently dropped
    (it pins a --hf repo). It is refused before anything is fetched or made in the cache."""
    r = run_cli("download", "124M", "--revision", "v2", env={"NPGPT_HOME": str(tmp_path / "home")})
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "error: --revision v2 is for a --hf repo; OpenAI's 124M has one version: drop --revision" in r.stderr
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("size", ["355M", "774M"], ids=["unreachable", "http-404"])
def test_a_failed_download_with_nothing_to_resume_leaves_no_empty_folder(server, cache, size):
    """A download that failed before a byte arrived left downloads/openai/<size> (and its parents) empty
    behind, in the cache for ever."""
    cache.mkdir(parents=True)
    url = server.url
    if size == "355M":
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(NpgptError):
        download.download_openai(size, base_url=url, timeout=5)
    assert list(cache.iterdir()) == []


def test_a_cut_download_keeps_its_part_file_to_resume(server, cache):
    server.cut[DATA] = 5000
    with pytest.raises(NpgptError, match="run the same command again to resume"):
        download.download_openai("124M", base_url=server.url, retries=0)
    assert (cache / "downloads" / "openai" / "124M" / f"{DATA}.part").stat().st_size == 5000


def test_a_folder_removed_and_made_again_while_locking_is_locked_anew(server, cache, monkeypatch):
    """The folder's lock is its holder's to remove the folder by: a process that opened it just before a failed
    holder removed it, and locked it after, held a lock on a folder gone while a third process made the path
    again and downloaded into it; two processes then appended to the same .part file."""
    fcntl = pytest.importorskip("fcntl")
    staging = cache / "downloads" / "openai" / "124M"
    real_open, held = os.open, []

    def racing_open(path, flags, *args):
        fd = real_open(path, flags, *args)
        if Path(path) == staging and not held:  # removed and made again by others, and locked by the third
            os.rmdir(staging)
            staging.mkdir()
            held.append(real_open(staging, os.O_RDONLY))
            fcntl.flock(held[0], fcntl.LOCK_EX)
        return fd

    monkeypatch.setattr(os, "open", racing_open)
    try:
        with pytest.raises(NpgptError, match="another npgpt process is downloading GPT-2 124M"):
            download.download_openai("124M", base_url=server.url)
    finally:
        monkeypatch.undo()
        for fd in held:
            os.close(fd)
    assert server.requests == []


def test_a_fetched_file_is_synced_before_it_is_renamed_into_place(server, cache, monkeypatch):
    """The .part was renamed to its name without an fsync: after a power loss the file could be there but empty,
    and the next run skipped it as fetched, failed its conversion and fetched every file afresh."""
    from npgpt import files

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = files._fsync, os.replace

    def fsync(path, flags):
        events.append(("sync", str(path)))
        real_fsync(path, flags)

    monkeypatch.setattr(files, "_fsync", fsync)
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("rename", str(a))), real_replace(a, b)))
    download.download_openai("124M", base_url=server.url)
    for name in download.OPENAI_FILES:
        part = str(cache / "downloads" / "openai" / "124M" / f"{name}.part")
        assert ("sync", part) in events and events.index(("sync", part)) < events.index(("rename", part)), name
