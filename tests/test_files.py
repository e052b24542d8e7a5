"""npgpt/files.py: a failed write leaves the old file; a finished one has normal permissions."""

import errno
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import resident_kb

from npgpt import files
from npgpt.config import GPT2Config
from npgpt.files import atomic_path


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        open(tmp, "w").write("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temp file left behind


def test_finished_write_replaces_with_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    old = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            open(tmp, "w").write("new")
    finally:
        os.umask(old)
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o644


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temp_files_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    dead = tmp_path / f".model.safetensors.{_dead_pid()}.k3j2.tmp"
    live = tmp_path / f".model.safetensors.{os.getpid()}.x1y2.tmp"  # a write in progress in this process
    other = tmp_path / ".notes.tmp"  # not npgpt's naming: never touched
    for p in (dead, live, other):
        p.write_bytes(b"x" * 1000)
    with atomic_path(tmp_path / "other.bin") as tmp:
        open(tmp, "w").write("new")
    assert not dead.exists() and live.exists() and other.exists()


def test_another_machines_temp_file_in_a_shared_folder_is_left_to_its_writer(tmp_path):
    """A folder shared between machines (a cluster's home on NFS): a write on one removed the temp file of another
    machine's write in progress (6 GB into a 1558M conversion) because that process id was not alive here. Another
    machine's temp file is now removed only when left untouched for a day."""
    from npgpt import files

    pid = _dead_pid()  # dead here, maybe alive there
    writing = tmp_path / f".model.safetensors.{pid}@other-node-7.k3j2.tmp"
    abandoned = tmp_path / f".gpt2.gguf.{pid}@other-node-7.z9y8.tmp"
    mine = tmp_path / f".model.safetensors.{pid}@{files._host()}.a1b2.tmp"  # this machine's, dead: removed
    for p in (writing, abandoned, mine):
        p.write_bytes(b"x" * 1000)
    old = os.stat(abandoned).st_mtime - files.OTHER_HOST_STALE_S - 60
    os.utime(abandoned, (old, old))
    with atomic_path(tmp_path / "other.bin") as tmp:
        assert f".{os.getpid()}@{files._host()}." in os.path.basename(tmp)
        open(tmp, "w").write("new")
    assert writing.exists() and not abandoned.exists() and not mine.exists()


def test_a_killed_writer_leaves_a_temp_file_that_the_next_run_removes(tmp_path):
    import signal
    import subprocess
    import sys

    code = (
        "import sys, time\nfrom npgpt.files import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    open(tmp, 'wb').write(b'x' * 100000)\n    print('writing', flush=True)\n    time.sleep(60)\n"
    )
    target = tmp_path / "model.safetensors"
    target.write_text("old")
    p = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "writing\n"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert len(list(tmp_path.glob(".model.safetensors.*.tmp"))) == 1  # what SIGKILL leaves behind
    assert target.read_text() == "old"
    with atomic_path(target) as tmp:
        open(tmp, "w").write("new")
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"] and target.read_text() == "new"


def test_a_writer_killed_inside_safetensors_leaves_nothing_the_next_write_keeps(tmp_path):
    """safetensors' save_file writes its own temp file (``.tmpXXXXXX``, Rust's tempfile naming) beside the path it
    is given and renames it there (strace: openat(".../.tmpSkCzlz", O_CREAT|O_EXCL), renameat(..., path)), so a
    run killed while its state was written left a file the size of the whole state (82 MB for a 2-layer,
    128-wide run; 1.5 GB for 124M) in the run folder under a name no cleanup knows. The library now writes inside
    a folder of npgpt's naming, which the next write to the folder removes. The child stands in for the library:
    it makes its temp file as the library does, then is killed."""
    import signal
    import subprocess
    import sys

    from npgpt.formats import npgpt_format
    from npgpt.params import init_params

    code = (
        "import os, sys, time\nimport safetensors.numpy\n"
        "from npgpt.config import GPT2Config\nfrom npgpt.formats import npgpt_format\n"
        "from npgpt.params import init_params\n"
        "def save_file(tensors, path, metadata=None):\n"
        "    open(os.path.join(os.path.dirname(path), '.tmpSkCzlz'), 'wb').write(b'x' * 100000)\n"
        "    print('writing', flush=True)\n    time.sleep(60)\n"
        "safetensors.numpy.save_file = save_file\n"
        "config = GPT2Config(n_vocab=8, n_ctx=4, n_embd=4, n_head=1, n_layer=1)\n"
        "npgpt_format.save(sys.argv[1], config, init_params(config))\n"
    )
    target = tmp_path / "model.safetensors"
    target.write_text("old")
    p = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "writing\n"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert target.read_text() == "old"
    config = GPT2Config(n_vocab=8, n_ctx=4, n_embd=4, n_head=1, n_layer=1)
    npgpt_format.save(target, config, init_params(config))
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_data_and_directory_are_synced_around_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os, "fsync", lambda fd: (calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))
    )
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", str(b))), real_replace(a, b)))
    target = tmp_path / "out.bin"
    with atomic_path(target) as tmp:
        open(tmp, "w").write("new")
    kinds = [(k, Path(p).name if k == "fsync" else p) for k, p in calls]
    assert kinds[0][0] == "fsync" and kinds[0][1].startswith(".out.bin.")  # the data, before the rename
    assert kinds[1] == ("replace", str(target))
    assert kinds[2] == ("fsync", tmp_path.name)  # the directory entry, after it


