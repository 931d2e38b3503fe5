"""Process settings: bf16 autocast where the CPU computes bf16 natively, decided from its flags."""

import torch
from safetensors.torch import load_file

from cnnlab.train import runtime
from cnnlab.train.config import TrainConfig
from cnnlab.train.runtime import autocast_dtype, cpu_flags, native_bf16

CPU = torch.device("cpu")


def test_flags_are_read_from_the_kernels_cpu_list(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
    )
    assert {"avx2", "avx512f", "avx512_bf16"} <= cpu_flags(info)
    assert native_bf16(cpu_flags(info))
    assert cpu_flags(tmp_path / "missing") == set()


def test_amp_auto_is_bf16_only_on_cpus_that_compute_it():
    assert autocast_dtype("auto", CPU, {"avx2", "avx512f"}) is None  # emulated bf16 is slower
    assert autocast_dtype("auto", CPU, {"avx512f", "avx512_bf16"}) is torch.bfloat16
    assert autocast_dtype("auto", CPU, {"amx_bf16", "amx_tile"}) is torch.bfloat16
    assert autocast_dtype("off", CPU, {"avx512_bf16"}) is None
    assert autocast_dtype("bf16", CPU, set()) is torch.bfloat16  # forced: anywhere


def test_training_turns_bf16_on_by_itself_on_such_a_cpu_and_saves_float32(
    tiny, tmp_path, monkeypatch, capsys
):
    from cnnlab.train import train

    data, spec = tiny
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    result = train(
        TrainConfig(
            model=str(spec),
            data=str(data),
            epochs=2,
            batch_size=32,
            optimizer="adam",
            lr=0.01,
            augment="none",
            out=str(tmp_path / "run"),
        )
    )
    assert "bf16 autocast" in capsys.readouterr().out
    assert result["test_acc"] > 0.9
    weights = load_file(tmp_path / "run/checkpoints/last.safetensors")
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}
