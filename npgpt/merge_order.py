"""Which reorderings of GPT-2's BPE merges split every text as GPT-2's own order does.

A saved tokenizer (a Hugging Face ``merges.txt`` or ``tokenizer.json``, a GGUF's ``tokenizer.ggml.merges``) whose
merges are GPT-2's in another order is run in that order by transformers and llama.cpp. BPE (theirs and
tiktoken's alike) merges, again and again, the adjacent pair of lowest rank, leftmost first. Two merges *meet*
where one makes a part of the other (``Ġ t`` makes ``Ġt``, a part of ``Ġt he``) or where they can overlap, one's
right part the other's left (``Ġ t`` and ``t h`` in ``Ġ t h``). Swapping two merges neighbouring in rank that do
not meet changes no split: neither creates nor removes the other's pairs, so each is merged wherever it occurs,
in either order, before anything that depends on them. A reordering in which no two merges that meet trade
places is a series of such swaps, so it is harmless. One in which two that meet trade places may split some
text otherwise (``t h`` before ``Ġ t`` turns `` the`` into other tokens); it is not proven harmless, so refused.
"""

from __future__ import annotations

import bisect
import itertools


def misordered_merges(merges: list[str]) -> tuple[str, str] | None:
    """For GPT-2's merges in another order (each ``"left right"``, all 50000 once), two that meet and that
    ``merges`` puts the other way round from GPT-2 (the one it ranks first, then the other); None where no
    two do, so that every text is split as GPT-2 splits it. ValueError where ``merges`` is not a reordering."""
    from .tokenizer import gpt2_merges

    names = gpt2_merges()
    if len(merges) != len(names) or set(merges) != set(names):
        raise ValueError("not a reordering of GPT-2's merges")
    rank = {m: r for r, m in enumerate(merges)}
    new = [rank[m] for m in names]  # the file's rank of GPT-2's merge i
    gpt2 = [m.split(" ") for m in names]
    made = {a + b: i for i, (a, b) in enumerate(gpt2)}
    for j, parts in enumerate(gpt2):  # the merge that makes a part of another comes first
        for i in (made[p] for p in parts if p in made):
            if new[i] > new[j]:
                return names[j], names[i]
    starting: dict[str, list[int]] = {}
    for i, (a, _) in enumerate(gpt2):
        starting.setdefault(a, []).append(i)
    after_new = {t: [new[j] for j in js] for t, js in starting.items()}
    prefix_max = {t: list(itertools.accumulate(r, max)) for t, r in after_new.items()}
    suffix_min = {t: list(itertools.accumulate(reversed(r), min))[::-1] for t, r in after_new.items()}
    for i, (_, token) in enumerate(gpt2):  # (x, token) meets every (token, y): "x token y"
        after = starting.get(token)
        if not after:
            continue
        k = bisect.bisect_left(after, i)  # after[:k] come before merge i in GPT-2's order, the rest after it
        later = k + (k < len(after) and after[k] == i)  # (token, token) is no pair with itself
        if k and prefix_max[token][k - 1] > new[i]:
            return names[i], names[next(j for j in after[:k] if new[j] > new[i])]
        if later < len(after) and suffix_min[token][later] < new[i]:
            return names[next(j for j in after[later:] if new[j] < new[i])], names[i]
    return None
