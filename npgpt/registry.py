"""Where models live on disk: the cache layout, model names -> paths, listing and removal. No network here.

Everything lives under :func:`home`::

    downloads/openai/124M/          OpenAI's files while they download (``*.part`` until complete)
    124M/model.safetensors          the converted, memory-mapped npgpt file :func:`resolve` returns
    hf/<org>--<repo>/model.safetensors   a converted Hugging Face model

:mod:`npgpt.download` fetches into this layout; :func:`resolve` turns a ``--model`` value into a path.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .config import PRESETS
from .errors import NpgptError, cut, shown
from .files import locked_folder
from .formats.npgpt_format import MODEL_FILE

OPENAI_NAMES = tuple(PRESETS)  # 124M, 355M, 774M, 1558M: also the order resolve(None) prefers
# Hugging Face's names, and TransformerLens's "gpt2-small" (npgpt.hooks speaks TransformerLens)
ALIASES = {"gpt2": "124M", "gpt2-small": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M"}
BUNDLED = "bundled"
BUNDLED_NOTICE = "using npgpt's small bundled model (not GPT-2); run `npgpt download 124M` for real GPT-2"
_KEYS = {**{n.lower(): n for n in OPENAI_NAMES}, **ALIASES}
# Hugging Face's ORG/NAME, by huggingface_hub's validate_repo_id rule (whose import takes ~0.2 s, too long for a
# load): ASCII letters, digits, "_", "-" and "."; each part 1-96 long, neither starting nor ending with "-" or ".";
# no "--" or ".." anywhere; not ending in ".git". So "./model.safetensors" or "../gpt2/x.bin" is a path, never a repo.
_REPO_ID = re.compile(
    r"(?!.*(?:--|\.\.))(?=[^/]{1,96}/.{1,96}$)(?!.*\.git$)"  # no "--" or "..", each part <= 96, not *.git
    r"\w(?:[\w.-]*\w)?/\w(?:[\w.-]*\w)?",  # ORG/NAME, each starting and ending with a letter or digit
    re.ASCII,
)


def home() -> Path:
    """npgpt's cache, an absolute path: ``$NPGPT_HOME``, else ``$XDG_CACHE_HOME/npgpt``, else ``~/.cache/npgpt``.

    A variable set to the empty string counts as unset (``NPGPT_HOME=`` is the default cache), as the XDG Base
    Directory specification says of its own variables and huggingface_hub does with ``HF_HOME``.

    A relative ``NPGPT_HOME`` (or ``XDG_CACHE_HOME``) is taken from the current directory, as huggingface_hub
    takes a relative ``HF_HOME``, and made absolute here: a path npgpt hands out (a resolved model, a
    download, a listing, ``GPT2.source``) keeps naming the same file after the program changes directory.
    Symbolic links are kept as written (``os.path.abspath``, not ``Path.resolve``), so messages show the
    path the user set.
    """
    try:
        if os.environ.get("NPGPT_HOME"):
            where = Path(os.environ["NPGPT_HOME"]).expanduser()
        else:
            where = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "npgpt"
    except (RuntimeError, KeyError):  # "~nouser/x", or no HOME and no user database entry: Python cannot expand it
        given = next((f"{v}={os.environ[v]!r}" for v in ("NPGPT_HOME", "XDG_CACHE_HOME") if os.environ.get(v)), None)
        what = f"{given} names a home folder that cannot be found" if given else "no home folder is known (HOME unset)"
        raise NpgptError(f"cannot place npgpt's cache: {what}; set NPGPT_HOME to a folder you can write to") from None
    return Path(os.path.abspath(where))


def home_is_no_folder() -> str | None:
    """Why the cache cannot hold models, or None: a file (or a FIFO, a device) where it goes (``NPGPT_HOME`` set to
    a file). Said where a model is looked up in it, which otherwise reads as "nothing downloaded yet"."""
    where = home()
    if where.exists() and not where.is_dir():
        return f"the cache {where} is a file, not a folder; set NPGPT_HOME to a folder"
    return None


def openai_name(name: str) -> str:
    """``"124M"``, ``"124m"`` or the alias ``"gpt2"`` -> ``"124M"``; anything else is an error."""
    canonical = _KEYS.get(name.strip().lower())
    if canonical is None:
        valid = ", ".join([*OPENAI_NAMES, *ALIASES])
        raise NpgptError(f"unknown GPT-2 model {shown(name)}; expected one of {valid}")
    return canonical


def bundled_path() -> Path:
    """The small model that ships with npgpt (trained by npgpt, not OpenAI's GPT-2)."""
    return Path(str(resources.files("npgpt").joinpath("assets", "bundled.safetensors")))


def is_bundled(path: str | Path | None) -> bool:
    """Whether ``path`` is the model that ships with npgpt."""
    return path is not None and Path(path).resolve() == bundled_path().resolve()


def hf_dir(repo_id: str, revision: str | None = None) -> Path:
    """Where the npgpt file converted from a Hugging Face repo (at ``revision``) lives."""
    if not _REPO_ID.fullmatch(repo_id):
        raise NpgptError(f"{repo_id!r} is not a Hugging Face repo id; {_repo_id_fix(repo_id)}")
    name = repo_id.replace("/", "--")
    if revision:  # "refs/pr/1" -> "refs--pr--1": one directory, and reversible (see list_cached)
        _check_revision(revision)
        name += "@" + revision.replace("/", "--")
    return home() / "hf" / name


def _check_revision(revision: str) -> None:
    """NpgptError for a revision no branch, tag or commit can have (git's ``check-ref-format`` rules: no
    whitespace or control characters, none of ``~^:?*[\\``, no ``..`` or ``@{``, no ``/`` or ``.`` at either end,
    no ``//``, no ``.lock`` at the end): ``"a b"`` (a shell variable of two words) went to the Hub and came back as
    a network error, offline as "Name or service not known"."""
    bad = re.search(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^[/.]|[/.]$|\.lock$", revision)
    if bad is not None:
        raise NpgptError(
            f"revision {shown(revision)} is not a branch, tag or commit name: git names hold no spaces or control "
            "characters, none of ~^:?*[\\, no '..' or '@{', and do not start or end with '/' or '.'; "
            "check the revision (main, a tag such as v1.0, or a commit hash)"
        )


def _hub_address(given: str) -> str | None:
    """The repo id in a Hugging Face repo's address (``https://huggingface.co/ORG/NAME/tree/main``), else None."""
    url = re.match(r"(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/([^/?#\s]+/[^/?#\s]+)", given)
    return url[1] if url is not None and _REPO_ID.fullmatch(url[1]) else None


def _repo_id_fix(given: str) -> str:
    """What to give instead: the id in a repo's address pasted from the browser, else the id's form."""
    url = _hub_address(given)
    if url is not None:
        return f"that is its address; give the repo id in it: {url}"
    return "expected ORG/NAME, e.g. openai-community/gpt2"


def list_cached() -> list[tuple[str, Path]]:
    """Downloaded models, as ``(name, npgpt file)``: OpenAI's sizes first, then Hugging Face repos."""
    found = [(n, home() / n / MODEL_FILE) for n in OPENAI_NAMES if (home() / n / MODEL_FILE).is_file()]
    hf_root = home() / "hf"
    if hf_root.is_dir():
        for d in sorted(hf_root.iterdir()):
            if (d / MODEL_FILE).is_file():
                found.append((d.name.replace("--", "/"), d / MODEL_FILE))
    return found


def names_a_model(text: str) -> bool:
    """Whether ``text`` is what ``--model`` takes, downloaded or not: an existing path, ``bundled``, an OpenAI
    name or alias (``124M``, ``gpt2``) or a Hugging Face ``ORG/NAME[@REVISION]``."""
    key = text.strip()
    return (
        _exists(Path(key).expanduser())
        or key.lower() in _KEYS
        or key == BUNDLED
        or bool(_REPO_ID.fullmatch(key.partition("@")[0]))
    )


def _exists(path: Path) -> bool:
    """Whether ``path`` exists (a broken link too), False for a name no file can have: ``Path.exists`` raises
    "File name too long" for a name past the system's limit (255 bytes a part), as a prompt given as the model is."""
    try:
        return path.exists() or path.is_symlink()
    except OSError:
        return False


def resolve(name_or_path: str | None) -> tuple[Path, str | None]:
    """The checkpoint to load for a ``--model`` value, and a one-line notice for the user (or None).

    An existing path is used as is; ``124M``/``gpt2``/... and downloaded Hugging Face repo ids
    map to their converted file; ``bundled`` is the model shipped with npgpt; None picks the
    smallest downloaded GPT-2, else the bundled model (with a notice saying it is not GPT-2).
    """
    if name_or_path is None:
        for name, path in list_cached():
            if name in OPENAI_NAMES:
                return path, None
        return _bundled(), BUNDLED_NOTICE
    key = name_or_path.strip()
    if not key:  # '' was "'' is not a file or a known model", as if a name had been mistyped
        raise NpgptError("the model is empty; give a path or a name")
    if key and _exists(Path(key).expanduser()):
        return Path(key).expanduser(), None  # a broken link too: loading it names its target
    if key.lower() == BUNDLED:
        return _bundled(), None
    if key.lower() in _KEYS:
        name = openai_name(key)
        path = home() / name / MODEL_FILE
        if path.is_file():
            return path, None
        if (why := home_is_no_folder()) is not None:  # "run npgpt download" would fail for the same reason
            raise NpgptError(f"model {name} is not downloaded: {why}")
        raise NpgptError(f"model {name} is not downloaded; run `npgpt download {name}`")
    repo_id, _, revision = key.partition("@")
    if _REPO_ID.fullmatch(repo_id):
        path = hf_dir(repo_id, revision or None) / MODEL_FILE
        if path.is_file():
            return path, None
        if (why := home_is_no_folder()) is not None:
            raise NpgptError(f"{key}: no such file, and no Hugging Face model downloaded: {why}")
        raise NpgptError(
            f"{key}: no such file, and no downloaded Hugging Face model of that name; "
            f"run `npgpt download --hf {repo_id}{f' --revision {revision}' if revision else ''}`"
        )
    if (url := _hub_address(key)) is not None:  # a repo's address pasted from the browser
        raise NpgptError(
            f"{key} is a Hugging Face address, not a file; run `npgpt download --hf {url}`, then load it by its "
            f"name, {url}"
        )
    if "/" in key or "\\" in key:  # a path (not a repo id, see _REPO_ID): naming downloads would mislead
        raise NpgptError(f"no such file or directory: {cut(key)}")
    available = [n for n, _ in list_cached()] + ([BUNDLED] if bundled_path().is_file() else [])
    raise NpgptError(
        f"{shown(name_or_path)} is not a file or a known model; available: {', '.join(available) or 'none'}; "
        f"to download: {', '.join(OPENAI_NAMES)} (`npgpt download NAME`) or `npgpt download --hf ORG/NAME`"
    )


def _bundled() -> Path:
    path = bundled_path()
    if not path.is_file():
        raise NpgptError(
            f"no model available: nothing downloaded and the bundled model is missing ({path}); "
            "run `npgpt download 124M`, or give the path of a checkpoint file as the model"
        )
    return path


@dataclass(frozen=True)
class CachedModel:
    """A model in the cache, as ``npgpt list`` shows it.

    ``name``: what ``--model`` and ``npgpt rm`` take (``124M``, ``openai-community/gpt2@main``);
    ``source``: where it came from (``openai`` or ``hf``); ``format``: the file's format (``npgpt``),
    or why it cannot be read; ``size``: bytes on disk under ``folder``; ``path``: the model file.
    """

    name: str
    source: str
    format: str
    size: int
    path: Path
    folder: Path


def cached_models() -> list[CachedModel]:
    """Every downloaded model (see :func:`list_cached`), with its source, format and size; a
    corrupt file is listed with the reason, not raised, so it can be seen and removed."""
    from .formats import detect

    out = []
    for name, path in list_cached():
        try:
            fmt = detect(path)
        except NpgptError as e:
            fmt = f"unreadable ({e})"
        folder = path.parent
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        out.append(CachedModel(name, "openai" if name in OPENAI_NAMES else "hf", fmt, size, path, folder))
    return out


def remove(name: str) -> list[Path]:
    """Delete a downloaded model (its folder, and any unfinished download of it); the paths removed.

    ``name`` as :func:`resolve` takes it (``124M``, ``gpt2``, ``ORG/NAME[@REVISION]``); only folders
    inside :func:`home` are ever deleted: a model folder that is a link (to another disk, say) is
    unlinked and its target kept. Raises NpgptError for a name that is not in the cache.
    """
    return remove_folders(cached_folders(name))


def cached_folders(name: str) -> list[Path]:
    """The folders :func:`remove` would delete for ``name``, deleting nothing; NpgptError for a name that is not in
    the cache. A caller removing several models checks every name with it first, so that a wrong one leaves the
    cache as it was rather than half emptied."""
    key = name.strip()
    if key.lower() in _KEYS:
        canonical = openai_name(key)
        folders = [home() / canonical, home() / "downloads" / "openai" / canonical]
    elif _REPO_ID.fullmatch(key.partition("@")[0]):
        repo_id, _, revision = key.partition("@")
        folders = [hf_dir(repo_id, revision or None)]
    else:
        folders = []
    # A link is judged by where it lies, not where it points: `npgpt list` lists a linked model, so rm finds it.
    found = [
        f
        for f in folders
        if f.is_dir() and (f.parent.resolve() if f.is_symlink() else f.resolve()).is_relative_to(home().resolve())
    ]
    if not found and key.lower() != BUNDLED and (why := home_is_no_folder()) is not None:
        raise NpgptError(f"{shown(name)} is not in the cache: {why}")  # not "downloaded models: none"
    if not found:
        cached = ", ".join(n for n, _ in list_cached()) or "none"
        what = (
            "the bundled model ships with npgpt and cannot be removed"
            if key.lower() == BUNDLED
            else f"{shown(name)} is not in the cache ({home()})"
        )
        raise NpgptError(f"{what}; downloaded models: {cached} (see `npgpt list`)")
    return found


def remove_folders(found: list[Path]) -> list[Path]:
    """Delete the folders :func:`cached_folders` found; ``found``."""
    import shutil

    with contextlib.ExitStack() as held:
        for folder in found:  # a download holds its folder's lock (npgpt.download): not removed under it
            if folder.parent in (home() / "hf", home() / "downloads" / "openai") and not folder.is_symlink():
                busy = (
                    f"{folder.name} is being downloaded by another npgpt process (into {folder}); wait for it to "
                    "finish or stop it, then remove it"
                )
                held.enter_context(locked_folder(folder, busy))
        for folder in found:
            if folder.is_symlink():
                folder.unlink()  # never rmtree through a link: its target lies outside the cache
            else:
                shutil.rmtree(folder)
    return found
