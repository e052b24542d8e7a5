"""Writing files so that no reader ever sees half of one: write beside it, sync, then rename over it.

The temp file is named ``.NAME.PID@HOST.XXXX.tmp`` beside the target. A process killed mid-write
(SIGKILL, power loss) cannot delete its own temp file, so the next write to the same folder
removes the temp files of npgpt's naming whose writer is no longer alive. The host is in the name
because a folder may be shared between machines (a cluster's home on NFS): another machine's
process ids say nothing here, so its temp files are removed only when untouched for a day.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, NpgptError

# .NAME.PID@HOST.XXXX.tmp; without @HOST: an older npgpt's, taken as this machine's
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(?:@(?P<host>[A-Za-z0-9-]+))?\.[^.]+\.tmp$")
OTHER_HOST_STALE_S = 86400.0  # another machine's temp file untouched this long is a dead writer's


def publish(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished temp file over ``path`` with the permissions a plain ``open`` would give
    (``mkstemp`` makes files readable by their owner only).

    The file's data is flushed to disk before the rename and the directory entry after it, as
    careful writers do (without the first sync, a power loss can leave the renamed file empty).
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    _fsync(tmp, os.O_RDONLY)
    os.replace(tmp, path)
    _fsync(Path(path).parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def make_dirs(directory: str | Path) -> None:
    """``mkdir -p``, robust to another process removing an empty folder on the way meanwhile (a failed download
    or ``npgpt rm`` removes an empty ``hf/`` or ``downloads/``): ``Path.mkdir(parents=True)`` makes the parent,
    then the child, and the parent removed between the two is a FileNotFoundError; so it is made again. A
    folder that can never hold new folders (``/proc/x``) still raises, after a few quick tries."""
    for attempt in range(_MKDIR_TRIES):
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            if attempt == _MKDIR_TRIES - 1:
                raise


_MKDIR_TRIES = 20  # each lost only to another process's removal in a window of microseconds


def _fsync(path: str | Path, flags: int) -> None:
    try:
        fd = os.open(path, flags)
    except OSError:  # some filesystems do not open directories; the data itself was synced
        return
    try:
        os.fsync(fd)
    except OSError:  # e.g. EINVAL on a filesystem without fsync for this kind of file
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _host() -> str:
    """This machine's name as it goes into a temp file's name (letters, digits and dashes)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def _stale(m: re.Match, entry: os.DirEntry) -> bool:
    if m["host"] is None or m["host"] == _host():
        return not _alive(int(m["pid"]))
    try:  # another machine's writer: its pid cannot be asked here; one writing keeps the file's time recent
        return time.time() - entry.stat(follow_symlinks=False).st_mtime > OTHER_HOST_STALE_S
    except OSError:
        return False


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete the temp files (and :func:`save_safetensors`' temp folders) of npgpt's naming in ``directory`` whose
    writing process has died (on another machine sharing the folder: left untouched for ``OTHER_HOST_STALE_S``)."""
    import shutil

    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            m = _TEMP.match(entry.name)
            if not (m and _stale(m, entry)):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                else:
                    continue
                removed.append(Path(entry.path))
    return removed


def save_safetensors(
    tensors: Mapping[str, np.ndarray], tmp: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """safetensors' ``save_file`` of ``tensors`` into ``tmp`` (a temp file of :func:`atomic_path` or
    :func:`write_together`). The library (0.8 here) writes its own ``.tmpXXXXXX`` beside the path it is given and
    renames it there, so a process killed mid-write left that file, the size of the whole model or training state,
    under a name no cleanup knows: 1.5 GB a kill for a 124M run's state. It writes inside a folder of npgpt's
    naming instead, which :func:`remove_stale_temps` removes once its writer is dead."""
    import shutil

    from safetensors.numpy import save_file

    tmp = Path(tmp)
    folder = tempfile.mkdtemp(dir=tmp.parent, prefix=f".safetensors.{os.getpid()}@{_host()}.", suffix=".tmp")
    try:
        inside = os.path.join(folder, tmp.name)
        save_file(dict(tensors), inside, metadata=metadata)
        os.replace(inside, tmp)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def temp_beside(path: str | Path) -> str:
    """A new empty temp file of npgpt's naming (``.NAME.PID@HOST.XXXX.tmp``) beside ``path``, for the caller
    to :func:`publish` or delete; a killed writer's is removed by :func:`remove_stale_temps`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}@{_host()}.", suffix=".tmp")
    os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """A temp file name beside ``path``; it replaces ``path`` if the block succeeds and is
    deleted if it fails, so ``path`` is always either the old file or the whole new one.

    A write that fails for lack of space or permission (``OSError``, or the ``SafetensorError``
    that the safetensors library raises for the same causes) becomes one :class:`NpgptError`
    naming the file and the cause.
    """
    from safetensors import SafetensorError

    path = Path(path)
    _refuse_non_file(path)
    try:
        make_dirs(path.parent)
    except OSError as e:
        raise cannot_write(path, e) from None
    remove_stale_temps(path.parent)
    try:
        tmp = temp_beside(path)
    except OSError as e:
        raise cannot_write(path, e) from None
    try:
        yield tmp
        publish(tmp, path)
    except (OSError, SafetensorError) as e:
        raise cannot_write(path, e) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def locked_folder(directory: Path, busy: str, *, elsewhere: str = "choose a folder you can write to") -> Iterator[None]:
    """Make ``directory`` (and its parents) and hold an exclusive lock on it for the block: a second process
    asking for it gets NpgptError(``busy``) at once, not a wait. ``elsewhere`` as :func:`cannot_write`'s.

    An advisory ``flock`` on the folder itself (no lock file is left behind), released by the OS even if the
    process dies; where there is none (Windows) nothing is locked. The lock's holder may remove the folder
    (a failed download, a run that made it for nothing): a process that opened it just before and locked it
    just after would hold a lock on a folder no longer there, while a third one makes the path again and locks
    that; so the lock is taken again until the path names the very folder locked.
    """
    try:
        import fcntl
    except ImportError:
        try:
            make_dirs(directory)
        except OSError as e:
            raise cannot_write(directory, e, elsewhere=elsewhere) from None
        yield
        return
    missing: OSError | None = None
    for _ in range(20):  # each turn is lost to another holder's removal: more takes a pathological race
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory, os.O_RDONLY)
        except FileNotFoundError as e:  # a folder on the way removed by another process meanwhile: again
            missing = e
            continue
        except OSError as e:  # a read-only disk, a file where a folder goes
            raise cannot_write(directory, e, elsewhere=elsewhere) from None
        missing = None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise NpgptError(busy) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(directory))
            except FileNotFoundError:
                same = False
            if same:
                yield
                return
        finally:
            os.close(fd)
    if missing is not None:  # never made (/proc/x: a folder that cannot hold new folders)
        raise cannot_write(directory, missing, elsewhere=elsewhere)
    raise NpgptError(busy)


