"""The JSON body every request reads (:class:`Body`): OpenAI's types, strictly, at a bounded depth, in valid Unicode.

Types are OpenAI's, strictly (a JSON string is no number, ``1`` no boolean): ``"n": "2"``, ``"stream": "true"``,
``"logprobs": true`` in completions or ``"prompt": [true]`` are 400s naming the field, as OpenAI answers,
where pydantic's lax mode would read them as ``2``, ``True``, ``1`` and token 1. An integer field (:data:`Int`)
takes a whole number written as a decimal (``16.0``, which JSON Schema counts an integer and Python clients
send after arithmetic), never ``16.5``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

# arrays and objects inside one another in a body: no request needs more than a few (a tool's JSON Schema
# perhaps a dozen), and a deep one would exhaust Python's recursion in any walk of it (a 500)
MAX_JSON_DEPTH = 64


def _whole_number(v: Any) -> Any:
    """``16.0`` as ``16``: a whole number is an integer, however the client's JSON wrote it."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


Int = Annotated[int, BeforeValidator(_whole_number)]  # an integer field: strict, but 16.0 is 16


class Body(BaseModel):
    """Every request body: strict types (see the module's docstring). Unpaired UTF-16 surrogates in its
    strings (``"\\ud83d"`` is valid JSON but not valid Unicode) become U+FFFD, as tiktoken would encode
    them, so no field can fail later when the text is encoded or a response holding it is written."""

    model_config = ConfigDict(extra="ignore", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        check_depth(data)  # first: the walk below recurses
        return replace_surrogates(data)


def too_deep() -> PydanticCustomError:
    """The error for a body nested over :data:`MAX_JSON_DEPTH` (also when the JSON parser itself gave up)."""
    return PydanticCustomError(
        "json_too_deep",
        f"the JSON body nests arrays and objects more than {MAX_JSON_DEPTH} deep; no request needs that many",
    )


def check_depth(data: Any) -> None:
    """Raise :func:`too_deep` if ``data`` (parsed JSON) nests more than MAX_JSON_DEPTH arrays and objects;
    iterative, so that any depth is measured without recursion."""
    level = [data] if isinstance(data, list | dict) else []  # the arrays and objects at one depth
    for _ in range(MAX_JSON_DEPTH):
        if not level:
            return
        level = [x for c in level for x in (c.values() if isinstance(c, dict) else c) if isinstance(x, list | dict)]
    if level:
        raise too_deep()


_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_surrogates(data: Any) -> Any:
    """``data`` (parsed JSON) with each lone surrogate in its strings, keys included, replaced by U+FFFD."""
    if isinstance(data, str):
        return _SURROGATE.sub("\ufffd", data)
    if isinstance(data, list):
        return [replace_surrogates(x) for x in data]
    if isinstance(data, dict):
        return {replace_surrogates(k): replace_surrogates(v) for k, v in data.items()}
    return data
