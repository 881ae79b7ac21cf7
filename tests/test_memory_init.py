"""The learned first memory's scale (``memory_init_std``): the one knob between a first segment
that reads a memory like every later one (a normalised output, scale ~1) and one that reads
embedding-sized vectors (the backbone's ``initializer_range``)."""

from __future__ import annotations

import pytest
import torch

from rmt import RMTConfig, RMTForCausalLM
from rmt.modeling.backbones import tiny_backbone_config


def _model(memory_type: str = "tokens", **kwargs) -> RMTForCausalLM:
    torch.manual_seed(0)
    bb = tiny_backbone_config("llama", vocab_size=64, hidden_size=64, num_layers=2, num_heads=4,
                              max_positions=128)  # fmt: skip
    return RMTForCausalLM(RMTConfig(backbone_config=bb, num_mem_tokens=32, segment_size=8,
                                    memory_type=memory_type, **kwargs))  # fmt: skip


@pytest.mark.parametrize("memory_type", ["tokens", "armt"])
def test_first_memory_has_the_asked_scale(memory_type):
    default = _model(memory_type).memory.tokens.std().item()
    assert default == pytest.approx(0.02, rel=0.15)  # the backbone's initializer_range
    model = _model(memory_type, memory_init_std=1.0)
    assert model.memory.tokens.std().item() == pytest.approx(1.0, rel=0.15)
    if memory_type == "armt":  # its projections keep the backbone's scale
        assert model.memory.query.std().item() == pytest.approx(0.02, rel=0.15)


def test_init_std_survives_save_and_load(tmp_path):
    model = _model(memory_init_std=0.5)
    model.save_pretrained(tmp_path)
    loaded = RMTForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.memory_init_std == 0.5
    assert torch.equal(loaded.memory.tokens, model.memory.tokens)  # loaded, not re-initialised


@pytest.mark.parametrize("bad", [0, -1.0, "big", True])
def test_init_std_must_be_positive(bad):
    with pytest.raises(ValueError, match="memory_init_std"):
        _model(memory_init_std=bad)
