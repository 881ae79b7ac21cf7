"""Engine settings rmt refuses before any compute, and the DeepSpeed micro-batch it fills in."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from accelerate.utils import DistributedType

from rmt.errors import ConfigError
from rmt.train.distributed import check_engine


def fsdp(version=2, wrap=None):
    plugin = SimpleNamespace(fsdp_version=version, auto_wrap_policy=wrap)
    return SimpleNamespace(distributed_type=DistributedType.FSDP,
                           state=SimpleNamespace(fsdp_plugin=plugin))  # fmt: skip


def deepspeed(stage, config):
    plugin = SimpleNamespace(zero_stage=stage, deepspeed_config=config)
    return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED,
                           state=SimpleNamespace(deepspeed_plugin=plugin))  # fmt: skip


@pytest.mark.parametrize(
    "accelerator, match",
    [
        (fsdp(version=1), "--fsdp_version 2"),
        (fsdp(wrap=lambda module: True), "NO_WRAP"),
        (deepspeed(3, {}), "--zero_stage 2"),
    ],
)
def test_unsupported_engine_settings_fail_with_the_fix(accelerator, match):
    with pytest.raises(ConfigError, match=match):
        check_engine(accelerator, batch_size=4)


def test_supported_engines_pass_and_deepspeed_gets_the_micro_batch():
    check_engine(fsdp(), batch_size=4)
    config = {"train_micro_batch_size_per_gpu": "auto"}
    check_engine(deepspeed(2, config), batch_size=4)
    assert config["train_micro_batch_size_per_gpu"] == 4
    given = {"train_micro_batch_size_per_gpu": 2}
    check_engine(deepspeed(2, given), batch_size=4)
    assert given["train_micro_batch_size_per_gpu"] == 2  # a DeepSpeed config file wins
