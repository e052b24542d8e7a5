"""GGUF metadata and the tokenizer it carries: what ``gguf_format`` reads and ``gguf_write`` writes.

A GPT-2 GGUF must carry GPT-2's tokenizer (llama.cpp model ``gpt2``, GPT-2's 50257 tokens in GPT-2's order, its
merges, GPT-2's pre-tokenizer, nothing put around a prompt), one token per embedding row; the tokens a fine-tune
added are read at their ids, and generation ends where llama.cpp ends it (:data:`EOG_SPELLINGS`). Split from
``gguf_format`` (reading) and ``gguf_write`` (writing) so that each concern reads on its own.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, CheckpointWarning

GPT2_TOKENS = 50257
EOT = "<|endoftext|>"
EOT_ID = 50256  # <|endoftext|>: llama.cpp's bos and eos for GPT-2


def _field(reader: Any, path: Path, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise CheckpointError(f"{path}: GGUF metadata {key!r} is missing; the file was not written for GPT-2")
        return default
    return field.contents()


def _check_tokenizer(reader: Any, path: Path, n_rows: int) -> dict[str, Any] | None:
    """GPT-2's tokenizer, or CheckpointError: npgpt encodes text with GPT-2's BPE, not the file's. Returns the
    tokens a fine-tune added to it (:func:`_added_tokens`), None where it has none."""
    import gguf

    from ..tokenizer import gpt2_tokens

    K = gguf.Keys.Tokenizer
    if K.MODEL not in reader.fields:  # llama.cpp refuses such a file too
        raise CheckpointError(
            f"{path}: no tokenizer in its metadata ({K.MODEL} is missing); convert the model again with "
            "llama.cpp's convert_hf_to_gguf.py from a directory holding GPT-2's tokenizer files"
        )
    model = _field(reader, path, K.MODEL)
    if model != "gpt2":
        raise CheckpointError(
            f"{path}: tokenizer {model!r}, not GPT-2's byte-level BPE "
            "(tokenizer.ggml.model 'gpt2'); npgpt runs GPT-2 models with GPT-2's tokenizer"
        )
    tokens_field = reader.fields.get(K.LIST)
    tokens = [] if tokens_field is None else [bytes(tokens_field.parts[i]) for i in tokens_field.data]
    gpt2 = [t.encode("utf-8") for t in gpt2_tokens()]
    if tokens[:GPT2_TOKENS] != gpt2:
        raise CheckpointError(
            f"{path}: its {len(tokens)} tokens are not GPT-2's 50257 (a different BPE vocabulary, "
            "e.g. Llama 3's); npgpt only runs GPT-2's tokenizer"
        )
    if len(tokens) != n_rows:
        raise CheckpointError(f"{path}: {len(tokens)} tokens but {n_rows} embedding rows; the file is inconsistent")
    if (twice := _spelled_twice(tokens)) is not None:
        raise CheckpointError(f"{path}: {twice}; the file is corrupt: re-convert it")
    _check_tokenizer_settings(reader, path)
    return _tokenizer(reader, path, tokens)


def check_writable_tokenizer(tokenizer: dict[str, Any] | None) -> None:
    """CheckpointError for a tokenizer whose GGUF vocabulary llama.cpp cannot load (two tokens of one spelling),
    from the tokenizer alone: convert() refuses it before a large source's weights are read, as save() would after."""
    if tokenizer is None or not tokenizer.get("added_tokens"):
        return
    n_tokens = max(GPT2_TOKENS, 1 + max(t["id"] for t in tokenizer["added_tokens"]))
    if (twice := _spelled_twice(_gpt2_vocab(n_tokens, tokenizer)[0])) is not None:
        raise CheckpointError(f"cannot write a GGUF: {twice}")


