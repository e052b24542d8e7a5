"""The OpenAI-compatible API's request bodies: completions, chat and next tokens, and the chat prompt template.

Fields follow OpenAI's API, typed strictly (:mod:`.body`); unknown fields are ignored, as OpenAI's own clients send
some, unless they are options npgpt refuses by name (:mod:`.unsupported`). Token ids in ``prompt`` must be plain
integers. The sampling options carry OpenAI's ranges (``temperature`` at most 2, as OpenAI answers, where the
Python API has no maximum), and are checked again by :class:`npgpt.sampling.SamplingParams`. npgpt adds ``top_k``,
``min_p`` and ``repetition_penalty`` (with the ``openai`` client: ``extra_body={"top_k": 40}``) and ``ignore_eos``.

A field that only labels, routes or bills the request, or that asks for what npgpt does anyway, is accepted and
ignored, as vLLM does:
``user``, ``store``, ``metadata``, ``service_tier``, ``prompt_cache_key``, ``safety_identifier``;
``tools``/``functions`` under ``tool_choice`` "auto" (a reply without a tool call is valid) and
``parallel_tool_calls`` (no tool is ever called); ``prediction`` (OpenAI's Predicted Outputs only speed
up a reply, which is the same without them); vLLM's ``priority``, ``request_id``, ``cache_salt``,
``add_special_tokens`` (GPT-2 adds none), ``chat_template_kwargs`` (npgpt's template takes none),
``spaces_between_special_tokens`` and ``skip_special_tokens`` (npgpt's text holds no ``<|endoftext|>``: refused false
only where a generated one is not the end of the reply, with ``ignore_eos`` or a fine-tune's own eos token).
Accepted and ignored is not unchecked: each of these fields has OpenAI's (or vLLM's) type, so ``"user": 5`` or
``"tools": "x"`` is a 400 naming the field, as OpenAI answers, never read as if it were right, and ``service_tier``
one of OpenAI's tiers (``SERVICE_TIERS``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, cast

from pydantic import BeforeValidator, ConfigDict, Discriminator, Field, Tag
from pydantic_core import PydanticCustomError

from .. import chat as _chat
from ..chat import CHAT_STOP as CHAT_STOP  # re-exported: the server's callers import it from here
from ..errors import NpgptError, shown
from ..sampling import SamplingParams
from .body import Body, Int
from .unsupported import REFUSED, REFUSED_IN_CHAT, REFUSED_IN_COMPLETIONS, check_refused

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

MAX_N = 128  # completions per prompt
MAX_STOP = 16  # stop sequences
MAX_PROMPTS = 4096  # prompts in one completions request, refused by length before their items are read
_SAMPLING_KNOBS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
)


def _no_unlimited(instead: str) -> BeforeValidator:
    """A ``max_tokens`` that refuses -1, llama.cpp's "no limit" (its clients send it), saying what to send
    instead (OpenAI and vLLM refuse it too; the Python API's max_new_tokens=-1, llama-cpp-python's, is not the
    server's)."""

    def check(v: Any) -> Any:
        if v == -1 and not isinstance(v, bool):
            raise PydanticCustomError("no_unlimited", "-1 (llama.cpp's 'no limit') is no token count; " + instead)
        return v

    return BeforeValidator(check)


_TO_THE_END = _no_unlimited("leave it out to generate up to the end of the context")


# OpenAI's service tiers, as its client types them (openai.types.chat.completion_create_params); another is a 400 there
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast")


# OpenAI's metadata: at most 16 pairs, keys of at most 64 characters, values of at most 512 (more is its 400)
Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]], Field(max_length=16)
]


# OpenAI's end-user identifiers, ``user`` and ``safety_identifier``: at most 64 characters (more is its 400,
# "Invalid 'user': string too long. Expected a string with maximum length 64, ..."). Not ``prompt_cache_key``, which
# OpenAI caps alike but vLLM takes at any length (its chat and completions ignore it, its Responses API types it
# ``str``): agents write session ids of 70-100 characters into it, and npgpt, which ignores it as vLLM does, takes
# what vLLM takes
Identifier = Annotated[str, Field(max_length=64)]


class StreamOptions(Body):
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's: the usage so far on every chunk (with include_usage, as vLLM)