@pytest.fixture
def small_disk(tmp_path):  # a 4 MiB tmpfs
    from conftest import small_disk

    with small_disk(tmp_path / "disk", "4m") as mnt:
        yield mnt


@pytest.mark.parametrize("fmt", ["npgpt", "hf"])
def test_convert_onto_a_full_disk_is_one_line_and_keeps_the_old_file(small_disk, tmp_path, fmt):
    """A conversion that replaces an older model of its own format (convert refuses any other file) on a disk
    too small for the new one: one line naming the full disk, the old model byte for byte, no temp file."""
    from conftest import CONFIGS, random_params, run_cli

    from npgpt.config import GPT2Config
    from npgpt.formats import npgpt_format, save_checkpoint

    src = tmp_path / "src.safetensors"
    npgpt_format.save(src, CONFIGS["tiny"], random_params(CONFIGS["tiny"]))  # 6.5 MB: more than the disk
    small = GPT2Config(n_vocab=256, n_ctx=16, n_embd=16, n_head=2, n_layer=1)  # an older model that fits
    old = save_checkpoint(
        small_disk / "model.safetensors" if fmt == "npgpt" else small_disk, small, random_params(small), fmt
    )
    before = {p.name: p.read_bytes() for p in small_disk.iterdir()}
    r = run_cli("convert", str(src), str(old), "--to", fmt)
    assert r.returncode == 1, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "No space left on device" in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in small_disk.iterdir()} == before  # no temp file, nothing half-written


@pytest.mark.parametrize(
    "code, hint",
    [
        (errno.ENOENT, "(its folder cannot be created or cannot hold new files); choose a folder you can write to"),
        (errno.ENOTDIR, "a part of the path is a file, not a folder; choose a folder you can write to"),
        (errno.EACCES, "permission denied; choose a folder you can write to"),
        (errno.EROFS, "read-only file system; choose a folder you can write to"),
        (errno.ENOSPC, "No space left on device; free some space or choose a folder you can write to"),
        (errno.EDQUOT, "Disk quota exceeded; free some space or choose a folder you can write to"),
        (errno.EIO, "Input/output error; choose a folder you can write to"),
    ],
)
def test_a_failed_write_gives_the_right_reason_and_fix(tmp_path, monkeypatch, code, hint):
    """Only a full disk (or quota) is told to free some space: ENOENT (/proc/x.png) was told so too."""
    from npgpt.errors import NpgptError

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", fail)
    with pytest.raises(NpgptError) as e, atomic_path(tmp_path / "x.png"):
        pass
    assert str(e.value).startswith(f"cannot write {tmp_path / 'x.png'}: ") and str(e.value).endswith(hint)
    assert ("free some space" in str(e.value)) == (code in (errno.ENOSPC, errno.EDQUOT))