def _spelled_twice(tokens: list[bytes] | list[str]) -> str | None:
    """What is wrong where two tokens have one spelling (llama.cpp maps each spelling to one id and aborts on
    such a vocabulary; an empty token it names ``[EMPTY_{id}]``), None where none has."""
    first: dict[Any, int] = {}
    for i, token in enumerate(tokens):
        empty = f"[EMPTY_{i}]"
        j = first.setdefault(token or (empty.encode() if isinstance(token, bytes) else empty), i)
        if j != i:
            return f"tokens {j} and {i} are both {token[:40]!r}, which llama.cpp cannot load (one id per spelling)"
    return None


# The pre-tokenizers llama.cpp runs as GPT-2's (src/llama-vocab.cpp: LLAMA_VOCAB_PRE_TYPE_GPT2, nothing else set).
GPT2_PRE = frozenset(
    {"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum", "modern-bert"}
)


def _check_tokenizer_settings(reader: Any, path: Path) -> None:
    """CheckpointError for tokenizer metadata with which llama.cpp turns a text into other ids than GPT-2's BPE
    (npgpt's): another pre-tokenizer (how text is split before the merges), other merges, or a token put around
    each prompt (``add_bos_token`` true, as the converter writes a tokenizer_config.json's; a Hugging Face
    directory with it is refused too) or a space before it. A pre-tokenizer llama.cpp runs as GPT-2's
    (:data:`GPT2_PRE`) is GPT-2's. A file without ``tokenizer.ggml.pre`` (converted before llama.cpp wrote it, in
    2024) is read with GPT-2's, as it was meant and as transformers reads it (``from_pretrained(gguf_file=...)``),
    with a :class:`~npgpt.errors.CheckpointWarning`: llama.cpp splits its text with its 'default' pre-tokenizer
    instead (other ids wherever digits or punctuation run together) and warns that generation is degraded."""
    import gguf

    from ..merge_order import misordered_merges
    from ..tokenizer import gpt2_merges

    K = gguf.Keys.Tokenizer
    pre = _field(reader, path, K.PRE, "")
    if pre == "":  # llama.cpp: "missing pre-tokenizer type, using: 'default'"
        warnings.warn(
            f"{path}: no pre-tokenizer in its metadata ({K.PRE}); read with GPT-2's, which its tokens and merges "
            "are, but llama.cpp splits its text with its 'default' one (other ids for runs of digits or punctuation): "
            "convert the model again with llama.cpp's convert_hf_to_gguf.py, which writes 'gpt-2'",
            CheckpointWarning,
            stacklevel=2,
        )
    elif pre not in GPT2_PRE:
        raise CheckpointError(
            f"{path}: pre-tokenizer {pre!r} ({K.PRE}), not GPT-2's 'gpt-2': llama.cpp splits its text another way; "
            "npgpt only runs GPT-2's tokenizer"
        )
    for key, what in ((K.ADD_BOS, "before"), (K.ADD_EOS, "after"), (K.ADD_SEP, "after"), (K.ADD_PREFIX, "before")):
        if _field(reader, path, key, False) is not False:
            put, yourself = (
                ("a space", "begin the prompts with a space")
                if key == K.ADD_PREFIX
                else ("a special token", "put <|endoftext|> in the prompts")
            )
            raise CheckpointError(
                f"{path}: {key} is {_field(reader, path, key)!r}: llama.cpp puts {put} {what} every prompt, which "
                f"npgpt does not; convert the model again with it false (tokenizer_config.json) and {yourself} yourself"
            )
    field = reader.fields.get(K.MERGES)
    if field is None:  # llama.cpp: "cannot find tokenizer merges in model file"
        raise CheckpointError(
            f"{path}: no BPE merges in its metadata ({K.MERGES} is missing), which llama.cpp refuses too; convert the "
            "model again with llama.cpp's convert_hf_to_gguf.py from a directory holding GPT-2's tokenizer files"
        )
    merges = [bytes(field.parts[i]) for i in field.data]
    gpt2 = [m.encode("utf-8") for m in gpt2_merges()]
    if merges != gpt2:
        try:  # GPT-2's in another order: harmless unless two merges that meet trade places
            swapped = misordered_merges([m.decode("utf-8") for m in merges])
        except (ValueError, UnicodeDecodeError):
            pass
        else:
            if swapped is None:
                return
            raise CheckpointError(
                f"{path}: GPT-2's BPE merges, but {swapped[0]!r} before {swapped[1]!r}: llama.cpp would split text "
                "into other tokens; npgpt only runs GPT-2's tokenizer"
            )
        first = next(
            (i for i, (a, b) in enumerate(zip(merges, gpt2, strict=False)) if a != b), min(len(merges), len(gpt2))
        )
        raise CheckpointError(
            f"{path}: its {len(merges)} BPE merges are not GPT-2's {len(gpt2)} (merge {first} differs): llama.cpp "
            "would split text into other tokens; npgpt only runs GPT-2's tokenizer"
        )


