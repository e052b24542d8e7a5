"""llama.cpp as a comparison engine for ``npgpt bench``: the same weights, converted to GGUF, timed by its tools.

npgpt does not link llama.cpp; it drives a llama.cpp checkout the user built with cmake. The Hugging Face
checkpoint the bench writes is converted by llama.cpp's own ``convert_hf_to_gguf.py`` to f32, f16 and q8_0,
and each GGUF is timed by llama.cpp's own benchmark programs, so the figures are the ones llama.cpp's
maintainers would report:

- ``llama-bench -p N -n M -r 3 -o json``: prefill tokens/s (the ``n_gen == 0`` test) and batch-1 decode
  tokens/s (the ``n_prompt == 0`` test, decoding from an empty cache), each the mean of its 3 repetitions;
- ``llama-batched-bench -npp P -ntg M -npl B1,B2,... --output-format jsonl``: decode tokens/s of all
  sequences together (``speed_tg``) for every batch size above 1; one pass, no repetitions.

Each GGUF is deleted once timed (the f32 one is as big as the weights). Whatever fails (conversion, a
tool, unreadable output) becomes ``{"error": ...}`` in that engine's entry, so the rest of the bench stands.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import NpgptError
from ..files import atomic_path, cannot_write
from .system import other_cpu_meter

OUTTYPES = ("f32", "f16", "q8_0")  # converter --outtype values: npgpt's own precision, and llama.cpp's usual two
BUILD_HINT = (
    "cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON && "
    "cmake --build build -j --target llama-bench llama-batched-bench"
)
TIMEOUT_S = 1800  # per tool run: far above a 124M model's minutes, but a hung tool must not hang the bench
GPT2_VOCAB = 50257  # npgpt's vendored tokenizer (npgpt/assets/encoder.json)


def find_tools(llama_dir: str | Path) -> dict[str, Path]:
    """Paths of ``llama-bench``, ``llama-batched-bench`` and ``convert_hf_to_gguf.py`` in a llama.cpp dir.

    The programs are looked for in ``build/bin`` (a cmake build), ``bin`` (an install) and the directory
    itself; the converter at the top of the checkout, where it finds its ``conversion`` and ``gguf-py``.
    """
    root = Path(llama_dir).expanduser()
    if not root.is_dir():
        raise NpgptError(
            f"llama_cpp={str(llama_dir)!r}: not a directory; point it at a llama.cpp checkout",
            param="llama_cpp",
            keywords=("llama_cpp",),
        )
    tools: dict[str, Path] = {}
    missing = []
    for name in ("llama-bench", "llama-batched-bench"):
        found = next(
            (
                d / name
                for d in (root / "build" / "bin", root / "bin", root)
                if (d / name).is_file() and os.access(d / name, os.X_OK)
            ),
            None,
        )
        if found is None:
            missing.append(name)
        else:
            tools[name] = found
    if (root / "convert_hf_to_gguf.py").is_file():
        tools["convert"] = root / "convert_hf_to_gguf.py"
    else:
        missing.append("convert_hf_to_gguf.py")
    if missing:
        raise NpgptError(
            f"{', '.join(missing)} not found in {root} (looked in build/bin, bin and the directory "
            f"itself); build llama.cpp there with: {BUILD_HINT}"
        )
    return tools


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _run(cmd: list[str], what: str) -> str:
    """stdout of ``cmd``; a failure, a time-out or a missing program as a one-line NpgptError."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise NpgptError(f"{what} took over {TIMEOUT_S} s") from None
    except OSError as e:
        raise NpgptError(f"{what} could not start: {e}") from None
    if proc.returncode != 0:
        raise NpgptError(f"{what} failed ({proc.returncode}): {_last_line(proc.stderr or proc.stdout)}")
    return proc.stdout


