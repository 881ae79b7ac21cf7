"""Equivalence and behaviour tests for RMTForCausalLM on tiny in-process backbones.

Padded batches are in test_modeling_padding.py, generation in test_modeling_generation.py.
"""

from __future__ import annotations

import pytest
import torch
from helpers import written_memory_grads
from transformers import AutoModelForCausalLM

from rmt import RMTConfig, RMTForCausalLM
from rmt.modeling.backbones import FAMILIES, tiny_backbone_config
from rmt.modeling.segmentation import batch_schedule, segment_bounds

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

VOCAB = 97  # tiny_rmt's default vocabulary


def rand_ids(*shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, shape, generator=g)


# ---------------------------------------------------------------- segmentation (pure functions)
@pytest.mark.parametrize(
    "alignment,expected",
    [
        ("left", [(0, 4), (4, 8), (8, 10)]),
        ("right", [(0, 2), (2, 6), (6, 10)]),
        ("center", [(0, 4), (4, 7), (7, 10)]),
    ],
)
def test_segment_bounds(alignment, expected):
    assert segment_bounds(10, 4, alignment) == expected


def test_segment_bounds_errors():
    with pytest.raises(ValueError, match="unknown segment alignment"):
        segment_bounds(10, 4, "middle")
    with pytest.raises(ValueError, match="empty"):
        segment_bounds(0, 4)


def test_batch_schedule_aligns_last_segments():
    sched = batch_schedule([10, 3], 4, "left")
    assert len(sched) == 3
    assert sched[0] == [(0, 0, 4)]
    assert sched[-1] == [(0, 8, 10), (1, 0, 3)]


# ---------------------------------------------------------------- all backbone families
@pytest.mark.parametrize("family", FAMILIES)
def test_families_forward_backward(tiny_rmt, family):
    model = tiny_rmt(family).train()
    ids = rand_ids(2, 30)
    labels = torch.full_like(ids, -100)
    labels[:, -3:] = ids[:, -3:]
    out = model(ids, labels=labels)
    assert out.logits is None and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.memory.tokens.grad is not None and model.memory.tokens.grad.abs().sum() > 0
    # (generation for every family: test_modeling_generation.py, checked by logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_memory_one_segment_equals_backbone(tiny_rmt, family):
    model = tiny_rmt(family, mem=0, seg=32)
    ids = rand_ids(2, 20)
    out = model(ids, return_logits=True)
    ref = model.backbone(input_ids=ids).logits
    torch.testing.assert_close(out.logits, ref, rtol=1e-4, atol=1e-5)
    assert out.memory is None


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_positions_restart_every_segment(tiny_rmt, family):
    """Each segment is an independent call: the 2nd segment with no memory equals the backbone on it alone."""
    model = tiny_rmt(family, mem=0, seg=8)
    ids = rand_ids(1, 16)
    ours = model(ids, return_logits=True).logits
    ref = model.backbone(input_ids=ids[:, 8:]).logits
    torch.testing.assert_close(ours[:, 8:], ref, rtol=1e-4, atol=1e-5)


def test_written_memory_depends_on_the_segment(tiny_rmt):
    """The write memory comes after the segment's tokens, so it sees them: another segment, another
    memory (memory read off the read-memory positions would only see the previous memory)."""
    model = tiny_rmt("llama", mem=3, seg=8)
    with torch.no_grad():
        one, other = model(rand_ids(1, 8, seed=1)).memory, model(rand_ids(1, 8, seed=2)).memory
    assert one.shape == (1, 3, 32)
    assert not torch.allclose(one, other, atol=1e-3)


# ---------------------------------------------------------------- loss
def test_loss_is_mean_over_labelled_tokens_across_segments(tiny_rmt):
    model = tiny_rmt("gpt2", mem=2, seg=5)
    ids = rand_ids(2, 17)
    labels = ids.clone()
    labels[0, :9] = -100
    labels[1, 3:12] = -100
    out = model(ids, labels=labels, return_logits=True)
    logits = out.logits[:, :-1]
    tgt = labels[:, 1:]
    ref = torch.nn.functional.cross_entropy(
        logits.reshape(-1, VOCAB), tgt.reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)
    assert out.num_label_tokens.tolist() == [
        (tgt[0] != -100).sum().item(),
        (tgt[1] != -100).sum().item(),
    ]


def test_lm_head_runs_only_on_labelled_positions(tiny_rmt):
    model = tiny_rmt("llama", mem=2, seg=32, positions=64)
    ids = rand_ids(1, 4000)
    labels = torch.full_like(ids, -100)
    labels[0, -5:] = ids[0, -5:]
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda m, i, o: seen.append(i[0].shape[0])
    )
    with torch.no_grad():
        out = model(ids, labels=labels)
    hook.remove()
    assert out.logits is None
    assert sum(seen) == 5  # the head saw the 5 positions that predict the answer, not 4000
    assert out.num_label_tokens.item() == 5


# ---------------------------------------------------------------- truncated BPTT
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, -1])
def test_bptt_depth_cuts_exactly(tiny_rmt, depth):
    n = 5
    model = tiny_rmt("llama", mem=2, seg=4, bptt_depth=depth, segment_checkpointing=False).train()
    ids = rand_ids(1, 4 * n)
    labels = torch.full_like(ids, -100)
    labels[0, -2:] = ids[0, -2:]  # answer-only loss, in the last segment
    grads, param_grad = written_memory_grads(model, ids, labels)
    # grads[s] is the memory written by segment s, read by segment s + 1.
    for s, g in enumerate(grads[:-1]):
        reads_at = s + 1
        connected = depth == -1 or reads_at >= n - depth
        norm = 0.0 if g is None else g.abs().sum().item()
        assert (norm > 0) == connected, (depth, s, norm)
    assert (param_grad is not None and param_grad.abs().sum() > 0) == (depth == -1 or depth >= n)


