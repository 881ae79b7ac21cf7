"""The seams of the model: a second memory mechanism through the same core, adapters, factory.

`LayerMemory` below is a toy mechanism whose state is not tokens: one vector per backbone layer,
added to every input embedding of the next segment and updated from the mean of that layer's
hidden states. It is defined here, registered for the test only, and runs through the unchanged
core: segmentation, per-sample schedule, BPTT cut, checkpointing, `read_memory`, generation,
save/load. If a core change assumed memory tokens, these tests fail.
"""

from __future__ import annotations

import pytest
import torch
from helpers import grads_of, recompute_partially
from torch import nn
from transformers import AutoModelForCausalLM

from rmt import RMTConfig, RMTForCausalLM
from rmt.modeling import factory
from rmt.modeling.adapters import ADAPTERS, adapter_for, decoder_layers
from rmt.modeling.backbones import FAMILIES, tiny_backbone_config
from rmt.modeling.memory import MECHANISMS, MemoryMechanism, SegmentInputs
from rmt.modeling.padding import left_pad

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

VOCAB = 97
TOL = {"rtol": 1e-4, "atol": 1e-5}


class LayerMemory(MemoryMechanism):
    """State [B, layers, H]: a vector per layer; learned initial state `init` [layers, H]."""

    def __init__(self, *, hidden_size: int, num_layers: int, decay: float = 0.5) -> None:
        super().__init__()
        self.decay = decay
        self.init = nn.Parameter(torch.randn(num_layers, hidden_size) * 0.1)

    @classmethod
    def from_config(cls, config, *, hidden_size, dtype=None, device=None):
        layers = config.backbone_config.num_hidden_layers
        return cls(hidden_size=hidden_size, num_layers=layers, **(config.memory_options or {}))

    def backbone_kwargs(self) -> dict:
        return {"output_hidden_states": True}

    def init_state(self, batch_size):
        return self.init.unsqueeze(0).expand(batch_size, -1, -1)

    def wrap(self, state, embeds, mask):
        return SegmentInputs.build(embeds + state.mean(1, keepdim=True), mask)

    def update(self, state, outputs, inputs):
        mask = inputs.attention_mask.unsqueeze(-1).to(state.dtype)
        layers = torch.stack(outputs.hidden_states[1:], dim=1)  # [A, layers, T, H]
        means = (layers * mask.unsqueeze(1)).sum(2) / mask.sum(1).unsqueeze(1)
        return torch.tanh(self.decay * state + means)

    def prepare_generation(self, state, embeds, mask):
        bias = state.mean(1)
        return left_pad([embeds[i, : int(n)] + bias[i] for i, n in enumerate(mask.sum(1).tolist())])


@pytest.fixture
def layer_rmt(monkeypatch):
    """Factory of seeded tiny models with `memory_type="layers"` (registered for this test)."""
    monkeypatch.setitem(MECHANISMS, "layers", LayerMemory)

    def make(family="llama", *, seg=6, **kwargs):
        torch.manual_seed(0)
        bb = tiny_backbone_config(
            family, vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, max_positions=64
        )
        config = RMTConfig(
            backbone_config=bb, memory_type="layers", memory_options={"decay": 0.5},
            num_mem_tokens=0, segment_size=seg, **kwargs,
        )  # fmt: skip
        return RMTForCausalLM(config).eval()

    return make


def rand_ids(*shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, shape, generator=g)


# ---------------------------------------------------------------- a second mechanism, same core
def test_second_mechanism_forward_backward(layer_rmt):
    model = layer_rmt().train()
    assert isinstance(model.memory, LayerMemory) and factory.has_memory(model)
    ids = rand_ids(2, 20)
    out = model(ids, labels=ids)
    assert out.memory.shape == (2, 2, 32)
    out.loss.backward()
    assert model.memory.init.grad.abs().sum() > 0


def test_second_mechanism_state_reaches_later_segments(layer_rmt):
    """The last segment's logits depend on the first segment, through the state alone."""
    model = layer_rmt()
    a, b = rand_ids(1, 18, seed=1), rand_ids(1, 18, seed=1)
    b[0, :6] = rand_ids(6, seed=2)
    with torch.no_grad():
        la, lb = (model(x, return_logits=True).logits[0, 12:] for x in (a, b))
    assert not torch.allclose(la, lb, atol=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_second_mechanism_padded_batch_equals_each_sample(layer_rmt, family):
    model = layer_rmt(family, segment_alignment="right")
    seqs = [rand_ids(n, seed=n) for n in (17, 5, 11)]
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :], mask[i, width - len(s) :] = s, 1
    with torch.no_grad():
        batch = model(ids, attention_mask=mask, return_logits=True)
        for i, s in enumerate(seqs):
            single = model(s[None], return_logits=True)
            torch.testing.assert_close(batch.logits[i, width - len(s) :], single.logits[0], **TOL)
            torch.testing.assert_close(batch.memory[i], single.memory[0], **TOL)


@pytest.mark.parametrize("depth,reaches_init", [(1, False), (3, False), (4, True), (-1, True)])
def test_second_mechanism_bptt_cut(layer_rmt, depth, reaches_init):
    """4 segments: the initial state gets a gradient only when the cut keeps all 3 transitions
    after the first segment plus the first read (depth >= 4, or full BPTT)."""
    model = layer_rmt(seg=5, bptt_depth=depth, segment_checkpointing=False).train()
    ids = rand_ids(1, 20)
    labels = torch.full_like(ids, -100)
    labels[0, -2:] = ids[0, -2:]
    model(ids, labels=labels).loss.backward()
    grad = model.memory.init.grad
    assert (grad is not None and grad.abs().sum().item() > 0) == reaches_init


