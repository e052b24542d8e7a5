"""``npgpt bench``: the command over :mod:`npgpt.bench`; the only place a bench result is printed."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import NpgptError
from .options import PATH, console, dtype_value, model_value, path_value, print_notice, print_table

if TYPE_CHECKING:
    from rich.console import Console


def _csv(value: str, cast: Callable[[str], Any] = str, flag: str = "") -> tuple[Any, ...]:
    """``value``'s comma-separated items, each cast; NpgptError naming ``flag`` and the item that is not one."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    for item in items:
        try:
            cast(item)
        except ValueError:
            what = "an integer" if cast is int else "valid"
            raise NpgptError(f"{flag} takes a comma-separated list; {item!r} in {value!r} is not {what}") from None
    return tuple(cast(v) for v in items)


# BenchSettings' fields that npgpt bench's flags name otherwise (the rest: the field with dashes, --prompt-len)
_FLAGS = {"backends": "--backend", "dtypes": "--dtype", "batches": "--batch"}


def as_bench_flags(e: NpgptError) -> NpgptError:
    """``e`` from :mod:`npgpt.bench`, which names BenchSettings' fields (``backends='numpy,fortran'``), in the
    words of this command's flags (``--backend numpy,fortran``)."""
    from .flags import as_flags_in

    if not e.keywords:
        return e
    return NpgptError(as_flags_in(str(e), e.keywords, _FLAGS))


def bench_command(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            callback=model_value,
            help="Preset (124M…) with --random, or a checkpoint path/name; default: 124M with --random, "
            "else a downloaded GPT-2.",
        ),
    ] = None,
    random: Annotated[bool, typer.Option("--random", help="Random weights of the model's shape (offline).")] = False,
    backend: Annotated[
        str, typer.Option("--backend", help="npgpt backends to run, comma-separated.")
    ] = "numpy,jax,torch",
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            callback=dtype_value,
            help="Weight storage per backend, comma-separated: float32, float16, bfloat16 "
            "(16-bit: torch, jax, cupy), int8 (numpy, torch).",
        ),
    ] = "float32",
    batch: Annotated[str, typer.Option("--batch", help="Decode batch sizes, comma-separated.")] = "1,8,32",
    prompt_len: Annotated[int, typer.Option(help="Prompt tokens for the prefill measurement.")] = 512,
    short_prompt: Annotated[int, typer.Option(help="Prompt tokens for time to first token and decoding.")] = 16,
    new_tokens: Annotated[int, typer.Option(help="Tokens decoded per row.")] = 128,
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare", help="Comma list: 'hf' (Hugging Face transformers + PyTorch), 'llama.cpp' (needs --llama-cpp)."
        ),
    ] = None,
    llama_cpp: Annotated[
        str | None,
        typer.Option(
            "--llama-cpp",
            envvar="NPGPT_LLAMA_CPP",
            metavar="DIR",
            help="llama.cpp checkout built with cmake (build/bin/llama-bench…), for --compare llama.cpp.",
        ),
    ] = None,
    baseline_tokens: Annotated[int, typer.Option(help="Tokens for npgpt's no-cache baseline (0 = skip).")] = 256,
    threads: Annotated[int, typer.Option(help="BLAS / PyTorch threads.")] = os.cpu_count() or 1,
    bandwidth_mib: Annotated[int, typer.Option(help="MiB read to measure memory bandwidth.")] = 1024,
    train: Annotated[
        bool, typer.Option("--train", help="Also time training steps: npgpt (JAX) vs HF + PyTorch.")
    ] = False,
    train_batch: Annotated[int, typer.Option(help="Training batch size.")] = 4,
    train_seq: Annotated[int, typer.Option(help="Training window length.")] = 128,
    precision: Annotated[
        bool,
        typer.Option(
            "--precision",
            help="Accuracy of float16/bfloat16/int8 weights (torch; int8 on numpy too) vs float32: logits, "
            "held-out text, greedy output.",
        ),
    ] = False,
    repeat: Annotated[int, typer.Option(help="Rounds of every engine, interleaved; each keeps its best figures.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print every field as one JSON object.")] = False,
    plot: Annotated[
        Path | None,
        typer.Option(parser=path_value, metavar=PATH, help="Write a PNG of decode tokens/s against batch size."),
    ] = None,
) -> None:
    """Measure decode/prefill speed, time to first token, start-up and memory, per backend.

    Example: npgpt bench --model 124M --random --backend numpy --compare hf
    """
    from ..bench.settings import BenchSettings

    source = ctx.get_parameter_source("llama_cpp")
    if llama_cpp and "llama.cpp" not in _csv(compare or "") and source is not None and source.name == "COMMANDLINE":
        # Typed without --compare llama.cpp, it was ignored: the run measured everything but llama.cpp.
        # (NPGPT_LLAMA_CPP set in the environment is a standing choice, used only when llama.cpp is compared.)
        raise NpgptError(f"--llama-cpp {llama_cpp} is used by --compare llama.cpp; add --compare llama.cpp")
    s = BenchSettings(
        model=model,
        random=random,
        backends=_csv(backend),
        dtypes=_csv(dtype),
        batches=_csv(batch, int, "--batch"),
        prompt_len=prompt_len,
        short_prompt=short_prompt,
        new_tokens=new_tokens,
        compare=_csv(compare or ""),
        llama_cpp=llama_cpp,
        baseline_tokens=baseline_tokens,
        threads=threads,
        bandwidth_mib=bandwidth_mib,
        train=train,
        train_batch=train_batch,
        train_seq=train_seq,
        precision=precision,
        repeat=repeat,
    )
    from ..bench import plot_decode, run_bench

    if plot is not None:  # before the run: a bad place or no matplotlib fails now, not after minutes of measuring
        from ..figures import check_can_write_png

        check_can_write_png(plot)
    try:
        result = run_bench(s, progress=lambda msg: print_notice(f"{msg}…"))
    except NpgptError as e:
        raise as_bench_flags(e) from None
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        _print(result, console())
    engines = result.get("engines") or {}
    if engines and all("error" in e for e in engines.values()):  # an empty table was a success (exit 0)
        raise NpgptError("every engine failed, so nothing was measured; each one's error is above")
    if plot is not None:  # after the figures are out: a write that fails now (a full disk) loses no measurement
        sys.stdout.flush()
        print_notice(f"wrote {plot_decode(result, plot)}")  # on stderr: stdout may be --json's