def _tokenizer(reader: Any, path: Path, tokens: list[bytes]) -> dict[str, Any] | None:
    """The tokenizer spec of a GGUF (``tokenizer_from_spec``'s): the tokens a fine-tune added
    (:func:`_added_tokens`) and the tokens that end a generation (:func:`_eos_token_ids`); None for GPT-2's own.
    CheckpointError, naming the file, for one npgpt cannot build (an eos on a padding row)."""
    from ..char_tokenizer import tokenizer_from_spec

    types = _token_types(reader, path, tokens)
    spec = _added_tokens(path, tokens, types, _eog_spellings(reader))
    eos = _eos_token_ids(reader, path, tokens, types)
    if eos is None:
        return spec
    gpt2_own = [{"content": EOT, "id": EOT_ID, "special": True, "normalized": False}]
    spec = {**(spec or {"type": "gpt2", "added_tokens": gpt2_own}), "eos_token_id": eos}
    try:
        tokenizer_from_spec(spec)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return spec


def own_eos_ids(tokenizer: dict[str, Any] | None) -> list[int] | None:
    """The tokens besides ``<|endoftext|>`` that end a generation (the tokenizer spec's ``eos_token_id``), in the
    order the file's eos, eot and eom ids take them (:func:`_eos_token_ids` reads them back); [] for GPT-2's own,
    None for ids a GGUF cannot carry. GGUF names end tokens by id in those three keys only (llama.cpp's
    ``special_eog_ids``; gguf has no list of eos ids), and llama.cpp ends a generation at a token spelled as one of
    its end tokens (:data:`EOG_SPELLINGS`, the FIM spellings) whatever the keys say: so any number of such tokens,
    and at most three others. None also without ``<|endoftext|>``, at which llama.cpp ends a GPT-2 whatever the
    file says."""
    eos = None if tokenizer is None else tokenizer.get("eos_token_id")
    if eos is None:
        return []
    own = [i for i in eos if i != EOT_ID]
    spellings = EOG_SPELLINGS.union(*(spelled for _, spelled in _FIM_SPELLINGS))
    by_spelling = {t["id"] for t in (tokenizer or {}).get("added_tokens", []) if t["content"] in spellings}
    named = [i for i in own if i not in by_spelling]
    if EOT_ID not in eos or len(named) > 3:
        return None
    return own if len(own) <= 3 else named + [i for i in own if i in by_spelling]