class _Sampling(Body):
    """What completions and chat share. ``None`` (JSON null) means the default."""

    model_config = ConfigDict(extra="allow")  # see check_supported
    refused: ClassVar[dict[str, str]] = REFUSED

    model: str | None = None  # one of the server's models; default: the first
    # OpenAI's ranges (a float bound: the field is a decimal in the 400's words, "decimal above maximum value");
    # SamplingParams checks them too, for the Python API, whose temperature has no maximum
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    n: Int | None = Field(None, ge=1, le=MAX_N)
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    # OpenAI's and vLLM's range, a signed 64-bit integer; -1 is llama.cpp's "a random seed" (see :meth:`sampling`)
    seed: Int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # {"token id": bias}: an object (so [], "" or 0 are no empty bias, as OpenAI answers); its entries are checked
    # by SamplingParams, which names the one that is wrong
    logit_bias: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None  # chat's; vLLM's completions take it too
    top_k: Int | None = Field(None, ge=-1)  # npgpt's extensions, with vLLM's ranges (top_k -1: off)
    min_p: float | None = Field(None, ge=0.0, le=1.0)  # vLLM's range
    repetition_penalty: float | None = Field(None, gt=0.0)
    ignore_eos: bool | None = None  # vLLM's: go on past <|endoftext|>, up to max_tokens
    best_of: Int | None = Field(None, ge=1)  # completions' (and vLLM's chat's): accepted only when it changes nothing
    # accepted and ignored (see the module's docstring), but typed as OpenAI and vLLM type them: a wrong type is
    # the client's mistake, a 400 as OpenAI answers, never silently read as if it were right (``"user": 5``)
    user: Identifier | None = None
    metadata: Metadata | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: Identifier | None = None
    priority: Int | None = None  # vLLM's
    request_id: str | None = None
    cache_salt: str | None = None
    add_special_tokens: bool | None = None
    skip_special_tokens: bool | None = None
    spaces_between_special_tokens: bool | None = None

    def check_supported(self, tok: Tokenizer) -> None:
        """Refuse what would silently not be honoured (see the module's docstring) by the model whose tokenizer is
        ``tok``. The options in ``refused`` are no fields: an unknown field is kept (``extra="allow"``) only to be
        looked up here."""
        check_refused(self.model_extra or {}, self.refused)
        # vLLM's: false writes special tokens into the text, and npgpt's text never holds <|endoftext|>: where it
        # ends the reply, vLLM cuts it too, so it would show only where generation goes past it: with ignore_eos, or
        # for a fine-tune that ends at its own eos token alone (a chat model's <|im_end|>)
        goes_past_eot = self.ignore_eos or tok.eot_id not in tok.eos_token_ids
        if self.skip_special_tokens is False and goes_past_eot:
            raise NpgptError(
                "skip_special_tokens false is not supported: npgpt never writes <|endoftext|> into the text (vLLM's "
                "default, skip_special_tokens true); leave it out (completions logprobs still list the token)",
                param="skip_special_tokens",
            )
        if self.stream_options is not None and not self.stream:  # as OpenAI answers: it would change nothing
            raise NpgptError(
                "stream_options is only allowed when stream is true; send stream: true, or leave out stream_options",
                param="stream_options",
            )
        if self.stream_options is not None and self.stream_options.continuous_usage_stats:
            if not self.stream_options.include_usage:  # vLLM would ignore it then
                raise NpgptError(
                    "stream_options.continuous_usage_stats needs stream_options.include_usage: true (as in vLLM); "
                    "send both",
                    param="stream_options.continuous_usage_stats",
                )
        if self.service_tier is not None and self.service_tier not in SERVICE_TIERS:  # a typo bills no tier at OpenAI
            raise NpgptError(
                f"service_tier must be one of {', '.join(SERVICE_TIERS)} (npgpt serves each alike), "
                f"got {shown(self.service_tier)}",
                param="service_tier",
            )
        if self.best_of is not None and self.best_of < (self.n or 1):  # as OpenAI and vLLM answer
            raise NpgptError(
                f"best_of must be greater than or equal to n, got best_of={self.best_of} and n={self.n}; leave "
                "best_of out",
                param="best_of",
            )
        if self.best_of not in (None, 1, self.n or 1):  # best_of = n samples n and returns them all
            raise NpgptError("best_of is not supported; use n to get several completions", param="best_of")
        if self.response_format is not None and "type" not in self.response_format:  # as OpenAI answers
            raise NpgptError("Missing required parameter: 'response_format.type'.", param="response_format.type")
        kind = (self.response_format or {}).get("type", "text")
        if kind != "text":
            raise NpgptError(
                f"response_format {shown(kind)} is not supported: GPT-2 cannot be held to a format; "
                'leave it out or use {"type": "text"}',
                param="response_format",
            )

    def sampling(
        self, max_tokens: int, logprobs: int | None, stop: tuple[str, ...] = (), skip_leading_space: bool = False
    ) -> SamplingParams:
        """Validated SamplingParams (raises NpgptError with the bad field as ``param``); a field left
        out or null takes SamplingParams' default, the one place defaults live.

        ``seed``: -1 is no seed, as llama.cpp's server reads it (how its clients ask for a random seed); another
        negative seed is a seed as any other, as OpenAI and vLLM take any signed 64-bit one: its 64 bits read
        unsigned. Both as SamplingParams reads them, so a seed gives the text the Python API gives for it.
        ``top_k``: -1 is off, as vLLM (whose clients send it for off) and llama.cpp read it; npgpt's off is 0."""
        user_stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        given = {k: v for k in _SAMPLING_KNOBS if (v := getattr(self, k)) is not None}
        if given.get("top_k") == -1:
            given["top_k"] = 0
        return SamplingParams(
            max_new_tokens=max_tokens,
            seed=self.seed,
            stop=user_stop + stop,
            logprobs=logprobs,
            skip_leading_space=skip_leading_space,
            stop_at_eot=not self.ignore_eos,
            logit_bias=cast("dict[int, float]", self.logit_bias or {}),  # JSON's string keys: SamplingParams reads them
            **given,
        )