def _prepare_hf_dir(hf_dir: Path, out: Path) -> Path:
    """A directory the converter accepts, made of links to ``hf_dir``'s files (the weights are not copied).

    Two gaps of checkpoints written by npgpt or by transformers 5 are filled: the converter's GPT-2 class
    reads ``n_ctx`` from config.json (transformers 5 writes only ``n_positions``), and it builds the
    vocabulary with ``AutoTokenizer``, so tokenizer files must be there (npgpt's own are GPT-2's).
    """
    try:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for f in hf_dir.iterdir():
            if f.name != "config.json" and f.is_file():
                try:
                    (out / f.name).symlink_to(f.resolve())
                except OSError:  # no symlinks (some filesystems, Windows): a copy does the same
                    shutil.copy2(f, out / f.name)
    except OSError as e:  # a full disk, a read-only work folder: one line, an error entry
        raise cannot_write(out, e) from None
    config = json.loads((hf_dir / "config.json").read_text())
    config.setdefault("n_ctx", config.get("n_positions", 1024))
    with atomic_path(out / "config.json") as tmp:
        Path(tmp).write_text(json.dumps(config, indent=2))
    has_tokenizer = (out / "tokenizer.json").exists() or (
        (out / "vocab.json").exists() and (out / "merges.txt").exists()
    )
    if not has_tokenizer:
        vocab = config.get("vocab_size", GPT2_VOCAB)
        if vocab < GPT2_VOCAB:  # the converter asserts every token id fits the model's vocabulary
            raise NpgptError(
                f"llama.cpp's converter needs a tokenizer that fits the model: GPT-2's has "
                f"{GPT2_VOCAB} tokens, the model's vocabulary {vocab}"
            )
        from ..tokenizer import default_files

        encoder_json, vocab_bpe = default_files()
        # encoder.json is GPT-2's vocab.json and vocab.bpe its merges.txt
        for source, name in ((encoder_json, "vocab.json"), (vocab_bpe, "merges.txt")):
            with atomic_path(out / name) as tmp:
                shutil.copyfile(source, tmp)
    return out


def to_gguf(hf_dir: str | Path, tools: dict[str, Path], outtype: str, out_path: str | Path) -> Path:
    """Convert the Hugging Face checkpoint ``hf_dir`` to a GGUF of ``outtype`` (f32, f16, q8_0…) at ``out_path``.

    Runs llama.cpp's converter with this interpreter: npgpt's environment has the torch, safetensors and
    transformers it imports, and it puts the checkout's own ``gguf-py`` on ``sys.path`` itself.
    """
    out_path = Path(out_path)
    src = out_path.parent / f"{out_path.stem}-hf"
    try:
        _prepare_hf_dir(Path(hf_dir), src)
        _run(
            [sys.executable, str(tools["convert"]), str(src), "--outtype", outtype, "--outfile", str(out_path)],
            f"convert_hf_to_gguf.py --outtype {outtype}",
        )
    finally:
        shutil.rmtree(src, ignore_errors=True)
    if not out_path.is_file():
        raise NpgptError(f"convert_hf_to_gguf.py --outtype {outtype} wrote no {out_path}")
    return out_path


def _llama_bench(tools: dict[str, Path], gguf: Path, s: Any, test: str, repack: bool = True) -> dict[str, Any]:
    """One ``llama-bench`` test: ``test`` "prefill" (``-p N -n 0``) or "decode" (``-p 0 -n M``, batch 1).

    Each test runs in its own process, so a crash in one (llama.cpp's AMX-repacked Q8_0 weights crash
    its batched prompt path on some hosts) does not lose the other. ``repack=False`` adds ``--repack 0``.
    """
    # -r 3 repeats the test after a warm-up. llama-bench has no -tb: -t is for prompt and generation alike.
    prompt, gen = (s.prompt_len, 0) if test == "prefill" else (0, s.new_tokens)
    cmd = [str(tools["llama-bench"]), "-m", str(gguf), "-p", str(prompt), "-n", str(gen), "-r", "3"]
    cmd += ["-t", str(s.threads), "-o", "json"] + ([] if repack else ["--repack", "0"])
    out = _run(cmd, "llama-bench")
    try:
        row = next(t for t in json.loads(out) if t["n_prompt"] == prompt and t["n_gen"] == gen)
    except (ValueError, TypeError, KeyError, StopIteration):
        raise NpgptError(f"llama-bench printed no pp{prompt}/tg{gen} JSON: {_last_line(out)[:200]}") from None
    return {
        "prefill_tps" if test == "prefill" else "decode_1": float(row["avg_ts"]),
        "model_bytes": int(row["model_size"]),  # tensor bytes llama.cpp reads, for its bandwidth ceiling
        # "gpt2 0.1B all F32" / "gpt2 0.1B Q8_0": the last word is the main weight type (None if no words)
        "weight_type": (str(row.get("model_type", "")).split() or [""])[-1] or None,
        "kv_cache_type": row.get("type_k"),
        "version": f"{row.get('build_commit', '?')} (build {row.get('build_number', '?')})",
    }