def test_truncation_keeps_recent_gradients_exact(tiny_rmt):
    ids = rand_ids(1, 20)
    labels = torch.full_like(ids, -100)
    labels[0, -2:] = ids[0, -2:]
    full = tiny_rmt("gpt2", mem=2, seg=4, bptt_depth=-1, segment_checkpointing=False).train()
    cut = tiny_rmt("gpt2", mem=2, seg=4, bptt_depth=1, segment_checkpointing=False).train()
    g_full, _ = written_memory_grads(full, ids, labels)
    g_cut, _ = written_memory_grads(cut, ids, labels)
    torch.testing.assert_close(g_full[-2], g_cut[-2])


# ---------------------------------------------------------------- segment checkpointing
@pytest.mark.parametrize("depth", [-1, 2])
def test_segment_checkpointing_same_gradients(tiny_rmt, depth):
    ids = rand_ids(2, 37)
    labels = ids.clone()
    labels[:, :30] = -100
    grads = []
    for ckpt in (False, True):
        model = tiny_rmt(
            "llama", mem=3, seg=6, bptt_depth=depth, segment_checkpointing=ckpt
        ).train()
        model(ids, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- save / load
@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_save_load_roundtrip(tiny_rmt, tmp_path, family):
    model = tiny_rmt(family, mem=3, seg=6, bptt_depth=2, segment_alignment="right")
    with torch.no_grad():
        model.memory.tokens.add_(1.0)  # differs from any fresh initialisation
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()
    ids = rand_ids(2, 25)
    ref = model(ids, return_logits=True).logits
    for loader in (RMTForCausalLM, AutoModelForCausalLM):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, RMTForCausalLM)
        assert loaded.config.segment_alignment == "right" and loaded.config.bptt_depth == 2
        torch.testing.assert_close(loaded(ids, return_logits=True).logits, ref)


def test_from_backbone_keeps_weights():
    torch.manual_seed(0)
    bb_cfg = tiny_backbone_config(
        "gpt2", vocab_size=VOCAB, hidden_size=32, num_layers=1, num_heads=2
    )
    backbone = AutoModelForCausalLM.from_config(bb_cfg)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = RMTForCausalLM.from_backbone(backbone, num_mem_tokens=2, segment_size=16)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.memory.tokens.abs().sum() > 0


# ---------------------------------------------------------------- frozen backbone and LoRA
def test_freeze_backbone_trains_only_memory(tiny_rmt):
    model = tiny_rmt("llama", freeze_backbone=True).train()
    ids = rand_ids(1, 20)
    model(ids, labels=ids).loss.backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["memory.tokens"]
    assert model.memory.tokens.grad.abs().sum() > 0


def test_lora_trains_adapters_and_reloads(tiny_rmt, tmp_path):
    """peft is in the dev extra, so this runs in CI (a missing peft fails here, it does not skip)."""
    from rmt.modeling.lora import apply_lora

    model = tiny_rmt("llama").train()
    apply_lora(model, r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "memory.tokens" in trainable and trainable - {"memory.tokens"}
    assert all("lora_" in n for n in trainable - {"memory.tokens"})
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    ids = rand_ids(1, 20)
    model(ids, labels=ids).loss.backward()
    opt.step()
    model.eval()
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), f"frozen {name} changed"
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert len(lora_b) == 4 and all(p.abs().sum() > 0 for p in lora_b.values())  # 2 layers x q, v
    with torch.no_grad():
        ref = model(ids, return_logits=True).logits
    model.save_pretrained(tmp_path)
    loaded = RMTForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.lora["r"] == 4
    loaded_b = {n: p for n, p in loaded.named_parameters() if "lora_B" in n}
    assert loaded_b.keys() == lora_b.keys()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, return_logits=True).logits, ref)
        # The adapters take part in the forward pass: without them the logits change.
        for p in loaded_b.values():
            p.zero_()
        assert not torch.allclose(loaded(ids, return_logits=True).logits, ref, atol=1e-4)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_mem_tokens": -1}, "num_mem_tokens"),
        ({"segment_size": 0}, "segment_size"),
        ({"segment_size": 60, "num_mem_tokens": 4}, "position limit"),
        ({"segment_alignment": "middle"}, "segment_alignment"),
        ({"bptt_depth": 0}, "bptt_depth"),
        ({"bptt_depth": -2}, "bptt_depth"),
        ({"segment_checkpointing": "sometimes"}, "segment_checkpointing"),
    ],
)
def test_invalid_settings_fail_with_field_name(kwargs, match):
    bb = tiny_backbone_config(
        "gpt2", vocab_size=VOCAB, hidden_size=32, num_layers=1, num_heads=2, max_positions=64
    )
    base = {"num_mem_tokens": 2, "segment_size": 8}
    with pytest.raises(ValueError, match=match):
        RMTConfig(backbone_config=bb, **{**base, **kwargs})


def test_last_segment_is_not_checkpointed(tiny_rmt, monkeypatch):
    """Recomputing the last segment would only cost time: its backward follows its forward at once."""
    import rmt.modeling.core as model_module

    calls = []
    real = model_module.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(model_module, "checkpoint", counting)
    model = tiny_rmt("llama", mem=2, seg=4, segment_checkpointing=True).train()
    ids = rand_ids(1, 20)  # 5 segments
    model(ids, labels=ids).loss.backward()
    assert len(calls) == 4