@pytest.mark.parametrize("depth,scheme", [(-1, True), (3, True), (-1, "partial"), (-1, "mlp")])
def test_second_mechanism_checkpointing_same_gradients(layer_rmt, monkeypatch, depth, scheme):
    ids = rand_ids(2, 31)  # 7 segments; "partial" recomputes the first 3
    plain_loss, plain = grads_of(
        layer_rmt(seg=5, bptt_depth=depth, segment_checkpointing=False), ids, ids
    )
    model = layer_rmt(seg=5, bptt_depth=depth, segment_checkpointing=scheme)
    recompute_partially(monkeypatch, model, ids, 3)
    loss, grads = grads_of(model, ids, ids)
    torch.testing.assert_close(loss, plain_loss, **TOL)
    assert grads.keys() == plain.keys()
    assert ("memory.init" in plain) == (depth == -1)
    for name in plain:
        torch.testing.assert_close(grads[name], plain[name], **TOL)


def test_second_mechanism_read_memory_equals_forward_of_the_prefix(layer_rmt):
    model = layer_rmt()
    ids = rand_ids(2, 21)  # segments of 6: the last one starts at 18
    with torch.no_grad():
        torch.testing.assert_close(model.read_memory(ids), model(ids[:, :18]).memory, **TOL)


def test_second_mechanism_generates_from_its_state(layer_rmt):
    """The first generated token's logits are forward's logits at the prompt's last token."""
    model = layer_rmt()
    ids = rand_ids(2, 20)
    out = model.generate(
        ids, max_new_tokens=2, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    with torch.no_grad():
        ref = model(ids, return_logits=True).logits[:, -1]
    torch.testing.assert_close(out.logits[0], ref, **TOL)
    assert out.sequences.shape == (2, 2)


def test_second_mechanism_save_load(layer_rmt, tmp_path):
    model = layer_rmt()
    with torch.no_grad():
        model.memory.init.add_(1.0)
    model.save_pretrained(tmp_path)
    ids = rand_ids(1, 15)
    for loaded in (factory.load_model(tmp_path), AutoModelForCausalLM.from_pretrained(tmp_path)):
        assert loaded.config.memory_type == "layers"
        assert loaded.config.memory_options == {"decay": 0.5}
        torch.testing.assert_close(loaded.memory.init, model.memory.init)
        with torch.no_grad():
            torch.testing.assert_close(
                loaded.eval()(ids, return_logits=True).logits, model(ids, return_logits=True).logits
            )


def test_unknown_memory_type_names_the_registered_ones():
    bb = tiny_backbone_config("gpt2", vocab_size=VOCAB, hidden_size=32, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match=r"memory_type='assoc'.*use one of .*tokens"):
        RMTConfig(backbone_config=bb, memory_type="assoc")


# ---------------------------------------------------------------- adapters
@pytest.mark.parametrize("family", FAMILIES)
def test_adapters_find_the_layers(family):
    bb = tiny_backbone_config(family, vocab_size=VOCAB, hidden_size=32, num_layers=3, num_heads=4)
    backbone = AutoModelForCausalLM.from_config(bb)
    layers = decoder_layers(backbone)
    assert isinstance(layers, nn.ModuleList) and len(layers) == 3
    assert adapter_for(bb).positions == ("learned" if family == "gpt2" else "rotary")
    assert adapter_for(bb).is_causal


def test_adapters_cover_every_tiny_family_and_name_the_known_ones():
    assert set(FAMILIES) <= set(ADAPTERS)
    with pytest.raises(ValueError, match="known: bert, deberta-v2, gpt2, gpt_neox, llama, mod"):
        adapter_for(type("Cfg", (), {"model_type": "mamba"})())


# ---------------------------------------------------------------- factory
def test_factory_builds_loads_and_describes(tmp_path, tiny_rmt):
    bb = tiny_backbone_config("gpt2", vocab_size=VOCAB, hidden_size=32, num_layers=1, num_heads=2)
    model = factory.build_model(backbone_config=bb, num_mem_tokens=3, segment_size=8)
    assert type(model) is RMTForCausalLM and factory.has_memory(model)
    assert factory.memory_summary(model) == {"memory_type": "tokens", "num_mem_tokens": 3}
    wrapped = factory.build_model(backbone=model.backbone, num_mem_tokens=0, segment_size=8)
    assert not factory.has_memory(wrapped) and wrapped.backbone is model.backbone
    model.save_pretrained(tmp_path)
    assert type(factory.load_model(tmp_path)) is RMTForCausalLM
    with pytest.raises(ValueError, match="exactly one"):
        factory.build_model(num_mem_tokens=3)
    with pytest.raises(
        ValueError, match="unknown model head 'token_cls'; use one of causal_lm, seq_cls"
    ):
        factory.build_model(backbone_config=bb, head="token_cls")


def test_zero_memory_tokens_ask_for_no_gradient(tiny_rmt):
    """An empty memory parameter would leave DDP waiting for a gradient that never comes."""
    model = tiny_rmt("llama", mem=0)
    assert not model.memory.tokens.requires_grad
    assert tiny_rmt("llama", mem=2).memory.tokens.requires_grad