def _print(result: dict[str, Any], screen: Console) -> None:
    """The result as tables and notes (the figures of ``--json``, rounded)."""
    from rich.table import Table
    from rich.text import Text

    from ..bench import table_rows

    m, mach = result["model"], result["machine"]
    screen.print(
        Text.assemble(
            (m["source"], "bold"),
            f": {m['n_params'] / 1e6:.1f}M parameters, "
            f"{m['weight_mb']:.0f} MB float32; {mach['cpu']}, {mach['threads']} threads; "
            f"bandwidth {mach['bandwidth_gbs']:.1f} GB/s -> ceiling {result['ceiling_tps_batch1']:.1f} "
            f"tok/s at batch 1",
        )
    )
    screen.print(Text(f"instruction sets: {', '.join(mach.get('instruction_sets') or ['unknown'])}"))
    if mach.get("gpus"):
        screen.print(Text(f"GPU: {'; '.join(mach['gpus'])} (torch, jax, cupy and HF run on it)"))
    names, rows = table_rows(result)
    table = Table("", *names)
    for r in rows:
        table.add_row(*r)
    print_table(table, screen)
    for name, e in result["engines"].items():
        if "error" in e:
            screen.print(Text(f"{name}: {e['error']}", style="yellow"))
        elif name.startswith("llama.cpp-"):  # what the llama.cpp figures are of: they have no start-up/memory rows
            screen.print(
                f"{name}: llama.cpp {e.get('version')}, {e.get('weight_type')} weights "
                f"({e.get('gguf_mb', 0):.0f} MB GGUF), KV cache {e.get('kv_cache_type')}, "
                f"{e.get('threads')} threads"
            )
            for note in e.get("notes", []):  # a figure measured another way than llama.cpp's default
                screen.print(Text(f"{name}: {note}", style="yellow"))
    if "nocache" in result:
        nc = result["nocache"]
        screen.print(
            ("no-cache baseline: " + nc["error"])
            if "error" in nc
            else f"{nc['tokens']} tokens: {nc['cached_s']:.1f} s with the kv cache, {nc['nocache_s']:.1f} s "
            f"without ({nc['speedup']:.1f}x)"
        )
    imp = result["import"]
    if "import_s" in imp:
        screen.print(f"import npgpt {imp['import_s'] * 1e3:.0f} ms; with the API {imp['import_api_s'] * 1e3:.0f} ms")
    for name, t in (result.get("train") or {}).items():
        screen.print(
            f"train {name}: "
            + (t["error"] if "error" in t else f"{t['tokens_per_s']:.0f} tokens/s ({t['step_s']:.2f} s/step)")
        )
    if result.get("precision"):
        from ..precision import summary_lines

        for line in summary_lines(result["precision"]):
            screen.print(line)
