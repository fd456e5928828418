"""train.compute-dtype: auto picks bf16 on CUDA and on CPUs with native bf16, else fp32."""

from __future__ import annotations

import pytest
import torch

from colora import precision
from colora.base_model import checkpointing
from runconfig.fields import ConfigError
from runconfig.schema import parse_run_config

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme avx2 avx512f avx512_bf16 avx512_vnni
processor\t: 1
flags\t\t: fpu vme avx2
"""
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_cpu_flags_come_from_the_first_cpu():
    assert {"avx512_bf16", "avx2"} <= precision.cpu_flags(CPUINFO)
    assert precision.cpu_flags("no flags here") == set()


@pytest.mark.parametrize(
    ("name", "fast_cpu", "fast_gpu", "device", "expected"),
    [
        ("auto", True, False, CPU, torch.bfloat16),
        ("auto", False, False, CPU, torch.float32),
        ("auto", False, True, CUDA, torch.bfloat16),
        ("auto", True, False, CUDA, torch.float32),  # a pre-Ampere GPU would emulate bf16
        ("fp32", True, True, CUDA, torch.float32),
        ("bf16", False, False, CPU, torch.bfloat16),
    ],
)
def test_resolve(monkeypatch, name, fast_cpu, fast_gpu, device, expected):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast_cpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation: fast_gpu)
    assert precision.resolve(name, device) == expected


def test_resolve_refuses_unknown_names():
    with pytest.raises(ValueError, match="fp16"):
        precision.resolve("fp16", CPU)


def test_a_model_not_loaded_here_computes_in_fp32():
    model = torch.nn.Linear(2, 2)
    assert precision.of(model) == torch.float32
    with precision.autocast(model):
        assert not torch.is_autocast_enabled("cpu")
    setattr(model, precision.ATTRIBUTE, torch.bfloat16)
    with precision.autocast(model):
        assert model(torch.ones(1, 2)).dtype == torch.bfloat16


def test_checkpointing_settings():
    assert checkpointing("on", CPU) and not checkpointing("off", CUDA)
    assert not checkpointing("auto", CPU) and not checkpointing("auto", CUDA)


def test_config_keys_are_checked():
    cfg = parse_run_config({"train.compute-dtype": "bf16", "train.group-by-length": False})
    assert cfg.train.compute_dtype == "bf16" and cfg.train.group_by_length is False
    assert cfg.train.gradient_checkpointing == "auto"
    with pytest.raises(ConfigError, match=r"train\.compute-dtype"):
        parse_run_config({"train.compute-dtype": "fp16"})
    with pytest.raises(ConfigError, match=r"train\.gradient-checkpointing"):
        parse_run_config({"train.gradient-checkpointing": "sometimes"})
