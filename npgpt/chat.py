"""The chat template GPT-2 is prompted with, shared by ``npgpt chat`` and the server's
``/v1/chat/completions`` (no web framework needed to import it).

GPT-2 is a text model, not a chat model: a conversation becomes a plain transcript to continue,
one line per message, ``Role: text``, ending in ``Assistant:`` for the reply::

    System: You are a helpful assistant.
    User: Hello!
    Assistant:

A message may carry its speaker's name (OpenAI's ``name``, telling apart participants of one role), shown
after the role as ``User (Alice): Hello!``; a name holds no whitespace (OpenAI's pattern), so it cannot
break a line. A tool's result (OpenAI's ``tool`` message, or the deprecated ``function`` one) is a ``Tool`` line,
named by the function it answers, after the assistant's line that called it (the call written as text,
``name(arguments)``: GPT-2 reads the calls of a history but never makes one)::

    User: What is the weather in Paris?
    Assistant: get_weather({"city": "Paris"})
    Tool (get_weather): 18 C, sunny
    Assistant:
 Each message's outer whitespace is dropped (a line break inside it is kept), so a history
kept by ``npgpt chat`` and one a client sends back to the server, replies as they came, make one transcript.
Generation stops at ``"\\nUser:"`` (:data:`CHAT_STOP`), where the model starts to write the user's
next turn (also at ``"\\nUser ("`` when users are named: :func:`chat_stop`), and the reply's leading
whitespace is dropped; with a tool's line in the history, also at ``"\nTool:"`` and ``"\nTool ("``, where the
model starts to write a tool's result itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .errors import NpgptError, shown

ROLES = {
    "system": "System",
    "developer": "System",
    "user": "User",
    "assistant": "Assistant",
    "tool": "Tool",  # a tool's result, OpenAI's and vLLM's role for it
    "function": "Tool",  # the same, OpenAI's deprecated role for it
}
CHAT_STOP = ("\nUser:",)
NAMED_USER_STOP = "\nUser ("  # the model writing a named user's turn, "\nUser (Alice):"
TOOL_STOP = ("\nTool:", "\nTool (")  # the model writing a tool's result, where the history holds one
# OpenAI's pattern for a message's name: no whitespace (a newline would start a line of its own) and none of <|\/>
NAME_PATTERN = re.compile(r"[^\s<|\\/>]+")

# (role, text), or (role, text, name): role is one of ROLES' keys, name None or a participant's name
Message = tuple[str, str] | tuple[str, str, str | None]


def chat_prompt(messages: Sequence[Message]) -> str:
    """The transcript for ``messages`` (``(role, text)`` or ``(role, text, name)``, oldest first), ending in
    ``Assistant:``.

    Raises NpgptError for a message of another shape (OpenAI's dict), a role not in ``ROLES`` (a tool's message
    has no line in GPT-2's transcript) or a name that does not match :data:`NAME_PATTERN`.
    """
    check_messages(messages)
    if unknown := sorted({m[0] for m in messages if m[0] not in ROLES}, key=str):
        raise NpgptError(f"unknown chat role(s) {', '.join(map(repr, unknown))}; the roles are {', '.join(ROLES)}")
    for name in map(name_of, messages):
        if name is not None and not NAME_PATTERN.fullmatch(name):
            raise NpgptError(
                f"a chat message's name must be one word without any of <|\\/> (it follows the role, as in "
                f"'User (Alice):'), got {shown(name)}"
            )
    # stripped: a reply cut before "\nUser:" can end in "\n", which would leave an empty line in the transcript
    lines = [f"{speaker(m[0], name_of(m))}: {m[1].strip()}" for m in messages]
    return "\n".join([*lines, "Assistant:"])


def check_messages(messages: Sequence[Message]) -> None:
    """NpgptError naming the fix unless ``messages`` is a list of ``(role, text)`` or ``(role, text, name)`` with
    text a string: OpenAI's ``{"role": ..., "content": ...}`` was a bare KeyError(0), a text of None an
    AttributeError, one string a role per character."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise NpgptError(f"chat messages must be a list of (role, text) pairs, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if isinstance(m, dict):
            raise NpgptError(
                f"chat message {i} is a dict; npgpt's are (role, text) or (role, text, name) tuples: for OpenAI's "
                "messages pass [(m['role'], m['content']) for m in messages]"
            )
        if not isinstance(m, (tuple, list)) or len(m) not in (2, 3):
            raise NpgptError(f"chat message {i} must be (role, text) or (role, text, name), got {shown(m)[:80]}")
        if not isinstance(m[0], str):
            raise NpgptError(f"chat message {i}'s role must be one of {', '.join(ROLES)}, got {shown(m[0])[:80]}")
        if not isinstance(m[1], str):
            raise NpgptError(f"chat message {i}'s text must be a string, got {type(m[1]).__name__}")
        if len(m) == 3 and m[2] is not None and not isinstance(m[2], str):
            raise NpgptError(f"chat message {i}'s name must be a string or None, got {type(m[2]).__name__}")


def name_of(message: Message) -> str | None:
    return message[2] if len(message) > 2 else None


def speaker(role: str, name: str | None = None) -> str:
    """A line's label: ``User``, or ``User (Alice)`` for a named participant."""
    return ROLES[role] if name is None else f"{ROLES[role]} ({name})"


def chat_stop(messages: Sequence[Message]) -> tuple[str, ...]:
    """Where a reply to ``messages`` ends: :data:`CHAT_STOP`, and where the model starts a named user's
    turn if a user message has a name (the model then writes ``User (Alice):``, which ``"\\nUser:"`` misses),
    and a tool's result if the history holds one (:data:`TOOL_STOP`: a result is the tool's to give, not the
    model's)."""
    named = any(m[0] == "user" and name_of(m) is not None for m in messages)
    tools = any(m[0] in ("tool", "function") for m in messages)
    return (*CHAT_STOP, *((NAMED_USER_STOP,) if named else ()), *(TOOL_STOP if tools else ()))


def fit_history(
    messages: Sequence[Message], count_tokens: Callable[[str], int], budget: int
) -> tuple[list[Message], int]:
    """The newest messages whose transcript fits in ``budget`` tokens, and how many were dropped.

    System messages are always kept; the oldest other messages go first, a whole user turn (with the
    replies after it) at a time, so the transcript never opens on a reply. The last message is
    never dropped: if it alone does not fit, the result still holds it and the caller must refuse it.
    """
    check_messages(messages)
    system = [m for m in messages if m[0] in ("system", "developer")]
    turns = [m for m in messages if m[0] not in ("system", "developer")]
    dropped = 0
    while len(turns) > 1 and count_tokens(chat_prompt([*system, *turns])) > budget:
        cut = next((i for i in range(1, len(turns)) if turns[i][0] == "user"), len(turns) - 1)
        dropped += cut
        turns = turns[cut:]
    return [*system, *turns], dropped


@dataclass
class Conversation:
    """A chat's history kept within a token budget, as ``npgpt chat`` holds it.

    ``count_tokens``: the tokenizer's count of a text; ``budget``: tokens the transcript may take
    (the model's context less the room kept for a reply); ``system``: a message always kept first.
    """

    count_tokens: Callable[[str], int]
    budget: int
    system: str | None = None
    history: list[Message] = field(default_factory=list)

    def ask(self, message: str) -> tuple[str, int]:
        """The transcript to continue for the user's ``message``, and how many old messages were dropped
        to fit it (see :func:`fit_history`). Raises NpgptError (``param="budget"``) if the message does not fit
        even alone."""
        start: list[Message] = [("system", self.system)] if self.system else []
        fitted, dropped = fit_history([*start, *self.history, ("user", message)], self.count_tokens, self.budget)
        prompt = chat_prompt(fitted)
        if (tokens := self.count_tokens(prompt)) > self.budget:
            raise NpgptError(
                f"that message makes a {tokens}-token transcript, more than the conversation's budget={self.budget}; "
                "say less (or raise budget=)",
                param="budget",
            )
        self.history = fitted[len(start) :]
        return prompt, dropped

    def answer(self, reply: str) -> None:
        """Record the model's reply to the last message: its text (a Completion or a list was an AttributeError)."""
        if not isinstance(reply, str):
            hint = "; pass its .text" if hasattr(reply, "text") else ""
            raise NpgptError(f"the reply must be its text, a string, got {type(reply).__name__}{hint}", param="reply")
        self.history.append(("assistant", reply.strip()))

    def reset(self) -> None:
        """Forget every message but the system message."""
        self.history = []