def _one_of(value: str, allowed: tuple[str, ...], param: str) -> None:
    """Refuse ``value`` of the field ``param`` unless it is one of ``allowed`` (NpgptError naming them)."""
    if value not in allowed:
        raise NpgptError(f"{param} must be one of {', '.join(allowed)}, got {shown(value)}", param=param)


def _prompt_kind(v: Any) -> str:
    """Which form a ``prompt`` has, from its first item: pydantic then checks that form only. (A plain union
    tries every form and collects an error per item for each: seconds for a 1 MB list, on the event loop.)"""
    if isinstance(v, list) and v:
        return "list[str]" if isinstance(v[0], str) else "list[int]" if isinstance(v[0], int) else "list[list[int]]"
    return "list[str]" if isinstance(v, list) else "str"


Prompt = Annotated[
    Annotated[str, Tag("str")]
    | Annotated[list[str], Tag("list[str]"), Field(max_length=MAX_PROMPTS)]
    | Annotated[list[int], Tag("list[int]")]
    | Annotated[list[list[int]], Tag("list[list[int]]"), Field(max_length=MAX_PROMPTS)],
    Discriminator(_prompt_kind),
]


class CompletionRequest(_Sampling):
    """``POST /v1/completions``. ``prompt``: text, texts, token ids, or lists of token ids."""

    refused: ClassVar[dict[str, str]] = REFUSED_IN_COMPLETIONS

    prompt: Prompt
    max_tokens: Annotated[
        Int | None,
        _no_unlimited("send how many tokens to generate, at most the context the prompt leaves (default 16)"),
    ] = Field(16, ge=0)  # 0 with echo: score the prompt only
    logprobs: Int | None = Field(None, ge=0, le=20)
    echo: bool | None = False
    suffix: str | None = None

    def check_supported(self, tok: Tokenizer) -> None:
        super().check_supported(tok)
        if self.suffix:
            raise NpgptError("suffix is not supported: GPT-2 only continues text", param="suffix")


# the content parts that are text, and the field that holds it: OpenAI's chat "text"; the Responses API's
# "input_text" and "output_text", which clients moving between the two APIs send to chat; an assistant turn's
# "refusal" part (OpenAI's, in the reply as its client sends it back); and a "thinking" part (a reasoning model's
# thoughts, as Anthropic's API and LangChain write them back): vLLM reads each as text
TEXT_PARTS = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal", "thinking": "thinking"}


