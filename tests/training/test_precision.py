"""precision = "auto": bf16 where the device computes it natively, fp32 elsewhere, explicit wins."""
import pytest

from steelseg_hpc.training.precision import cpu_bf16_flags, resolve_precision

AVX2_ONLY = "processor : 0\nflags : fpu sse2 avx avx2 fma\n"
ZEN4 = "processor : 0\nflags : fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
SAPPHIRE_RAPIDS = "flags : avx512f amx_bf16 amx_tile\n"
GRAVITON3 = "processor : 0\nFeatures : fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize("cpuinfo, expected", [(AVX2_ONLY, "fp32"), (ZEN4, "bf16"),
                                               (SAPPHIRE_RAPIDS, "bf16"), (GRAVITON3, "bf16")])
def test_auto_on_cpus(cpuinfo, expected):
    choice = resolve_precision("auto", "cpu", cpuinfo=cpuinfo)
    assert choice.resolved == expected and choice.requested == "auto"
    assert ("natively" in choice.reason) == (expected == "bf16")


def test_auto_on_gpus():
    assert resolve_precision("auto", "cuda", cuda_bf16=True, device_name="H100").resolved == "bf16"
    old = resolve_precision("auto", "cuda", cuda_bf16=False, device_name="V100")
    assert old.resolved == "fp32" and "V100" in old.reason


@pytest.mark.parametrize("asked", ["bf16", "fp32"])
def test_explicit_precision_wins(asked):
    for cpuinfo in (AVX2_ONLY, ZEN4):
        assert resolve_precision(asked, "cpu", cpuinfo=cpuinfo).resolved == asked


def test_flags_are_read_from_flags_lines_only():
    assert cpu_bf16_flags("model name : bf16 marketing name\nflags : avx2\n") == []