def test_numpys_full_disk_error_without_errno_is_told_to_free_space(tmp_path):
    """ndarray.tofile on a full disk (the GGUF writer's) raises an OSError with no errno: it lost "free some space"."""
    from npgpt.errors import NpgptError

    with (
        pytest.raises(NpgptError, match="8041120 requested and 3690368 written; free some space"),
        atomic_path(tmp_path / "m.gguf"),
    ):
        raise OSError("8041120 requested and 3690368 written")


def test_check_writable_leaves_nothing_behind(tmp_path):
    from npgpt.errors import NpgptError
    from npgpt.files import check_writable

    check_writable(tmp_path / "new" / "sub" / "x.png")  # a creatable parent is fine, and not created yet
    check_writable(tmp_path / "x.png")
    assert os.listdir(tmp_path) == []
    with pytest.raises(NpgptError, match="it is a directory"):
        check_writable(tmp_path)


def test_a_device_or_fifo_is_never_renamed_over(tmp_path):
    from npgpt.errors import NpgptError

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for target in (fifo, tmp_path):
        with pytest.raises(NpgptError, match="cannot write"), atomic_path(target) as tmp:
            open(tmp, "w").write("new")
    assert fifo.is_fifo() and sorted(os.listdir(tmp_path)) == ["pipe"]


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
def test_loading_checks_every_weight_without_leaving_the_file_resident(tmp_path):
    """load_checkpoint reads every weight (the NaN check) from the memory-mapped file; each tensor's pages are
    dropped once checked, so an int8 or 16-bit load never holds the float32 file and its conversion at once."""

    from npgpt.config import GPT2Config
    from npgpt.formats import load_checkpoint, save_checkpoint
    from npgpt.params import flatten, init_params

    config = GPT2Config(n_vocab=4096, n_ctx=64, n_embd=256, n_head=4, n_layer=2)  # ~10 MB of float32
    original = init_params(config, seed=0)
    path = save_checkpoint(tmp_path / "m.safetensors", config, original)
    _, params = load_checkpoint(path)
    mapped = [a for a in flatten(params).values() if isinstance(a, np.ndarray) and not a.flags.writeable]
    assert mapped, "the checkpoint is memory-mapped"
    assert resident_kb(path) < 1024  # of ~10,000 KB read: at most the pages shared by tensors' edges
    for name, a in flatten(params).items():  # dropped pages come back from the page cache when read
        np.testing.assert_array_equal(a, flatten(original)[name])


DEEP = "[" * 100_000  # deeper than json's parser recurses: a RecursionError escaped every reader


def test_json_nested_too_deeply_is_a_decode_error():
    import json

    from npgpt.files import parse_json

    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        parse_json(DEEP)
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        parse_json(DEEP.encode())
    assert parse_json('{"a": [1]}') == {"a": [1]}


