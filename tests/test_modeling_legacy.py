"""Checkpoints written by rmt 0.1.0 (memory stored as the parameter `memory`) still load and
compute what they computed then. The fixture and its numbers were written by rmt 0.1.0 itself:
tests/fixtures/make_checkpoint_v0_1_0.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from rmt import RMTForCausalLM
from rmt.modeling.factory import load_model

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_v0.1.0"


@pytest.fixture(scope="module")
def expected():
    return json.loads((FIXTURE / "expected.json").read_text())


@pytest.mark.parametrize("loader", [load_model, RMTForCausalLM.from_pretrained,
                                    AutoModelForCausalLM.from_pretrained])  # fmt: skip
def test_v0_1_0_checkpoint_reproduces_its_numbers(loader, expected):
    with safe_open(str(FIXTURE / "model.safetensors"), "pt") as f:
        assert "memory" in f.keys()  # the old name, so this really tests the mapping
    model = loader(FIXTURE).eval()
    ids, mask = torch.tensor(expected["input_ids"]), torch.tensor(expected["attention_mask"])
    with torch.no_grad():
        out = model(ids, attention_mask=mask, labels=torch.tensor(expected["labels"]),
                    return_logits=True)  # fmt: skip
        new = model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
    assert out.loss.item() == pytest.approx(expected["loss"], rel=1e-5)
    torch.testing.assert_close(out.sample_loss, torch.tensor(expected["sample_loss"]))
    torch.testing.assert_close(out.logits[:, -1], torch.tensor(expected["last_logits"]))
    torch.testing.assert_close(out.memory, torch.tensor(expected["memory"]))
    assert new.tolist() == expected["generated"]


def test_v0_1_0_checkpoint_loads_every_weight_and_resaves_in_todays_layout(tmp_path):
    model, info = RMTForCausalLM.from_pretrained(FIXTURE, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert "memory.tokens" in f.keys() and "memory" not in f.keys()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["memory_type"] == "tokens"
    # 0.1.0 decided checkpointing by segment count; today's budget replaces the old threshold
    assert "checkpointing_min_segments" not in saved and saved["checkpointing_budget"] == 0.5
    again = load_model(tmp_path)
    torch.testing.assert_close(again.memory.tokens, model.memory.tokens)
