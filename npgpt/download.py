"""Fetch GPT-2 checkpoints, resume cut transfers, verify them, and convert them once.

Transfers only: where files go (the cache layout) and what a name means are :mod:`npgpt.registry`'s.

Of the seven files OpenAI publishes per size, npgpt fetches the three it reads: ``hparams.json``
and the ``model.ckpt`` index/data pair. ``encoder.json`` and ``vocab.bpe`` are the same for every
size and ship with npgpt (``npgpt/assets``); ``model.ckpt.meta`` is TensorFlow's graph definition
and ``checkpoint`` a pointer file for ``tf.train``: nothing here reads them.

The originals are deleted once converted: the npgpt file holds the same float32 values, keeping
both would double the disk (6.2 GB more for 1558M), and ``openai_tf.save`` writes the OpenAI
layout back from it if it is ever needed. Nothing broken is kept either: a download that fails
its checksums is deleted, so running the command again fetches it afresh.

The library never prints: pass ``progress(filename, done_bytes, total_bytes)`` to see transfers.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .errors import CheckpointError, NpgptError, reason
from .files import cannot_write, check_writable, is_web_page, locked_folder, parse_json, publish
from .formats.npgpt_format import MODEL_FILE
from .registry import hf_dir, home, openai_name

Progress = Callable[[str, int, int | None], None]

OPENAI_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models"  # as picoGPT's utils.py
OPENAI_FILES = ("hparams.json", "model.ckpt.index", "model.ckpt.data-00000-of-00001")
# Printed by `npgpt download` (which has no --model) and the Python API: so it names no flag.
OFFLINE_HINT = "check your connection, or give the path of a checkpoint already on this machine instead of the name"
_CHUNK = 1 << 20
_ELSEWHERE = "set NPGPT_HOME to a folder you can write to"  # how a download writes somewhere else


def download_openai(
    name: str, *, base_url: str = OPENAI_URL, progress: Progress | None = None, retries: int = 3, timeout: float = 30.0
) -> Path:
    """Fetch OpenAI's GPT-2 ``name`` (124M, 355M, 774M, 1558M or gpt2, gpt2-medium, ...), verify
    every tensor's checksum, convert it once and return the npgpt file's path.

    Already converted: returns at once, with no network. A transfer that breaks resumes where it
    stopped, up to ``retries`` times here and again on the next call. ``progress`` is called as
    ``(filename, done_bytes, total_bytes or None)`` during each transfer; the one-time conversion
    reports as ``("model.safetensors", 0, None)`` when it starts and ``(.., n, n)`` when done.
    """
    name = openai_name(name)
    target = home() / name / MODEL_FILE
    if converted(target):
        return target
    staging = home() / "downloads" / "openai" / name
    try:
        busy = f"another npgpt process is downloading GPT-2 {name} into {staging}; wait for it to finish"
        with locked_folder(staging, busy, elsewhere=_ELSEWHERE):
            try:
                _download_locked(name, staging, target, base_url, progress, retries, timeout)
            except BaseException:  # nothing to resume (no .part) leaves no empty folder; only the lock's holder
                _rmdir_if_empty(staging)  # removes it, and a waiter checks it locked the folder still there
                raise
    finally:
        _rmdir_if_empty(staging.parent)  # rmdir: only when no other download's folder is in them
        _rmdir_if_empty(staging.parent.parent)
    size = target.stat().st_size
    _report(progress, MODEL_FILE, size, size)
    return target


def _download_locked(
    name: str, staging: Path, target: Path, base_url: str, progress: Progress | None, retries: int, timeout: float
) -> None:
    """:func:`download_openai`'s work, with ``staging`` locked: fetch, verify, convert to ``target``, and
    remove ``staging``."""
    from .formats import npgpt_format, openai_tf

    if converted(target):  # another process finished it between the caller's check and the lock
        return
    for file in OPENAI_FILES:
        if not (staging / file).exists():
            url = f"{base_url.rstrip('/')}/{name}/{file}"
            _fetch(url, staging / file, progress=progress, retries=retries, timeout=timeout)
    _report(progress, MODEL_FILE, 0, None)
    try:
        config, params = openai_tf.load(staging)
    except ValueError as e:  # CheckpointError, or a config that makes no sense
        # Which file broke is unknowable in general (a bad index misreads good data), so
        # drop them all: the next run starts clean instead of failing the same way forever.
        shutil.rmtree(staging, ignore_errors=True)
        detail = str(e).replace(f"{staging}{os.sep}", "").split("; ")[0]  # what broke, not its fix
        raise CheckpointError(
            f"the downloaded GPT-2 {name} is corrupt ({detail}); it was deleted, run the same command "
            "again to download it afresh"
        ) from None
    try:
        npgpt_format.save(target, config, params)
    except OSError as e:
        _rmdir_if_empty(target.parent)
        raise cannot_write(target, e, elsewhere=_ELSEWHERE) from None
    except NpgptError:  # no room or no permission, said in one line by atomic_path; the download stays
        _rmdir_if_empty(target.parent)
        raise
    del params  # may be memory maps of the files deleted next
    shutil.rmtree(staging, ignore_errors=True)


def download_hf(repo_id: str, *, revision: str | None = None, progress: Progress | None = None) -> Path:
    """Fetch a Hugging Face GPT-2 and convert it once.

    ``config.json`` comes first and must describe GPT-2 (``model_type`` gpt2), so another
    architecture is refused before any weights are fetched. Then the tokenizer files the repo has
    (``hf_files.TOKENIZER_FILES``), checked as a local folder's: a tokenizer that is not GPT-2's is refused
    before the weights too, and a fine-tune's added and end tokens and its chat template (chat_template.jinja, or
    tokenizer_config.json's) go into the converted file. Then the
    weights, in the first layout the repo has: ``model.safetensors``, sharded safetensors (the index, then
    its shards), or ``pytorch_model.bin`` (read without running code; also sharded). The originals stay in
    Hugging Face's own cache (shared with ``transformers``; clear it with ``hf cache``); npgpt
    keeps only its converted file, returned here.
    """
    target = hf_dir(repo_id, revision) / MODEL_FILE
    if converted(target):
        return target
    # The weights go to Hugging Face's cache, the converted file here: a home it cannot be written to is
    # refused now, not after gigabytes were fetched (the OpenAI path creates its staging folder there first).
    check_writable(target, elsewhere=_ELSEWHERE)
    # The model's folder is locked while it is fetched and converted, as the OpenAI download's staging folder is:
    # `npgpt rm` (which takes the lock) removed the conversion's temp file from under it, and a second download of
    # the same repo converted it again alongside.
    busy = f"another npgpt process is downloading {repo_id} into {target.parent}; wait for it to finish"
    try:
        with locked_folder(target.parent, busy, elsewhere=_ELSEWHERE):
            try:
                if not converted(target):  # another process may have finished it between the check and the lock
                    _download_hf_locked(repo_id, revision, progress, target)
            except BaseException:  # only the lock's holder removes the folder it made (as download_openai)
                _rmdir_if_empty(target.parent)
                raise
    finally:
        _rmdir_if_empty(target.parent.parent)  # hf/, made for it: only when no other model is in it
    size = target.stat().st_size
    _report(progress, MODEL_FILE, size, size)
    return target


def _download_hf_locked(repo_id: str, revision: str | None, progress: Progress | None, target: Path) -> None:
    """:func:`download_hf`'s work, with ``target``'s folder locked: fetch, check, convert to ``target``."""
    import inspect
    import json

    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    from .formats import hf, hf_files, npgpt_format

    takes_tqdm = "tqdm_class" in inspect.signature(hf_hub_download).parameters  # huggingface_hub>=0.26

    def fetch(file: str) -> Path:
        kw: dict[str, Any] = {"tqdm_class": _tqdm_reporting(progress, file)} if progress and takes_tqdm else {}
        return Path(hf_hub_download(repo_id, file, revision=revision, **kw))

    # huggingface_hub's errors change with its version (requests, then httpx); none may reach
    # the user as a traceback, so every failure becomes one line saying what to do.
    file = "config.json"
    try:
        config_path = fetch(file)
        hf_files.check_gpt2(parse_json(config_path.read_text()), f"{repo_id}/config.json")
        paths = [config_path]
        # The tokenizer files transformers reads beside the weights, each where the repo has it, checked as a local
        # folder's are before any weights are fetched: a GPT-2 trained on another vocabulary is refused now, and a
        # fine-tune's added tokens and end tokens are kept in the converted file
        for file in hf_files.TOKENIZER_FILES:
            try:
                paths.append(fetch(file))
            except EntryNotFoundError as e:
                if isinstance(e, LocalEntryNotFoundError):
                    raise
        tokenizer = hf_files.tokenizer_spec(config_path.parent)
        template = hf_files.chat_template(config_path.parent)
        weights = len(paths)
        for file in (hf_files.SAFETENSORS, hf_files.SAFETENSORS_INDEX, hf_files.BIN, hf_files.BIN_INDEX):
            try:
                paths.append(fetch(file))
                break
            except EntryNotFoundError as e:
                if isinstance(e, LocalEntryNotFoundError):  # offline: not "absent from the repo"
                    raise
        else:
            raise NpgptError(
                f"{repo_id} has no GPT-2 weights (none of model.safetensors, "
                "model.safetensors.index.json, pytorch_model.bin)"
            )
        if file.endswith(".index.json"):
            for file in sorted(hf_files.shard_map(paths[weights])):
                paths.append(fetch(file))
    except NpgptError:  # a config that is not GPT-2, an index that names no plain files
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # config.json is not JSON
        raise CheckpointError(f"{repo_id}/{file} is not valid JSON ({e}); the repo is not a GPT-2 checkpoint") from None
    except Exception as e:
        raise NpgptError(_hf_failure(e, repo_id, file, revision)) from None
    if len({p.parent for p in paths}) != 1:  # the revision moved between the downloads
        raise NpgptError(f"{repo_id} changed while downloading; run the same command again")
    _report(progress, MODEL_FILE, 0, None)
    try:
        config, params = hf.load(paths[0].parent)
    except ValueError as e:
        raise CheckpointError(f"{repo_id} is not a GPT-2 checkpoint npgpt can read: {e}") from None
    metadata = {} if tokenizer is None else {"tokenizer": json.dumps(tokenizer)}
    if template is not None:  # kept, so that npgpt chat and serve can say the model has one of its own
        metadata[npgpt_format.CHAT_TEMPLATE] = template[1]
    try:  # no room or no permission: one line (atomic_path's); download_hf removes the folders made for it
        npgpt_format.save(target, config, params, metadata=metadata or None)
    except OSError as e:
        raise cannot_write(target, e, elsewhere=_ELSEWHERE) from None


def converted(target: Path) -> bool:
    """Whether ``target`` is a whole npgpt model file (its structure checked, no tensor read): one cut short or
    damaged since (a disk that filled, a broken copy) is converted again, not returned, so that "re-download it",
    which loading it says, does what it says."""
    from .formats import npgpt_format

    if not target.is_file():
        return False
    try:
        npgpt_format.read_safetensors(target)
        return npgpt_format.is_npgpt_file(target)
    except CheckpointError:
        return False


def _hf_failure(e: Exception, repo_id: str, file: str, revision: str | None) -> str:
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    where = f"{repo_id}/{file}" + (f" at revision {revision}" if revision else "")
    if isinstance(e, LocalEntryNotFoundError):  # offline, and not in Hugging Face's cache
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:  # set in the environment (clusters do): "check your connection" misled
            return (
                f"cannot download {where}: HF_HUB_OFFLINE is set, so the Hugging Face Hub is not contacted and the "
                "file is not in its cache; unset HF_HUB_OFFLINE to download it, or give the path of a checkpoint "
                "already on this machine instead of the name"
            )
        return f"cannot download {where} from the Hugging Face Hub ({_first_cause(e)}); {OFFLINE_HINT}"
    if isinstance(e, EntryNotFoundError):
        return f"{repo_id} has no {file}; check the repo id and revision"
    return f"cannot download {where} from the Hugging Face Hub: {reason(e)}"


def _first_cause(e: BaseException) -> str:
    """Why the Hub could not be reached: the error it wraps (DNS, refused, timeout: "Name or service not known",
    as the OpenAI download says), not its own paragraph that the connection may be down."""
    seen = [e]
    while (nxt := seen[-1].__cause__ or seen[-1].__context__) is not None and nxt not in seen:
        seen.append(nxt)
    return reason(seen[-1])


class _Interrupted(Exception):
    """A transfer that stopped early but can be resumed from what reached the ``.part`` file."""

    def __init__(self, done: int, total: int | None, reason: str):
        super().__init__(reason)
        self.done, self.total, self.reason = done, total, reason


def _fetch(url: str, dest: Path, *, progress: Progress | None, retries: int, timeout: float) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming it; rename only when complete and synced."""
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, progress, timeout)
            break
        except _Interrupted as e:
            if attempt == retries:
                of = f" of {e.total:,}" if e.total is not None else ""
                raise NpgptError(
                    f"download of {url} stopped at {e.done:,}{of} bytes ({e.reason}); "
                    "run the same command again to resume"
                ) from None
    if is_web_page(part):  # a network's login page answers every URL: running again would fetch it again
        part.unlink()
        raise NpgptError(
            f"{url} sent a web page (HTML), not the file: a network's login page or a proxy's error page; "
            "sign in to the network (open any site in a browser) or check your connection, then run the same "
            "command again"
        )
    try:
        publish(part, dest)  # synced first: after a power loss a renamed file could be empty, skipped as fetched
    except OSError as e:  # the folder removed meanwhile (rm -r of the cache), a disk gone read-only
        raise cannot_write(dest, e, elsewhere=_ELSEWHERE) from None


