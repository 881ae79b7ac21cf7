"""`segment_checkpointing="auto"` decides by memory: it recomputes segments in backward only when
the activations of the whole BPTT chain would not fit `checkpointing_budget` of the free memory
(`rmt.modeling.checkpointing`), and the gradients do not depend on the decision."""

from __future__ import annotations

import pytest
import torch

from rmt import RMTConfig
from rmt.modeling import checkpointing
from rmt.modeling.backbones import tiny_backbone_config

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

IDS = torch.randint(3, 97, (2, 37), generator=torch.Generator().manual_seed(1))  # 5 segments of 8


def labels():
    out = IDS.clone()
    out[:, :30] = -100
    return out


def count_segment_calls(model, monkeypatch) -> list[int]:
    """Calls of `_run_segment` during one forward + backward (recomputation calls it again)."""
    calls = []
    original = model._run_segment

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(model, "_run_segment", counted)
    model(IDS, labels=labels()).loss.backward()
    return calls


@pytest.mark.parametrize("free,expected", [(10**15, False), (10**3, True)])
def test_auto_decides_by_free_memory(tiny_rmt, monkeypatch, free, expected):
    model = tiny_rmt("llama", checkpointing_budget=0.5).train()
    monkeypatch.setattr(checkpointing, "free_memory", lambda device: free)
    plan = model.make_plan(IDS)
    assert model._use_checkpointing(plan) is expected
    with torch.no_grad():
        assert not model._use_checkpointing(plan)  # nothing to keep without gradients


def test_auto_decision_is_the_estimate_against_the_budget(tiny_rmt, monkeypatch):
    """The chain fits exactly when its estimate is at most budget x free memory."""
    model = tiny_rmt("llama", checkpointing_budget=0.25).train()
    plan = model.make_plan(IDS)
    estimate = model._activation_estimate(plan)
    monkeypatch.setattr(checkpointing, "free_memory", lambda device: 4 * estimate)
    assert not model._use_checkpointing(plan)
    monkeypatch.setattr(checkpointing, "free_memory", lambda device: 4 * estimate - 4)
    assert model._use_checkpointing(plan)


def test_estimate_counts_tokens_memory_positions_and_dtype(tiny_rmt):
    model = tiny_rmt("llama", mem=4, seg=8).train()
    bb = model.config.backbone_config
    one = model._activation_estimate(model.make_plan(IDS[:1]))
    # 37 tokens in 5 segments, each with 2 x 4 memory positions, fp32
    assert one == (37 + 5 * 8) * checkpointing.bytes_per_token(bb, 4)
    assert model._activation_estimate(model.make_plan(IDS)) == 2 * one
    assert checkpointing.bytes_per_token(bb, 2) * 2 == checkpointing.bytes_per_token(bb, 4)


def test_auto_with_a_big_budget_keeps_activations_and_a_tiny_one_recomputes(tiny_rmt, monkeypatch):
    n_segments = 5
    big = tiny_rmt("llama", segment_checkpointing="auto", checkpointing_budget=1.0).train()
    assert len(count_segment_calls(big, monkeypatch)) == n_segments  # no recomputation
    tiny = tiny_rmt("llama", segment_checkpointing="auto", checkpointing_budget=1e-12).train()
    # every segment but the last is recomputed in backward
    assert len(count_segment_calls(tiny, monkeypatch)) == 2 * n_segments - 1


def test_gradients_do_not_depend_on_the_decision(tiny_rmt):
    grads = []
    for budget in (1.0, 1e-12):
        model = tiny_rmt("llama", segment_checkpointing="auto", checkpointing_budget=budget)
        model.train()(IDS, labels=labels()).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)


def test_free_memory_on_cpu_is_available_ram():
    free = checkpointing.free_memory(torch.device("cpu"))
    assert 0 < free <= 1024**5


@pytest.mark.parametrize("budget", [0, -0.5, 1.5, "half", True])
def test_budget_must_be_a_fraction(budget):
    bb = tiny_backbone_config("llama", vocab_size=97, hidden_size=32, num_layers=2, num_heads=4)
    with pytest.raises(ValueError, match="checkpointing_budget"):
        RMTConfig(backbone_config=bb, checkpointing_budget=budget)


def test_activation_dtype_follows_autocast():
    cpu = torch.device("cpu")
    assert checkpointing.activation_dtype(cpu, torch.float32) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert checkpointing.activation_dtype(cpu, torch.float32) == torch.bfloat16
