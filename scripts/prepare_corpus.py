"""Write the bundled model's corpus: the King James Bible as plain prose, split train / held-out.

The text comes from Debian's ``bible-kjv-text`` package (public domain; read through the
``bible`` program of ``bible-kjv``, since the package stores it compressed)::

    apt-get install -y bible-kjv-text
    python scripts/prepare_corpus.py            # -> data/kjv/{train,heldout}.txt + the test fixture

Cleaning: ``bible -f`` prints one verse per line as ``Ge1:1 In the beginning God created ...``;
the reference is dropped, so each line is a verse that reads as prose, and a blank line ends
each chapter. Nothing else needs removing: the text has no markup.

Split (deterministic, by chapter, so held-out text is never a neighbour of a training window):
chapter ``i`` (0-based, Genesis 1 to Revelation 22) is held out when ``i % 30 == 15``, about
3 % of the text drawn from every part of the Bible. ``tests/fixtures/kjv_heldout.txt`` is the
first few held-out chapters, small enough for a fast test.

For ``npgpt train`` it also writes ``data/kjv/kjv.bin``: the GPT-2 token ids of the training
text, ``<|endoftext|>``, then those of the held-out text. Trained with the ``--val-fraction``
it prints, the run's held-out slice is exactly the held-out text, so the loss curve shows
held-out loss on text the model never saw. ``data/kjv/SOURCE.json`` records the package
versions, the split and what was written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # npgpt's tokenizer, from this checkout
HELDOUT_EVERY, HELDOUT_OFFSET = 30, 15
FIXTURE_CHAPTERS = 6  # held-out chapters copied into the test fixture
VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.+)$")  # "1Sm3:10 And the LORD came, ..."


def package_version(name: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"package {name} is not installed; run: apt-get install -y bible-kjv-text")
    return out.stdout


def read_verses() -> list[tuple[str, int, str]]:
    """(book abbreviation, chapter, verse text) for every verse, in canonical order."""
    if shutil.which("bible") is None:
        raise SystemExit("the `bible` program is missing; run: apt-get install -y bible-kjv-text")
    # -f turns pretty-printing off: one verse per line, prefixed by its reference.
    raw = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    verses = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        m = VERSE.match(line)
        if m is None:
            raise SystemExit(f"unexpected line from `bible`: {line!r}")
        book, chapter, _, text = m.groups()
        verses.append((book, int(chapter), " ".join(text.split())))
    return verses


def chapters(verses: list[tuple[str, int, str]]) -> list[tuple[str, str]]:
    """("Ge 1", text) per chapter; the text is one verse per line."""
    out: list[tuple[str, list[str]]] = []
    for book, chapter, text in verses:
        ref = f"{book} {chapter}"
        if not out or out[-1][0] != ref:
            out.append((ref, []))
        out[-1][1].append(text)
    return [(ref, "\n".join(lines) + "\n") for ref, lines in out]


def write(path: Path, chs: list[tuple[str, str]]) -> dict[str, object]:
    text = "\n".join(t for _, t in chs)  # a blank line between chapters
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    data = text.encode()
    return {
        "path": str(path.relative_to(ROOT)),
        "chapters": len(chs),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def write_tokens(path: Path, train_text: str, heldout_text: str) -> dict[str, object]:
    """Token file of train + ``<|endoftext|>`` + held-out, and the val fraction that splits it."""
    import numpy as np

    from npgpt.tokenizer import Tokenizer

    tok = Tokenizer()
    train_ids, heldout_ids = tok.encode(train_text), tok.encode(heldout_text)
    ids = np.asarray([*train_ids, tok.eot_id, *heldout_ids], dtype=np.uint16)
    ids.tofile(path)
    # npgpt's split holds out the last int(n * val_fraction) tokens; half a token of slack
    # keeps float rounding from moving the boundary by one.
    val_fraction = (len(heldout_ids) + 0.5) / len(ids)
    if len(ids) - int(len(ids) * val_fraction) != len(train_ids) + 1:
        raise SystemExit("internal error: val_fraction does not split at the held-out text")
    return {
        "path": str(path.relative_to(ROOT)),
        "train_tokens": len(train_ids),
        "heldout_tokens": len(heldout_ids),
        "val_fraction": round(val_fraction, 12),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "kjv")
    parser.add_argument("--fixture", type=Path, default=ROOT / "tests" / "fixtures" / "kjv_heldout.txt")
    args = parser.parse_args()

    verses = read_verses()
    chs = chapters(verses)
    if len(verses) != 31102 or len(chs) != 1189:
        raise SystemExit(f"expected 31102 verses in 1189 chapters, got {len(verses)} in {len(chs)}")
    heldout = [c for i, c in enumerate(chs) if i % HELDOUT_EVERY == HELDOUT_OFFSET]
    train = [c for i, c in enumerate(chs) if i % HELDOUT_EVERY != HELDOUT_OFFSET]
    record = {
        "source": "Debian bible-kjv-text (King James Version, public domain), read with `bible -f Gen1:1-Rev22:21`",
        "packages": {p: package_version(p) for p in ("bible-kjv-text", "bible-kjv")},
        "split": f"chapter i (0-based) held out when i % {HELDOUT_EVERY} == {HELDOUT_OFFSET}",
        "heldout_chapters": [ref for ref, _ in heldout],
        "train": write(args.out / "train.txt", train),
        "heldout": write(args.out / "heldout.txt", heldout),
        "fixture": write(args.fixture, heldout[:FIXTURE_CHAPTERS]),
    }
    record["tokens"] = write_tokens(
        args.out / "kjv.bin",
        (args.out / "train.txt").read_text(encoding="utf-8"),
        (args.out / "heldout.txt").read_text(encoding="utf-8"),
    )
    (args.out / "SOURCE.json").write_text(json.dumps(record, indent=1) + "\n")
    for part in ("train", "heldout", "fixture"):
        r = record[part]
        print(f"{r['path']}: {r['chapters']} chapters, {r['bytes']:,} bytes")
    t = record["tokens"]
    print(
        f"{t['path']}: {t['train_tokens']:,} training + {t['heldout_tokens']:,} held-out tokens; "
        f"train with --val-fraction {t['val_fraction']}"
    )


if __name__ == "__main__":
    main()
