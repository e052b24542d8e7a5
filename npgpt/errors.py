"""User-facing errors, and the checks of the values users pass that they are raised for. The CLI and the
server print these as one line, never a traceback."""

import math
import numbers
from collections.abc import Collection
from typing import Any


class NpgptError(ValueError):
    """A problem the user can fix; the message says what was expected and what to do.

    ``param``: the offending argument's name (the Python API's, e.g. ``max_new_tokens``), or None.
    ``keywords``: the Python API's keyword arguments that the message names as ``name=value`` or
    ``name=`` (``seq_len=512``, ``lower lr=``), each an option of the command that prints it, which the
    CLI writes as its flags (``--seq-len 512``, ``lower --lr``).
    """

    def __init__(self, message: str, param: str | None = None, keywords: Collection[str] = ()) -> None:
        super().__init__(message)
        self.param = param
        self.keywords = tuple(keywords)


class CheckpointError(NpgptError):
    """A checkpoint is missing, corrupt, truncated or of an unknown format."""


class NpgptWarning(UserWarning):
    """Something the user should know that does not stop the work (a run's loss plot that could not be written):
    the message is one line, which the CLI prints as ``warning: ...``."""


class CheckpointWarning(NpgptWarning):
    """A checkpoint loads, read as its model was meant, but another tool reads it otherwise (llama.cpp a GGUF
    without its pre-tokenizer): the message, one line, says how and how to mend the file. The CLI prints it as
    ``warning: ...``."""


_MAX_SHOWN_DIGITS = 50  # a longer integer is named by its length: str() of one past 4300 digits is a ValueError
_SHOWN_NUMBERS = 8  # an array of more numbers (or of 2 or more axes) is shown by its shape
_MAX_SHOWN_CHARS = 100  # a longer string is cut, with its length: a server's client may send a megabyte


def cut(text: str, limit: int = _MAX_SHOWN_CHARS) -> str:
    """``text`` for an error message that echoes it (a URL, a header, a field's path): past ``limit`` characters,
    its first ``limit`` and its length ("xxx... (500000 characters)"): a server's client may send a megabyte."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def shown(value: object) -> str:
    """``repr(value)`` for an error message, safe for any value a user passes: an integer of more
    than 50 digits (``10**5000``, whose ``str()`` Python refuses) is shown as "a 5001-digit integer", and
    a string of more than 100 characters by its first 100 and its length ("'xxx...' (500000 characters)"), and an
    array of NumPy's, torch's or JAX's past a few numbers in a row by its shape and dtype ("an array of shape
    (5, 768), float32"; its repr is a page of numbers over many lines)."""
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    many = isinstance(shape, tuple) and (len(shape) > 1 or len(shape) == 1 and shape[0] > _SHOWN_NUMBERS)
    if isinstance(shape, tuple) and many and dtype is not None and not isinstance(value, type):
        return f"an array of shape {tuple(shape)}, {str(dtype).removeprefix('torch.')}"
    if isinstance(value, str) and len(value) > _MAX_SHOWN_CHARS:
        return f"{repr(value[:_MAX_SHOWN_CHARS])[:-1]}...{repr(value)[-1]} ({len(value)} characters)"
    if isinstance(value, int) and not isinstance(value, bool):
        magnitude = abs(value)
        if magnitude.bit_length() > 3 * _MAX_SHOWN_DIGITS:  # surely more than 45 digits: count them without str()
            digits = int(magnitude.bit_length() * 0.30102999566398120) + 1  # log10(2): exact or one too many
            if magnitude < 10 ** (digits - 1):
                digits -= 1
            if digits > _MAX_SHOWN_DIGITS:
                return f"a {digits}-digit{' negative' if value < 0 else ''} integer"
    try:
        return repr(value)
    except ValueError:  # a container or number type holding such an integer
        return f"a {type(value).__name__} too large to show"


