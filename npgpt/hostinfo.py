"""The host CPU's instruction sets that decide which weight storage pays (16-bit, int8).

Read from the kernel's CPU flags (``/proc/cpuinfo`` on Linux); elsewhere the list is empty and
callers say "unknown". Only the families that change npgpt's figures are reported.
"""

from __future__ import annotations

import platform
from pathlib import Path

# Linux flag -> the name used in docs and `npgpt bench`, in the order printed.
FLAGS = {
    "avx2": "AVX2",
    "fma": "FMA",
    "f16c": "F16C",
    "avx512f": "AVX-512",
    "avx512_bf16": "AVX-512 BF16",
    "avx512_fp16": "AVX-512 FP16",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
    "asimd": "NEON",
    "asimddp": "NEON dotprod",
    "i8mm": "NEON i8mm",
    "sve": "SVE",
}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name (``/proc/cpuinfo``'s "model name"), else ``platform.processor()`` or the machine type."""
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (lower case, as Linux names them); empty where there is no /proc/cpuinfo."""
    if cpuinfo is None:
        cpuinfo = _cpuinfo()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / ARM
            return set(value.split())
    return set()


def instruction_sets(cpuinfo: str | None = None) -> list[str]:
    """The instruction sets from :data:`FLAGS` this CPU has, e.g. ``["AVX2", "FMA", "AVX-512", ...]``."""
    flags = cpu_flags(cpuinfo)
    return [name for flag, name in FLAGS.items() if flag in flags]


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the system does not say."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