# llama.cpp (src/llama-vocab.cpp, ``special_eog_ids``) ends a generation at a token spelled one of these, whatever
# the file's eos, eot and eom ids say, and types it CONTROL (https://github.com/ggml-org/llama.cpp/issues/9606).
EOG_SPELLINGS = frozenset(
    {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
        "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
        "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
    }
)  # fmt: skip
# ... and at its FIM pad, repo and file-separator tokens: the metadata's id, else a token spelled so (a GPT-2
# fine-tune's added "[PAD]" is llama.cpp's FIM pad token, so it ends a generation there).
_FIM_SPELLINGS = (
    ("FIM_PAD_ID", ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]")),
    ("FIM_REP_ID", ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>")),
    ("FIM_SEP_ID", ("<|file_sep|>",)),
)


def _eog_spellings(reader: Any) -> frozenset[bytes]:
    """The spellings at which llama.cpp ends a generation in this file: :data:`EOG_SPELLINGS`, and the FIM
    spellings of each FIM token the metadata does not name by id."""
    import gguf

    spelled = set(EOG_SPELLINGS)
    for name, spellings in _FIM_SPELLINGS:
        if getattr(gguf.Keys.Tokenizer, name) not in reader.fields:
            spelled |= set(spellings)
    return frozenset(t.encode("utf-8") for t in spelled)


def _token_types(reader: Any, path: Path, tokens: list[bytes]) -> list[int]:
    """Each token's ``tokenizer.ggml.token_type``, read as llama.cpp reads it: optional, every token NORMAL where
    the file has none, except a padded vocabulary's rows as the converter names them (``[PAD{i}]``), which stay
    padding; CheckpointError, as llama.cpp refuses them, for types that are not int32 or fewer than the tokens."""
    import gguf

    T, key = gguf.TokenType, gguf.Keys.Tokenizer.TOKEN_TYPE
    field = reader.fields.get(key)
    if field is None:
        padding = {f"[PAD{i}]".encode(): int(T.UNUSED) for i in range(GPT2_TOKENS, len(tokens))}
        return [padding.get(t, int(T.NORMAL)) if i >= GPT2_TOKENS else int(T.NORMAL) for i, t in enumerate(tokens)]
    if field.types != [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32]:
        raise CheckpointError(
            f"{path}: GGUF metadata {key!r} is not an array of int32 token types; the file is corrupt: "
            "re-download or re-convert it"
        )
    types = [int(field.parts[i][0]) for i in field.data]
    if len(types) < len(tokens):
        raise CheckpointError(
            f"{path}: GGUF metadata {key!r} has {len(types)} token types for {len(tokens)} tokens; the file is "
            "corrupt: re-download or re-convert it"
        )
    return types


def _eos_token_ids(reader: Any, path: Path, tokens: list[bytes], types: list[int]) -> list[int] | None:
    """The ids that end a generation, as llama.cpp collects them (``special_eog_ids``): the file's eos, eot and eom
    tokens (a chat fine-tune's ``<|im_end|>``: the converter writes tokenizer_config.json's ``eos_token``), its FIM
    pad, repo and separator tokens, and every token spelled as one of :data:`EOG_SPELLINGS` (``<|endoftext|>``,
    ``<|im_end|>``, ``<|eot_id|>``, ...) whatever the metadata says. A file without an eos id ends at
    ``<|endoftext|>`` (by its spelling), not at llama.cpp's default eos for a 'gpt2' tokenizer, token 11: that
    is GPT-2's ",", so a generation would end at its first comma. A padding row (UNUSED) spelled so is left
    out: npgpt never samples one. None for ``<|endoftext|>`` alone, as in GPT-2's own file."""
    import gguf

    K = gguf.Keys.Tokenizer
    n_tokens = len(tokens)

    def token_id(key: str, default: int | None) -> int | None:
        if key not in reader.fields:
            return default
        value = _field(reader, path, key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n_tokens:
            raise CheckpointError(
                f"{path}: GGUF metadata {key!r} is {value!r}, not one of its {n_tokens} tokens; the file is corrupt: "
                "re-download or re-convert it"
            )
        return value

    named = [token_id(K.EOS_ID, None), token_id(K.EOT_ID, None), token_id(K.EOM_ID, None)]
    named += [token_id(getattr(K, name), None) for name, _ in _FIM_SPELLINGS]
    spelled, unused = _eog_spellings(reader), int(gguf.TokenType.UNUSED)
    ids = {i for i in named if i is not None}
    ids |= {i for i, t in enumerate(tokens) if t in spelled and (i < GPT2_TOKENS or types[i] != unused)}
    texts = {tokens[i] for i in ids}
    # llama.cpp's two exceptions: gpt-oss's and solar-open's <|end|>, and gemma4's and plamo's </s>, do not end one
    has_call = bool(texts & {b"<|call|>", b"<|calls|>"})
    if b"<|end|>" in texts and has_call and texts & {b"<|return|>", b"<|flush|>"}:
        ids = {i for i in ids if tokens[i] != b"<|end|>"}
    if b"</s>" in texts and texts & {b"<|tool_response>", b"<|plamo:eos|>"}:
        ids = {i for i in ids if tokens[i] != b"</s>"}
    return None if ids == {EOT_ID} else sorted(ids)


def _added_tokens(
    path: Path, tokens: list[bytes], types: list[int], eog_spellings: frozenset[bytes]
) -> dict[str, Any] | None:
    """The added tokens of a GGUF's tokenizer as a spec for ``tokenizer_from_spec`` (None: GPT-2's alone).
    llama.cpp's converter writes a fine-tune's added tokens as CONTROL (special ones: ``<|endoftext|>``,
    ``<|im_end|>``) or USER_DEFINED (``tok.add_tokens``), those on GPT-2's own ids too (``"hello"``, 31373),
    and a padded vocabulary's rows as UNUSED ``[PAD{i}]``, which stay padding. A token spelled as one that ends
    a generation (``eog_spellings``) is CONTROL whatever its type says, as llama.cpp overrides it."""
    import gguf

    T = gguf.TokenType
    added = []
    for i, kind in enumerate(types[: len(tokens)]):
        if i >= GPT2_TOKENS and kind != T.UNUSED and tokens[i] in eog_spellings:
            kind = T.CONTROL
        if kind not in (T.CONTROL, T.USER_DEFINED):
            if i >= GPT2_TOKENS and kind != T.UNUSED:
                name = T(kind).name if kind in set(T) else f"{kind} (no type llama.cpp knows)"
                raise CheckpointError(
                    f"{path}: token {i} ({tokens[i][:40]!r}) is of type {name}, a token of the BPE itself "
                    "past GPT-2's 50257; npgpt only runs GPT-2's tokenizer and the tokens a fine-tune added to it"
                )
            continue
        try:
            content = tokens[i].decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{path}: added token {i} is not UTF-8 text; the file is corrupt") from None
        special = kind == T.CONTROL
        added.append({"content": content, "id": i, "special": special, "normalized": not special})
    if all(t["id"] == EOT_ID for t in added):
        return None  # GPT-2's own
    if not any(t["id"] == EOT_ID for t in added):  # a file that typed <|endoftext|> NORMAL: still GPT-2's special
        added.insert(0, {"content": EOT, "id": EOT_ID, "special": True, "normalized": False})
    return {"type": "gpt2", "added_tokens": sorted(added, key=lambda t: t["id"])}


def _gpt2_vocab(n_vocab: int, tokenizer: dict[str, Any] | None = None) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges for the GGUF tokenizer, as the converter builds them for GPT-2: a
    fine-tune's added tokens (``tokenizer``, :meth:`Tokenizer.to_spec`) at their ids, CONTROL where special
    and USER_DEFINED where not, and a padded vocabulary's other rows ``[PAD{i}]``, UNUSED."""
    import gguf

    from ..tokenizer import gpt2_merges, gpt2_tokens

    tokens = list(gpt2_tokens())
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    types[EOT_ID] = int(gguf.TokenType.CONTROL)
    # A padded vocabulary (nanoGPT's 50304): the converter names the extra rows [PAD{i}], type UNUSED.
    tokens += [f"[PAD{i}]" for i in range(len(tokens), n_vocab)]
    types += [int(gguf.TokenType.UNUSED)] * (n_vocab - len(types))
    for t in (tokenizer or {}).get("added_tokens", []):  # on GPT-2's own ids too: its spelling is the token's
        tokens[t["id"]] = t["content"]
        types[t["id"]] = int(gguf.TokenType.CONTROL if t["special"] else gguf.TokenType.USER_DEFINED)
    return tokens, types, list(gpt2_merges())