def json_kind(value: object) -> str:
    """What a parsed JSON value is, in JSON's words, for "not a JSON object but a list"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    kinds = ((list, "a list"), (str, "a string"), (numbers.Number, "a number"), (dict, "an object"))
    return next((kind for t, kind in kinds if isinstance(value, t)), type(value).__name__)


def reason(e: BaseException) -> str:
    """Why ``e`` happened, in words for a message that wraps it ("prefill failed: {reason}"): its text's first line,
    never its Python type name ("NpgptError: out of memory ..." told a user or a client nothing the message did not;
    an OpenAI client is not Python). The type speaks only where the text does not: a bare ``MemoryError`` is "out of
    memory", a KeyError names what is missing, an OSError says the OS's words (and the file), a text-less one its
    type."""
    text = (str(e).strip().splitlines() or [""])[0]
    if isinstance(e, MemoryError):
        return f"out of memory ({text})" if text else "out of memory"
    if isinstance(e, KeyError) and e.args:
        return f"missing key {shown(e.args[0])}"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename is not None else e.strerror
    return text or type(e).__name__


def is_finite_number(x: object) -> bool:
    """A finite real number: Python's or NumPy's (np.float32(0.5)), never a bool (NumPy's bool_ is no number)."""
    if not isinstance(x, numbers.Real) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int past float's range (10**400)
        return False


def is_integer(x: object) -> bool:
    """An integer, Python's or NumPy's (np.int64(3)); never a bool (True is not top_k=1) nor 2.0."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def counted_index(value: Any, count: int, param: str, what: str = "a whole number") -> int:
    """``value`` as an index from 0 into ``count`` things (blocks, heads), a negative one counted from the end as
    Python's and TransformerLens's indices are (-1: the last). Raises :class:`NpgptError` naming ``param`` and the
    range for anything else (a bool, 1.0, ``count`` or past it)."""
    if not (is_integer(value) and -count <= value < count):
        raise NpgptError(
            f"{param} must be {what} in [-{count}, {count - 1}] for this model (negative: counted from the end, "
            f"-1 the last), got {shown(value)}",
            param=param,
        )
    return int(value) % count


# Other tools' names of the dtypes npgpt stores: llama.cpp's (--outtype f16, bf16, f32), PyTorch's (half, float), fp16.
_DTYPE_NAMES = {"f32": "float32", "fp32": "float32", "float": "float32", "f16": "float16", "fp16": "float16"}
_DTYPE_NAMES |= {"half": "float16", "bf16": "bfloat16", "q8": "q8_0", "i8": "int8"}


_DTYPES = {"float32", "float16", "bfloat16", "int8", "q8_0", "auto"}  # every dtype name npgpt takes somewhere


def _plain_dtype_name(dtype: str) -> str:
    """``dtype`` lower-cased, without spaces around it or a library's prefix (the text of ``torch.float16``)."""
    name = dtype.strip().lower()
    for prefix in ("torch.", "numpy.", "np.", "jnp.", "jax.numpy."):
        name = name.removeprefix(prefix)
    return _DTYPE_NAMES.get(name, name)


def other_dtype_name(dtype: str) -> str:
    """npgpt's name of a dtype that another tool spells otherwise (llama.cpp's ``f16``, PyTorch's ``half``, another
    case: ``Q8_0``, ``FLOAT16``, a library's text: ``torch.float16``); ``dtype`` as it is where it names none of
    npgpt's."""
    name = _plain_dtype_name(dtype)
    return name if name in _DTYPES else dtype


def dtype_hint(dtype: object, valid: Collection[str]) -> str:
    """``" (f16 is float16 here)"`` where ``dtype`` is another tool's name, another case or a library's text
    (``"torch.float16"``, spaces around it) of one of ``valid``; else ``""``."""
    if not isinstance(dtype, str):
        return ""
    name = _plain_dtype_name(dtype)
    return f" ({dtype} is {name} here)" if name in valid and name != dtype else ""
