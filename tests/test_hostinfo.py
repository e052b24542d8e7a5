"""The host's instruction sets, read from /proc/cpuinfo-style text."""

from __future__ import annotations

from npgpt.hostinfo import cpu_flags, cpu_name, instruction_sets

X86 = """processor\t: 0
model name\t: Some CPU
flags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512_vnni avx512_bf16 amx_int8
"""
ARM = """processor\t: 0
Features\t: fp asimd asimddp i8mm
"""


def test_instruction_sets_from_cpuinfo_text():
    assert "avx512_bf16" in cpu_flags(X86)
    assert instruction_sets(X86) == ["AVX2", "FMA", "F16C", "AVX-512", "AVX-512 BF16", "AVX-512 VNNI", "AMX-INT8"]
    assert instruction_sets(ARM) == ["NEON", "NEON dotprod", "NEON i8mm"]
    assert instruction_sets("processor\t: 0\n") == []  # no flags line: nothing claimed


def test_this_host_answers_without_error():
    assert all(isinstance(name, str) for name in instruction_sets())


def test_cpu_name_from_cpuinfo_text():
    assert cpu_name(X86) == "Some CPU"
    assert cpu_name(ARM)  # no model name line: the platform's answer, never empty
    assert isinstance(cpu_name(), str) and cpu_name()