def _with_fallback(run: Any, what: str, notes: list[str]) -> Any:
    """``run(repack=True)`` (llama.cpp's default); if that fails, ``run(repack=False)``, noting why in ``notes``."""
    try:
        return run(True)
    except NpgptError as e:
        result = run(False)
        notes.append(f"{what}: {e}; measured again with weight repacking off (--repack 0)")
        return result


def _batched_bench(
    tools: dict[str, Path], gguf: Path, s: Any, batches: list[int], repack: bool = True
) -> dict[str, float]:
    """Decode tokens/s of all sequences together at each batch size > 1 (``speed_tg``), one pass."""
    per_seq = s.short_prompt + s.new_tokens
    # -kvu: one KV cache shared by all sequences, so it must hold every sequence's prompt and tokens;
    # rounded up to 256 like llama.cpp pads n_ctx anyway.
    ctx = -(-max(batches) * per_seq // 256) * 256
    cmd = [
        str(tools["llama-batched-bench"]),
        "-m",
        str(gguf),
        "-t",
        str(s.threads),
        "-tb",
        str(s.threads),
        "-c",
        str(ctx),
        "-b",
        "2048",
        "-ub",
        "512",
        "-kvu",
        "-npp",
        str(s.short_prompt),
        "-ntg",
        str(s.new_tokens),
        "-npl",
        ",".join(map(str, batches)),
        "--output-format",
        "jsonl",
    ] + ([] if repack else ["--no-repack"])
    out = _run(cmd, "llama-batched-bench")
    speeds: dict[str, float] = {}
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                row = json.loads(line)
                # speed_tg = pl * tg / t_tg: generated tokens of all sequences per second ("speed" adds prefill)
                speeds[str(row["pl"])] = float(row["speed_tg"])
            except (ValueError, KeyError):
                continue
    lost = [b for b in batches if str(b) not in speeds]
    if lost:
        raise NpgptError(f"llama-batched-bench printed no speed_tg for batch {lost[0]}: {_last_line(out)[:200]}")
    return speeds


def measure_llamacpp(
    llama_dir: str | Path, hf_dir: str | Path, work_dir: str | Path, settings: Any
) -> dict[str, dict[str, Any]]:
    """``{"llama.cpp-f32": {...}, "llama.cpp-f16": ..., "llama.cpp-q8_0": ...}``, each an engine entry.

    An entry holds ``prefill_tps``, ``decode_tps`` (``{str(batch): tokens/s}``), ``gguf_mb``,
    ``model_bytes``, ``weight_type``, ``kv_cache_type``, ``version``, ``threads`` and ``other_cpu`` (Linux),
    or ``{"error": ...}``.
    ``settings`` is the bench's ``BenchSettings`` (prompt_len, short_prompt, new_tokens, batches, threads).
    A missing tool raises NpgptError: that is a usage error, not a failed measurement.
    """
    tools = find_tools(llama_dir)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    batched = sorted(b for b in set(settings.batches) if b > 1)
    engines: dict[str, dict[str, Any]] = {}
    for outtype in OUTTYPES:
        gguf = work / f"model-{outtype}.gguf"
        try:
            to_gguf(hf_dir, tools, outtype, gguf)
            entry: dict[str, Any] = {"gguf_mb": gguf.stat().st_size / 1e6, "threads": settings.threads}
            other_cpu = other_cpu_meter()  # as for npgpt's engines: the share of all cores others took
            notes: list[str] = []
            decode: dict[str, float] = {}
            if 1 in settings.batches:
                one = _with_fallback(lambda r, g=gguf: _llama_bench(tools, g, settings, "decode", r), "decode", notes)
                decode["1"] = one.pop("decode_1")
                entry.update(one)
            pre = _with_fallback(lambda r, g=gguf: _llama_bench(tools, g, settings, "prefill", r), "prefill", notes)
            entry.update(pre)
            if batched:
                decode.update(
                    _with_fallback(lambda r, g=gguf: _batched_bench(tools, g, settings, batched, r), "batched", notes)
                )
            entry["decode_tps"] = decode
            entry["weight_type"] = entry["weight_type"] or outtype.upper()
            if notes:
                entry["notes"] = notes
            share = other_cpu()
            if share is not None:
                entry["other_cpu"] = share
        except NpgptError as e:
            entry = {"error": str(e)}
        finally:
            gguf.unlink(missing_ok=True)
        engines[f"llama.cpp-{outtype}"] = entry
    return engines