def write_together(writers: Mapping[Path, Callable[[str], Any]], withdraw: Iterable[Path] = ()) -> None:
    """Write files that are read as one set (weights, their index, their config) so that a reader never
    meets old and new files mixed: ``writers[path](tmp)`` writes each in full to a temp file of npgpt's
    naming, in order; only then are the files of ``withdraw`` deleted (the file a reader opens first,
    e.g. ``config.json``, which must then be the last of ``writers``, and the old set's files the new
    one does not replace) and the files renamed into place in the same order.

    A failure while writing leaves every old file untouched; a KeyboardInterrupt during the renames lets them
    finish (the new set is then whole) before it stops the caller. A process killed during the renames
    leaves no file a reader opens first, so the half-renamed set is refused at load rather than read; its temp
    files are removed by the next write to the folder (:func:`remove_stale_temps`). Errors as
    :func:`atomic_path`: one :class:`NpgptError` naming the file and the cause.
    """
    from safetensors import SafetensorError

    for folder in dict.fromkeys(path.parent for path in writers):
        try:
            make_dirs(folder)
        except OSError as e:
            raise cannot_write(folder, e) from None
        remove_stale_temps(folder)
    temps: dict[Path, str] = {}
    path = next(iter(writers))
    try:
        for path, write in writers.items():
            _refuse_non_file(path)
            temps[path] = temp_beside(path)
            write(temps[path])
        try:
            for path in withdraw:
                path.unlink(missing_ok=True)
            for path, tmp in temps.items():
                publish(tmp, path)
        except KeyboardInterrupt:
            # Ctrl-C here would leave neither set (the old one's config.json is gone): the new set is on disk
            # in full, so finish its few renames, then stop
            for path in withdraw:
                path.unlink(missing_ok=True)
            for path, tmp in temps.items():
                if os.path.exists(tmp):
                    publish(tmp, path)
            raise
    except (OSError, SafetensorError) as e:
        raise cannot_write(path, e) from None
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.unlink(tmp)