def _fetch_once(url: str, part: Path, progress: Progress | None, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"npgpt/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part is not shorter than the file: keep it only if equal
            complete = re.fullmatch(r"bytes \*/(\d+)", e.headers.get("Content-Range", ""))
            if complete and int(complete[1]) == have:
                return
            part.unlink()
            raise _Interrupted(0, None, "the partial file did not match; restarting") from None
        raise NpgptError(
            f"download of {url} failed: HTTP {e.code} {e.reason}; try again later, or give the path of a "
            "checkpoint already on this machine instead of the name"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:  # refused, DNS, timeout
        cause = getattr(e, "reason", e)
        cause = getattr(cause, "strerror", None) or reason(cause)
        raise NpgptError(f"cannot download {url} ({cause}); {OFFLINE_HINT}") from None

    with response:
        total = _content_length(response.headers.get("Content-Length"))
        if have and response.status == 206:
            got = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not got or int(got[1]) != have:
                part.unlink()
                raise _Interrupted(0, None, "the server resumed at the wrong offset; restarting")
            total = _content_length(got[2])
        else:
            have = 0  # a 200 carries the whole file, also from servers that ignore Range
        done = have
        try:
            with open(part, "ab" if have else "wb") as f:
                _report(progress, part.name.removesuffix(".part"), done, total)
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:  # reset, timeout, cut short
                        raise _Interrupted(done, total, reason(e)) from None
                    if not chunk:
                        break
                    f.write(chunk)
                    done += len(chunk)
                    _report(progress, part.name.removesuffix(".part"), done, total)
        except OSError as e:
            raise cannot_write(part, e, elsewhere=_ELSEWHERE) from None
    if total is not None and done != total:
        raise _Interrupted(done, total, "the connection closed early")


def _content_length(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _report(progress: Progress | None, name: str, done: int, total: int | None) -> None:
    if progress is not None:
        progress(name, done, total)


def _rmdir_if_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):
        directory.rmdir()


def _tqdm_reporting(progress: Progress, file: str) -> type:
    """A silent tqdm class that forwards huggingface_hub's byte counts to ``progress``."""
    from tqdm import tqdm

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)  # huggingface_hub's own tqdm takes a name; tqdm does not
            super().__init__(*args, **{**kwargs, "disable": True})  # disabled: counts nothing itself
            progress(file, self.n, self.total)

        def update(self, n=1):
            self.n += n or 0
            progress(file, self.n, self.total)

    return Reporting