class ContentPart(Body):
    """One part of a message's content. Only text parts (:data:`TEXT_PARTS`) are read (several are one text,
    joined by line breaks as vLLM and llama.cpp's server join them); any other ``type`` (``image_url``,
    ``input_audio``, ``file``) parses, to be refused by name in :meth:`ChatRequest.check_supported` rather than
    as a shape pydantic did not expect."""

    type: str
    text: str | None = None
    refusal: str | None = None  # a "refusal" part's text
    thinking: str | None = None  # a "thinking" part's

    @property
    def said(self) -> str | None:
        """The part's text, from the field its type keeps it in (:data:`TEXT_PARTS`)."""
        return getattr(self, TEXT_PARTS.get(self.type, "text"))


# a message's content parts: at least one, as OpenAI requires ("content": [] is its 400 "empty array")
ContentParts = Annotated[list[ContentPart], Field(min_length=1)]


def _empty_is_none(v: Any) -> Any:
    """``""``, ``[]`` or ``{}`` as null: a field left empty by a client that sends every field back."""
    return None if v in ("", [], {}) and not isinstance(v, bool) else v


class FunctionCall(Body):
    """A function the assistant called, as OpenAI lists it: its ``name`` and its ``arguments`` (JSON text; an
    object too, and left out as none, as vLLM takes them)."""

    name: str
    arguments: str | dict[str, Any] | None = None

    def written(self) -> str:
        """The call as the transcript writes it: ``get_weather({"city": "Paris"})``."""
        args = self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments or {})
        return f"{self.name}({args.strip()})"


class CustomCall(Body):
    """A ``custom`` tool the assistant called, as OpenAI lists it: its ``name`` and its free-text ``input``."""

    name: str
    input: str = ""

    def written(self) -> str:
        return f"{self.name}({self.input.strip()})"


class ToolCall(Body):
    """One of an assistant message's ``tool_calls``: ``{"id", "type": "function", "function": {...}}`` or a
    ``custom`` one; the object its ``type`` names is required, as OpenAI answers."""

    id: str | None = None
    type: str = "function"
    function: FunctionCall | None = None
    custom: CustomCall | None = None


class ChatMessage(Body):
    """A message. ``role`` is any string here, checked against the transcript's roles in
    :meth:`ChatRequest.check_supported`. ``name`` (a participant's name, OpenAI's way to tell apart speakers of
    one role) labels its line, ``User (Alice): ...`` (:mod:`npgpt.chat`). An assistant turn's ``tool_calls`` (or
    deprecated ``function_call``) are written on its line after its content, as text (``get_weather({...})``),
    and a ``tool`` message's result is a ``Tool`` line named by the function whose call its ``tool_call_id``
    answers (:func:`turns`), so a history with tool results reads as it happened (vLLM reads them too, into its
    chat template). ``refusal`` and ``audio`` have no line: set, they are refused by name (:func:`check_message`),
    null or empty they change nothing."""

    role: str
    content: str | ContentParts | None = None
    name: str | None = None
    # an assistant turn as the client got it back: empty ([], "", {}) is no call, as null is
    tool_calls: Annotated[list[ToolCall] | None, BeforeValidator(_empty_is_none)] = None
    function_call: Annotated[FunctionCall | None, BeforeValidator(_empty_is_none)] = None  # tool_calls' old form
    tool_call_id: str | None = None  # a tool message's: the call it answers
    # an assistant turn's parts that have no line in the transcript: refused once set (see check_message)
    refusal: Any = None
    audio: Any = None

    @property
    def text(self) -> str:
        """The message's line after its label: its content, then the calls it made, written as text."""
        if isinstance(self.content, list):
            said = "\n".join(part.said or "" for part in self.content)  # as vLLM and llama.cpp join them
        else:
            said = self.content or ""
        calls = [c.written() for c in self.calls]
        return " ".join(x for x in (said.strip(), "; ".join(calls)) if x)

    @property
    def calls(self) -> list[FunctionCall | CustomCall]:
        """The calls this message made (none unless it is the assistant's)."""
        made = [c.function if c.type == "function" else c.custom for c in self.tool_calls or ()]
        return [c for c in [*made, self.function_call] if c is not None]