def parse_json(text: str | bytes) -> Any:
    """``json.loads``, except that JSON nested deeper than the parser recurses (``[[[[...``, a corrupt or
    hostile config.json or safetensors header) is the ``JSONDecodeError`` every reader already turns into
    its one-line error, not a RecursionError that escaped them all as an internal error."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text if isinstance(text, str) else "", 0) from None


def check_writable(
    path: str | Path, *, elsewhere: str = "choose a folder you can write to", error: type[NpgptError] = NpgptError
) -> None:
    """Refuse, before any work, a ``path`` that :func:`atomic_path` could not write: one NpgptError naming it
    (a folder, a parent that is a file or cannot be created, no permission, a read-only file system).

    Nothing is left behind: a missing parent is not created here, a probe file is made in the nearest
    folder that exists (where the parents would be created) and removed. ``elsewhere`` and ``error`` as
    :func:`cannot_write`'s.
    """
    path = Path(path)
    _refuse_non_file(path, error)
    folder = path.parent
    try:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.{os.getpid()}@{_host()}.", suffix=".tmp")
    except OSError as e:
        raise cannot_write(path, e, elsewhere=elsewhere, error=error) from None
    os.close(fd)
    os.unlink(probe)


def _refuse_non_file(path: Path, error: type[NpgptError] = NpgptError) -> None:
    if path.exists() and not path.is_file():  # a device (/dev/full), a FIFO or a folder: never renamed over
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise error(f"cannot write {path}: it is {kind}; give the path of a file to write")


def cannot_write(
    path: Path,
    e: BaseException,
    *,
    elsewhere: str = "choose a folder you can write to",
    error: type[NpgptError] = NpgptError,
) -> NpgptError:
    """One line naming the file, the cause and the fix, for every writer of npgpt (the OS's and the
    safetensors library's own texts are long, Rust-flavoured or say nothing of what to do).

    The cause is read from the errno where there is one (only a full disk or quota is told to free
    space); ``elsewhere`` is the way to write somewhere else (downloads say to set ``NPGPT_HOME``);
    ``error``: the NpgptError subclass to return (CheckpointError for a checkpoint).
    """
    text = str(e)
    found = re.search(r'message: "([^"]+)"', text)  # SafetensorError wraps the OS error's text
    reason = getattr(e, "strerror", None) or (found[1] if found else (text.splitlines() or [type(e).__name__])[0])
    code = getattr(e, "errno", None)
    rust = re.search(r"\(os error (\d+)\)", text)  # "Error while serializing: I/O error: ... (os error 28)"
    if code is None and rust:  # the OS's own words, and the errno that picks the fix
        code = int(rust[1])
        reason = os.strerror(code)
    if isinstance(e, IsADirectoryError) or path.is_dir():
        return error(f"cannot write {path}: it is a directory; give a file path")
    if isinstance(e, (NotADirectoryError, FileExistsError)):  # FileExistsError: mkdir where a file is
        link = next((p for p in reversed([path, *path.parents]) if p.is_symlink() and not p.exists()), None)
        if link is not None:  # mkdir -p meets a link to nowhere: it exists, and is no folder
            return error(
                f"cannot write {path}: {link} is a broken symbolic link (to {os.readlink(link)}, which does not "
                f"exist); make its target or {elsewhere}"
            )
        where = next((folder for folder in reversed(path.parents) if folder.is_file()), None)
        part = f" ({where})" if where else ""
        return error(f"cannot write {path}: a part of the path is a file, not a folder{part}; {elsewhere}")
    if isinstance(e, PermissionError) or "ermission denied" in reason:
        return error(f"cannot write {path}: permission denied; {elsewhere}")
    if code == errno.EROFS or "ead-only file system" in reason:
        return error(f"cannot write {path}: read-only file system; {elsewhere}")
    if isinstance(e, FileNotFoundError):  # e.g. /proc: the folder cannot be created or hold new files
        why = "its folder cannot be created or cannot hold new files"
        return error(f"cannot write {path}: {reason} ({why}); {elsewhere}")
    if (
        code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        or "o space left" in reason
        or "uota exceeded" in reason
        or re.search(r"\d+ requested and \d+ written", reason)  # NumPy's tofile on a full disk (no errno)
    ):
        return error(f"cannot write {path}: {reason}; free some space or {elsewhere}")
    return error(f"cannot write {path}: {reason}; {elsewhere}")


def broken_link(path: Path) -> CheckpointError:
    """One line naming a symbolic link that leads to no file, and its target: one that does not exist,
    or a loop of links."""
    try:
        path.resolve(strict=True)
        why = "which leads to no file"
    except RuntimeError:  # Python < 3.13: a loop
        why = "which is a loop of links"
    except OSError as e:
        why = "which is a loop of links" if e.errno == errno.ELOOP else "which does not exist"
    return CheckpointError(
        f"{path}: a broken symbolic link to {os.readlink(path)}, {why}; "
        "re-download the model or point the link at the file"
    )


_SPECIAL = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def special_kind(path: str | Path) -> str:
    """What ``path`` is where a regular file was expected (links followed): "a FIFO (named pipe)", "a directory",
    "a character device" (/dev/zero), "a socket", ...; "not a regular file" for anything else (a dangling link)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "not a regular file"
    return "a directory" if stat.S_ISDIR(mode) else _SPECIAL.get(stat.S_IFMT(mode), "not a regular file")


def refuse_special_files(path: Path, may_open: Callable[[Path], bool]) -> None:
    """CheckpointError naming ``path``, or the first of a folder's entries that a reader ``may_open``, that is a
    FIFO, a device or a socket (links followed): reading one never ends (``mkfifo config.json`` with no writer
    blocks ``open`` forever, ``/dev/zero`` never runs out), where a model's file ends. Entries that cannot be read
    are left to the reader; one no reader opens (a log pipe, a program's socket beside the model) is left alone."""
    try:
        entries = [path, *sorted(filter(may_open, path.iterdir()))] if path.is_dir() else [path]
    except OSError:  # a folder that cannot be listed: the reader's own message says why
        entries = [path]
    for entry in entries:
        try:
            kind = _SPECIAL.get(stat.S_IFMT(entry.stat().st_mode))
        except OSError:  # gone, or a broken link: told by the reader
            continue
        if kind is not None:
            raise CheckpointError(
                f"{entry}: {kind}, not a regular file; npgpt reads a model only from regular files: "
                "copy the model's files into a folder"
            )


def read_regular(path: str | Path) -> bytes:
    """The bytes of the regular file at ``path`` (links followed); an OSError for a FIFO, a device or a socket
    in its place, raised at once: opening a FIFO waits for a writer for ever and ``/dev/zero`` never ends.
    For the files npgpt keeps for itself (a cache, a sidecar), which its readers treat as absent when
    unreadable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        kind = _SPECIAL.get(stat.S_IFMT(os.fstat(fd).st_mode))
        if kind is not None:
            raise OSError(errno.EINVAL, f"{kind}, not a regular file", str(path))
        return f.read()


def is_web_page(path: Path) -> bool:
    """Whether ``path`` holds a web page (HTML or XML): the error or login page a failed download saves in a
    file's place."""
    try:
        with open(path, "rb") as f:
            head = f.read(512).lstrip().lower()
    except OSError:
        return False
    return head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body"))


def web_page(path: Path) -> CheckpointError | None:
    """The error for a model file that is a web page (:func:`is_web_page`), or None. Every reader of a binary
    format asks before calling the file damaged."""
    if not is_web_page(path):
        return None
    return CheckpointError(
        f"{path}: a web page (HTML or XML), not a model file: an error page saved in its place by a failed "
        "download; download it again"
    )


def _mapping(arr: np.ndarray) -> mmap.mmap | None:
    """The file mapping ``arr`` is a view of, or None."""
    base: Any = arr
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base


def is_mapped(arr: Any) -> bool:
    """Whether ``arr`` is a NumPy view of a memory-mapped file (a checkpoint read in place)."""
    return isinstance(arr, np.ndarray) and _mapping(arr) is not None


def release_mapped(arr: np.ndarray) -> None:
    """Drop a read-only memory-mapped array's pages from this process's memory (not from the file).

    Pages of a file mapping count towards the process's resident memory until unmapped; the
    other tensors keep the checkpoint's mapping alive, so release this tensor's range. Reading
    it again would simply fault the pages back in from the OS page cache.
    """
    base = _mapping(arr)
    if base is None or arr.flags.writeable or not hasattr(mmap, "MADV_DONTNEED"):
        return  # not mapped, or copy-on-write (mode "c": dropping pages would lose writes)
    start = arr.ctypes.data - np.frombuffer(base, np.uint8).ctypes.data
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the array only
    last = (start + arr.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        base.madvise(mmap.MADV_DONTNEED, first, last - first)


class FileRows:
    """Rows of an array that is a read-only view of a file's memory map, read from the file with
    ``os.pread`` on demand: ``rows[ids]`` is what ``arr[ids]`` would be, without mapping a page.

    Why not read the map: a page fault maps a whole page-cache folio, up to 2 MB on recent kernels
    for a file written moments before (the bench's checkpoint): 63 lookups of one 3 KB row of
    124M's ``wte`` took ~450 us each and left 80 MB of the file resident. A ``pread`` copies the
    row's bytes only, and the page cache holding them stays the OS's. Build one with :meth:`of`.
    """

    def __init__(self, fd: int, offset: int, arr: np.ndarray) -> None:
        import weakref

        self._fd, self._offset = fd, offset  # the file offset of arr[0, ...]
        self._n, self._stride = arr.shape[0], arr.strides[0]
        self._shape, self._strides, self.dtype = arr.shape[1:], arr.strides[1:], arr.dtype
        # A row's bytes: from its first element to the end of its last (inner strides may skip bytes).
        self._span = sum((n - 1) * s for n, s in zip(self._shape, self._strides, strict=True)) + arr.itemsize
        weakref.finalize(self, os.close, fd)

    @classmethod
    def of(cls, arr: Any) -> FileRows | None:
        """A reader of ``arr``'s rows from its file, or None where ``arr`` is not a read-only view of a
        file's memory map with positive strides, or that file cannot be opened again as the same bytes."""
        if not (is_mapped(arr) and not arr.flags.writeable and arr.ndim >= 1 and arr.size and hasattr(os, "pread")):
            return None
        if any(s <= 0 for s in arr.strides):
            return None
        mapped: Any = arr  # the np.memmap the mapping was made by: its file's name and offset
        while mapped is not None and not (isinstance(mapped, np.memmap) and isinstance(mapped.base, mmap.mmap)):
            mapped = mapped.base
        if mapped is None or getattr(mapped, "filename", None) is None:
            return None
        try:
            fd = os.open(mapped.filename, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        rows = cls(fd, mapped.offset + arr.ctypes.data - mapped.ctypes.data, arr)
        try:  # the file opened by name is the one mapped (not replaced since): its ends read the same
            same = all(rows[i].tobytes() == np.ascontiguousarray(arr[i]).tobytes() for i in (0, arr.shape[0] - 1))
        except (OSError, ValueError):
            same = False
        return rows if same else None

    def __getitem__(self, rows: Any) -> np.ndarray:  # ids (an int, ints of any shape, a slice) -> [..., *row]
        if isinstance(rows, (int, np.integer)):
            return self._row(int(rows))
        ids = np.arange(self._n)[rows] if isinstance(rows, slice) else np.asarray(rows)
        if ids.dtype.kind not in "iu":
            raise IndexError("rows are read by integer ids")
        out = np.empty((*ids.shape, *self._shape), self.dtype)
        flat = out.reshape(-1, *self._shape)
        for n, i in enumerate(ids.reshape(-1).tolist()):
            flat[n] = self._row(i)
        return out

    def _row(self, i: int) -> np.ndarray:
        if not -self._n <= i < self._n:
            raise IndexError(f"row {i} is out of bounds for {self._n} rows")
        data = os.pread(self._fd, self._span, self._offset + (i % self._n) * self._stride)
        if len(data) != self._span:
            raise CheckpointError("the checkpoint file was truncated while the model was loaded from it; load it again")
        return np.ndarray(self._shape, self.dtype, buffer=data, strides=self._strides)