@pytest.mark.parametrize("fmt", ["hf", "openai", "hf-sharded", "npgpt-header", "npgpt-config"])
def test_every_json_a_checkpoint_holds_nested_too_deeply_is_one_line(tmp_path, fmt):
    import struct

    from conftest import random_params

    from npgpt.config import GPT2Config
    from npgpt.errors import CheckpointError
    from npgpt.formats import load_checkpoint, save_checkpoint

    config = GPT2Config(n_vocab=64, n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    params = random_params(config)
    if fmt == "npgpt-header":  # the safetensors header itself
        path = tmp_path / "m.safetensors"
        header = DEEP.encode()
        path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    elif fmt == "npgpt-config":  # npgpt's config in the header's metadata
        from safetensors.numpy import save_file

        path = tmp_path / "m.safetensors"
        save_file({"wte": params["wte"]}, path, metadata={"format": "npgpt", "config": DEEP})
    else:
        path = save_checkpoint(
            tmp_path / "m", config, params, fmt, max_shard_size="20KB" if fmt == "hf-sharded" else None
        )
        name = {"hf": "config.json", "openai": "hparams.json", "hf-sharded": "model.safetensors.index.json"}[fmt]
        assert (path / name).is_file()
        (path / name).write_text(DEEP)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and "nested too deeply" in str(e.value)


def test_a_safetensors_write_error_is_told_in_the_os_words(tmp_path):
    """A training checkpoint on a full disk said "cannot write run/train_state.safetensors: Error while serializing:
    I/O error: No space left on device (os error 28); free some space ...": the library's Rust text around the OS's."""
    from safetensors import SafetensorError

    from npgpt.files import cannot_write

    e = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    said = str(cannot_write(tmp_path / "train_state.safetensors", e))
    assert said == (
        f"cannot write {tmp_path / 'train_state.safetensors'}: No space left on device; "
        "free some space or choose a folder you can write to"
    )
    e = SafetensorError("Error while serializing: I/O error: Read-only file system (os error 30)")
    said = str(cannot_write(tmp_path / "m.safetensors", e))
    assert said.endswith(": read-only file system; choose a folder you can write to")


# --- folders removed by another process while they are made -----------------------------------


def _racing_mkdir(monkeypatch, victim: Path) -> list[Path]:
    """``os.mkdir`` as if another process removed ``victim`` (an empty folder, as a failed download's cleanup
    does) right after this one made it and before its child was made; once."""
    real, raced = os.mkdir, []

    def mkdir(path, *args, **kwargs):
        if Path(path).parent == victim and not raced and victim.is_dir():
            victim.rmdir()
            raced.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    return raced


@pytest.mark.parametrize("writer", ["atomic_path", "write_together", "npgpt_format.save", "hf.save"])
def test_a_parent_removed_while_folders_are_made_is_made_again(tmp_path, monkeypatch, writer):
    """``npgpt rm`` or a failed download removes an empty ``hf/`` or ``downloads/``: in the moment between another
    process making that folder and making its own folder inside, the write failed with "cannot write ...: No such
    file or directory (its folder cannot be created ...)". The folders are made again."""
    from npgpt.formats import hf, npgpt_format
    from npgpt.params import init_params

    home = tmp_path / "home"
    home.mkdir()
    target = home / "hf" / "org--model" / "model.safetensors"
    raced = _racing_mkdir(monkeypatch, home / "hf")
    config = GPT2Config(n_vocab=40, n_ctx=8, n_embd=8, n_head=2, n_layer=1)
    if writer == "atomic_path":
        with files.atomic_path(target) as tmp:
            Path(tmp).write_bytes(b"x")
    elif writer == "write_together":
        files.write_together({target: lambda tmp: Path(tmp).write_bytes(b"x")})
    elif writer == "npgpt_format.save":
        npgpt_format.save(target, config, init_params(config, 0))
    else:
        target = target.parent / "config.json"
        hf.save(target.parent, config, init_params(config, 0))
    assert raced and target.is_file()


def test_a_broken_link_on_the_way_is_named_not_called_a_file(tmp_path):
    """``NPGPT_HOME`` (or any folder to write into) a symbolic link to a folder not made yet: "a part of the path is
    a file, not a folder", of a path with no file on it. The broken link is named, with its target."""
    from npgpt.errors import NpgptError

    (tmp_path / "home").symlink_to(tmp_path / "not-made")
    with pytest.raises(NpgptError) as e, atomic_path(tmp_path / "home" / "downloads" / "x.bin") as tmp:
        Path(tmp).write_bytes(b"x")
    said = str(e.value)
    assert f"{tmp_path / 'home'} is a broken symbolic link (to {tmp_path / 'not-made'}, which does not exist)" in said
    assert "is a file" not in said and "\n" not in said