class FunctionDefinition(Body):
    """A tool's function, as OpenAI defines one: its ``name`` is required, of at most 64 characters (GPT-2
    never calls it)."""

    name: str = Field(max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class CustomToolDefinition(Body):
    """A ``custom`` tool, as OpenAI defines one (free text in, no JSON Schema): its ``name`` is required."""

    name: str = Field(max_length=64)
    description: str | None = None
    format: dict[str, Any] | None = None


class Tool(Body):
    """One of ``tools``: ``{"type": "function", "function": {...}}`` or ``{"type": "custom", "custom": {...}}``;
    the object its ``type`` names is required, as OpenAI answers."""

    type: str
    function: FunctionDefinition | None = None
    custom: CustomToolDefinition | None = None


class Prediction(Body):
    """OpenAI's Predicted Outputs: ``{"type": "content", "content": text or text parts}``."""

    type: str
    content: str | ContentParts


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``; the messages become one prompt, see :func:`chat_prompt`."""

    refused: ClassVar[dict[str, str]] = REFUSED_IN_CHAT

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Annotated[Int | None, _TO_THE_END] = Field(None, ge=1)  # default: up to the end of the context
    max_completion_tokens: Annotated[Int | None, _TO_THE_END] = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: Int | None = Field(None, ge=0, le=20)
    tool_choice: str | dict[str, Any] | None = None
    function_call: str | dict[str, Any] | None = None  # tool_choice's deprecated form, for ``functions``
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    # accepted and ignored (no tool is ever called, a prediction only speeds up the same reply), but typed
    tools: list[Tool] | None = None
    functions: list[FunctionDefinition] | None = None  # tools' deprecated form
    parallel_tool_calls: bool | None = None
    prediction: Prediction | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM's

    def check_supported(self, tok: Tokenizer) -> None:
        """Refuse what would silently not be honoured. ``tools`` are accepted (under ``tool_choice``
        "auto" a reply without a tool call is valid), but a call cannot be forced, nor with the deprecated
        ``function_call``. A message with no ``content`` is refused, as OpenAI does, unless it is the
        assistant's (whose content OpenAI lets be null): it would be read as an empty message."""
        super().check_supported(tok)
        for i, m in enumerate(self.messages):
            check_message(m, f"messages[{i}]")
            if m.content is None and m.role != "assistant":
                raise NpgptError(
                    f"Missing required parameter: 'messages[{i}].content'; a {m.role} message needs content",
                    param=f"messages[{i}].content",
                )
        # OpenAI's values, as its client types them; another is its 400, not read as the nearest one ("foo" as audio)
        for i, kind in enumerate(self.modalities or ()):
            _one_of(kind, ("text", "audio"), f"modalities[{i}]")
        for i, t in enumerate(self.tools or ()):
            _one_of(t.type, ("function", "custom"), f"tools[{i}].type")
        if self.prediction is not None:
            _one_of(self.prediction.type, ("content",), "prediction.type")
        if set(self.modalities or ()) - {"text"} or self.audio:
            raise NpgptError(
                'audio output is not supported: GPT-2 writes text only; leave out audio, or send modalities ["text"]',
                param="modalities" if self.modalities and self.modalities != ["text"] else "audio",
            )
        for i, t in enumerate(self.tools or ()):
            if getattr(t, t.type) is None:  # as OpenAI answers (t.type is function or custom: checked above)
                raise NpgptError(f"Missing required parameter: 'tools[{i}].{t.type}'.", param=f"tools[{i}].{t.type}")
        for field in ("tool_choice", "function_call"):
            if getattr(self, field) not in (None, "none", "auto"):
                raise NpgptError(
                    f'{field} is not supported: GPT-2 cannot call tools; leave it out or send "none" or "auto"',
                    param=field,
                )


# a message's fields the transcript has no place for (it is text lines), each refused once set, and what to do
_UNREAD_IN_MESSAGE = {
    "refusal": "the transcript reads a message's content only; put it in content",
    "audio": "GPT-2 reads text only; send the reply's transcript as content",
}


def check_message(m: ChatMessage, where: str) -> None:
    """Refuse a message the transcript cannot hold, naming the field (``where``: ``messages[i]``) and why."""
    if m.role not in _chat.ROLES:
        raise NpgptError(
            f"{where}.role must be one of {', '.join(_chat.ROLES)}, got {shown(m.role)}", param=f"{where}.role"
        )
    # an assistant turn as the client got it back: null or empty ([], "", {}) is the same message, accepted
    for field, instead in _UNREAD_IN_MESSAGE.items():
        if getattr(m, field):
            raise NpgptError(f"{where}.{field} is not supported: {instead}", param=f"{where}.{field}")
    for field in ("tool_calls", "function_call"):  # as OpenAI answers: only the assistant calls
        if getattr(m, field) and m.role != "assistant":
            raise NpgptError(
                f"{where}.{field} is an assistant message's field (the calls it made), not a {m.role} message's; "
                "leave it out",
                param=f"{where}.{field}",
            )
    for j, call in enumerate(m.tool_calls or ()):
        _one_of(call.type, ("function", "custom"), f"{where}.tool_calls[{j}].type")
        if getattr(call, call.type) is None:
            param = f"{where}.tool_calls[{j}].{call.type}"
            raise NpgptError(f"Missing required parameter: '{param}'.", param=param)
    if m.role == "function" and m.name is None:  # as OpenAI answers: the name of the function whose result it is
        raise NpgptError(
            f"Missing required parameter: '{where}.name'; a function message names the function whose result it is",
            param=f"{where}.name",
        )
    if m.name is not None and not _chat.NAME_PATTERN.fullmatch(m.name):  # in OpenAI's words
        raise NpgptError(
            f"Invalid '{where}.name': string does not match pattern. Expected a string that matches the pattern "
            f"'^{_chat.NAME_PATTERN.pattern}$' (one word: it labels the message's line, 'User (Alice):'); "
            f"got {shown(m.name)}",
            param=f"{where}.name",
        )
    for j, part in enumerate(m.content if isinstance(m.content, list) else ()):
        if part.type not in TEXT_PARTS:
            raise NpgptError(
                f"{where}.content[{j}].type {shown(part.type)} is not supported: GPT-2 reads text only; "
                'send {"type": "text", "text": ...} parts',
                param=f"{where}.content[{j}].type",
            )
        if part.said is None:
            field = TEXT_PARTS[part.type]
            raise NpgptError(
                f"Missing required parameter: '{where}.content[{j}].{field}'; a {part.type} part needs its {field}",
                param=f"{where}.content[{j}].{field}",
            )


class NextTokensRequest(Body):
    """``POST /v1/next_tokens`` (npgpt's own): the ``k`` most likely tokens to follow ``prompt``."""

    model: str | None = None
    prompt: str = Field(min_length=1)
    k: Int = Field(10, ge=1, le=100)


def turns(messages: list[ChatMessage]) -> list[_chat.Message]:
    """The messages as :mod:`npgpt.chat` takes them, ``(role, text, name)``. A ``tool`` message without a
    ``name`` is named by the function its ``tool_call_id`` answers, if an earlier assistant message made that
    call (``Tool (get_weather): ...``); else its line is ``Tool: ...``, as vLLM reads a result it cannot
    match (OpenAI's 400)."""
    called: dict[str, str] = {}  # call id -> the function's name
    out: list[_chat.Message] = []
    for m in messages:
        for c in m.tool_calls or ():
            call = c.function if c.type == "function" else c.custom
            if c.id is not None and call is not None and _chat.NAME_PATTERN.fullmatch(call.name):
                called[c.id] = call.name
        name = m.name
        if m.role == "tool" and name is None and m.tool_call_id is not None:
            name = called.get(m.tool_call_id)
        out.append((m.role, m.text, name))
    return out


def chat_prompt(messages: list[ChatMessage]) -> str:
    """The conversation as a plain transcript for GPT-2 to continue: :func:`npgpt.chat.chat_prompt`."""
    return _chat.chat_prompt(turns(messages))


def chat_stop(messages: list[ChatMessage]) -> tuple[str, ...]:
    """Where the reply ends: :func:`npgpt.chat.chat_stop`."""
    return _chat.chat_stop(turns(messages))
