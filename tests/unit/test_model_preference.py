"""Which face model ``anoncam blur`` picks without ``--model``: int8 only where it is made, can
check itself, and the CPU has int8 dot-product instructions; fp32 otherwise, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.models.preferred import choose_face_model, int8_dot_product

# Trimmed from real /proc/cpuinfo files.
XEON_VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_int8\n"
OLD_X86 = "processor\t: 0\nflags\t\t: fpu sse2 sse4_2 avx avx2 fma\n"
PI5 = (
    "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 atomics asimdrdm lrcpc dcpop asimddp\n"
)
PI4 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"


@pytest.mark.parametrize(
    ("cpuinfo", "flag"),
    [(XEON_VNNI, "avx512_vnni"), (OLD_X86, None), (PI5, "asimddp"), (PI4, None), ("", None)],
)
def test_int8_dot_product_reads_x86_flags_and_arm_features(cpuinfo: str, flag: str | None) -> None:
    assert int8_dot_product(cpuinfo) == flag


def test_a_flag_named_in_another_field_does_not_count() -> None:
    assert int8_dot_product("model name\t: avx512_vnni emulator\nflags\t: sse2\n") is None


@pytest.fixture
def int8_file(tmp_path: Path) -> Path:
    path = tmp_path / "centerface-int8.onnx"
    path.write_bytes(b"model")
    (tmp_path / "centerface-int8.onnx.sha256").write_text(f"{'0' * 64}  {path.name}\n")
    return path


def test_int8_is_chosen_where_everything_holds(int8_file: Path) -> None:
    choice = choose_face_model(int8_file, XEON_VNNI, selftest_possible=True)
    assert choice.int8 and choice.path == int8_file
    assert "avx512_vnni" in choice.reason
    assert choice.threshold < 0.2, "int8 scores small faces lower; its threshold makes up for it"


@pytest.mark.parametrize(
    ("cpuinfo", "selftest", "why"),
    [
        (OLD_X86, True, "no int8 dot-product"),
        (PI4, True, "no int8 dot-product"),
        (XEON_VNNI, False, "scikit-image"),
    ],
)
def test_fp32_stays_where_int8_would_not_help_or_cannot_check_itself(
    int8_file: Path, cpuinfo: str, selftest: bool, why: str
) -> None:
    choice = choose_face_model(int8_file, cpuinfo, selftest_possible=selftest)
    assert not choice.int8 and choice.path is None
    assert why in choice.reason and choice.threshold == 0.2


def test_no_int8_file_or_no_sidecar_means_fp32(tmp_path: Path, int8_file: Path) -> None:
    missing = choose_face_model(tmp_path / "absent.onnx", XEON_VNNI, selftest_possible=True)
    assert missing.path is None and "anoncam models quantize" in missing.reason
    (tmp_path / "centerface-int8.onnx.sha256").unlink()
    unsigned = choose_face_model(int8_file, XEON_VNNI, selftest_possible=True)
    assert unsigned.path is None
