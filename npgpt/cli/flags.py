"""The library's messages in the CLI's words: the Python API's keyword arguments they name (``max_new_tokens``,
``dtype='int8'``) written as the flags the user typed (``--max-new-tokens``, ``--dtype int8``)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

from ..errors import NpgptError
from ..sampling import SamplingParams


def as_flags(e: NpgptError) -> str:
    """``e``'s message in the CLI's words: the library names the Python API's keyword arguments, the user
    typed the flags. A keyword given a quoted value becomes the flag and the value (``dtype='int8'`` ->
    ``--dtype int8``), and the error's own parameter named bare becomes its flag (``max_new_tokens must
    be`` -> ``--max-new-tokens must be``). Only options whose flags are their names with dashes
    (tests/test_cli_usage.py checks it)."""
    message = as_flags_in(_KEYWORD.sub(lambda m: f"{_flag(m['name'])} {m['value']}", str(e)), e.keywords)
    if e.param not in _FLAGS and e.param not in e.keywords:
        return message
    return re.sub(rf"(?<![\w-]){e.param}(?![\w-])", _flag(e.param), message)


def as_flags_in(text: str, keywords: Iterable[str], flags: Mapping[str, str] | None = None) -> str:
    """``text`` with each of ``keywords`` written as ``name=value`` or ``name=`` given as its flag: ``seq_len=512``
    -> ``--seq-len 512``, ``out='my run'`` -> ``--out 'my run'``, ``resume=True`` -> ``--resume``, ``lower lr=``
    -> ``lower --lr``. A name without ``=`` is prose (a folder named ``out``) and is left as it is. ``flags``: a
    command's flags named otherwise than by their keyword (npgpt bench's ``backends`` is ``--backend``)."""
    import shlex

    def _flag(name: str) -> str:
        return (flags or {}).get(name) or _default_flag(name)

    names = "|".join(sorted(map(re.escape, keywords), key=len, reverse=True))
    if not names:
        return text

    def flag(m: re.Match[str]) -> str:
        quoted = m["single"] if m["single"] is not None else m["double"]
        value = shlex.quote(quoted) if quoted is not None else m["bare"]
        return _flag(m["name"]) if value in (None, "True") else f"{_flag(m['name'])} {value}"

    value = r"(?:'(?P<single>[^']*)'|\"(?P<double>[^\"]*)\"|(?P<bare>[^\s,;:()'\"]+))?"
    return re.sub(rf"(?<![\w-])(?P<name>{names})={value}", flag, text)


def _flag(name: str) -> str:
    return _RENAMED.get(name, "--" + name.replace("_", "-"))


_default_flag = _flag


_RENAMED = {"fmt": "--to", "allow_special": "--special-tokens"}  # convert()'s format: npgpt convert's --to


# The Python API's keywords that are CLI options of the same name: sampling's, the load's, eval's and attention's.
# (stop_at_eot, logprobs and skip_leading_space are the API's and the server's only: --ignore-eos is stop_at_eot's.)
_API_ONLY = {"stop_at_eot", "logprobs", "skip_leading_space"}
_FLAGS = {f.name for f in dataclasses.fields(SamplingParams)} - _API_ONLY | {
    "dtype",
    "backend",
    "window",
    "stride",
    "batch_size",
    "layer",  # npgpt attention's, as lens.attention_pattern names them
    "head",
}
_KEYWORD = re.compile(rf"(?<![\w-])(?P<name>{'|'.join(sorted(_FLAGS))})=(?P<q>['\"])(?P<value>[^'\"]*)(?P=q)")
