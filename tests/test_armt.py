"""ARMT (`memory_type="armt"`, `rmt.modeling.memory.armt`) on tiny models of every family.

Equivalence: an empty or disabled associative memory is RMT with the same weights; the core's
guarantees (padded batch == each sample, exact BPTT cut, checkpointed == plain gradients, generate ==
forward, save/load) hold with the associative state. Behaviour a stub cannot fake: a written memory
changes the output, read-after-write returns the value, and the delta rule does not store a pair twice.
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from helpers import forward_greedy, generate_with_logits, grads_of, pad_batch, recompute_partially
from transformers import AutoModelForCausalLM

from rmt import RMTConfig, RMTForCausalLM
from rmt.modeling import factory
from rmt.modeling.adapters import decoder_layers
from rmt.modeling.backbones import FAMILIES, tiny_backbone_config
from rmt.modeling.memory.armt import (
    AssociativeMemory,
    associative_read,
    associative_write,
    dpfp,
    features,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

VOCAB, SEG, MEM = 97, 6, 3
TOL = {"rtol": 1e-4, "atol": 1e-5}


def make(family="llama", *, memory_type="armt", values=0.3, options=None, **kwargs):
    """A seeded tiny model; `values` is the std of the value projections (0 = as initialised)."""
    torch.manual_seed(0)
    bb = tiny_backbone_config(
        family, vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, max_positions=64
    )
    if memory_type == "armt":
        kwargs["memory_options"] = {"key_dim": 8, **(options or {})}
    config = RMTConfig(
        backbone_config=bb, num_mem_tokens=MEM, segment_size=SEG, memory_type=memory_type, **kwargs
    )
    model = RMTForCausalLM(config).eval()
    if memory_type == "armt" and values:
        with torch.no_grad():
            model.memory.value.normal_(0.0, values)  # so that what is written is read back
    return model


def rmt_twin(model):
    """RMT (memory tokens only) with the backbone and memory tokens of an ARMT `model`."""
    twin = make(model.config.backbone_config.model_type, memory_type="tokens")
    keep = twin.state_dict().keys()
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if k in keep})
    return twin


def rand_ids(*shape, seed=1):
    return torch.randint(3, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(ids, return_logits=True, **kwargs).logits


# ---------------------------------------------------------------- equivalence with RMT
@pytest.mark.parametrize("family", FAMILIES)
def test_empty_memory_equals_rmt_and_written_memory_does_not(family):
    """The first segment reads an empty memory: RMT's logits bit for bit. Later segments read what
    the first one wrote, so they differ from RMT's."""
    model = make(family)
    twin = rmt_twin(model)
    ids = rand_ids(2, 3 * SEG)
    armt, rmt = logits(model, ids), logits(twin, ids)
    assert torch.equal(armt[:, :SEG], rmt[:, :SEG])
    assert (armt[:, SEG:] - rmt[:, SEG:]).abs().amax(-1).min() > 1e-3  # every later position


@pytest.mark.parametrize("family", FAMILIES)
def test_disabled_or_fresh_associative_memory_equals_rmt(family):
    """No carrying layer, or the value projections as initialised (zero): RMT at every segment."""
    ids = rand_ids(2, 3 * SEG + 2)
    disabled = make(family, options={"layers": []})
    assert not any(p.requires_grad for p in (disabled.memory.query, disabled.memory.value))
    for model in (disabled, make(family, values=0)):
        twin = rmt_twin(model)
        assert torch.equal(logits(model, ids), logits(twin, ids))
        with torch.no_grad():
            assert torch.equal(model(ids).memory["tokens"], twin(ids).memory)


def test_fresh_tokens_carry_only_the_associative_memory():
    """carry_tokens=false (the paper's code): every segment starts from the learned tokens, so
    without associative layers the last segment ignores the earlier ones; with them, it does not."""
    ids = rand_ids(2, 3 * SEG)
    changed = ids.clone()
    changed[:, :SEG] = rand_ids(2, SEG, seed=2)  # another first segment, same last one
    for layers, same in (([], True), (None, False)):
        model = make(options={"carry_tokens": False, "layers": layers})
        last = [logits(model, x)[:, -SEG:] for x in (ids, changed)]
        assert torch.equal(*last) is same
        with torch.no_grad():
            assert torch.equal(model(ids).memory["tokens"][0], model.memory.tokens)


def test_memory_tokens_can_be_kept_from_reading():
    """memory_tokens_read=false: what layer 0's read adds is 0 at the memory positions (read block
    first, write block last) and not at the segment's tokens once something is written; by
    default the memory positions read too."""
    ids = rand_ids(2, 3 * SEG)
    for read in (True, False):
        model = make(options={"memory_tokens_read": read})
        layer = decoder_layers(model.backbone)[0]
        before, after = [], []  # layer 0's input per segment, before and after ARMT's read hook
        for into, prepend in ((before, True), (after, False)):
            layer.register_forward_pre_hook(functools.partial(grab, into), with_kwargs=True,
                                            prepend=prepend)  # fmt: skip
        logits(model, ids)
        assert len(after) == 3
        for b, a in list(zip(before, after, strict=True))[1:]:  # segments after the first write
            added = (a - b).abs().amax(-1)  # [B, T]
            memory = torch.cat([added[:, :MEM], added[:, -MEM:]], 1)
            if read:
                assert memory.amax(-1).min() > 1e-4  # (a query may miss every stored key: 0)
            else:
                assert torch.equal(memory, torch.zeros_like(memory))
            assert added[:, MEM:-MEM].amax(-1).min() > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_read_into_output_is_added_after_the_layer(family):
    """read_into=output: layer 0 (a carrying layer) computes on the segment as if nothing were
    stored, so with fresh tokens its outputs, the write tokens' included, do not depend on the
    earlier segments; what follows it does. With the read into the input, layer 0's do too."""
    ids = rand_ids(2, 3 * SEG)
    changed = ids.clone()
    changed[:, :SEG] = rand_ids(2, SEG, seed=2)  # another first segment, same last one
    for into in ("output", "input"):
        model = make(family, options={"read_into": into, "carry_tokens": False, "layers": [0]})
        layer = decoder_layers(model.backbone)[0]
        outs = []
        handle = layer.register_forward_hook(
            lambda m, a, o, outs=outs: outs.append(o[0] if isinstance(o, tuple) else o),
            prepend=True,
        )  # runs before ARMT's hook adds the read
        last = [logits(model, x)[:, -SEG:] for x in (ids, changed)]
        handle.remove()
        own = [outs[2], outs[5]]  # the last segment's layer-0 outputs, one per input
        assert torch.equal(*own) is (into == "output"), into
        assert (last[0] - last[1]).abs().amax() > 1e-3  # the read reaches the output either way


def test_normalized_inputs_make_keys_and_reads_scale_free():
    """normalize_inputs: the projections see RMS-normalised states, so scaling a state by 7
    changes nothing they compute; without it, the scale passes through."""
    for normalize in (True, False):
        memory = make(options={"normalize_inputs": normalize}).memory
        h = torch.randn(2, 5, 32)
        with torch.no_grad():  # what the writes store and what a read asks with
            outputs = [(*memory.write_projections(x, slot=0), memory.query_features(x, 0))
                       for x in (7 * h, h)]  # fmt: skip
        same = [torch.allclose(a, b, atol=1e-5) for a, b in zip(*outputs, strict=True)]
        # keys are unit-length DPFP features (degree 2), so scale-free either way; values, gates
        # and queries follow the scale unless the inputs are normalised
        assert same == ([True] * 4 if normalize else [True, False, False, False]), same
    assert make(options={"normalize_inputs": True}).memory.summary()["normalize_inputs"] is True


def grab(into, module, args, kwargs):
    into.append((args[0] if args else kwargs["hidden_states"]).clone())


# ---------------------------------------------------------------- the core's guarantees
@pytest.mark.parametrize(
    "options", [{}, {"read_into": "output", "normalize_inputs": True}], ids=["paper", "output_norm"]
)
@pytest.mark.parametrize("family", FAMILIES)
def test_padded_batch_equals_each_sample(family, options):
    model = make(family, segment_alignment="right", options=options)
    seqs = [rand_ids(n, seed=n) for n in (17, 5, 11)]
    ids, mask = pad_batch(seqs)
    width = ids.shape[1]
    with torch.no_grad():
        batch = model(ids, attention_mask=mask, return_logits=True)
        for i, s in enumerate(seqs):
            single = model(s[None], return_logits=True)
            torch.testing.assert_close(batch.logits[i, width - len(s) :], single.logits[0], **TOL)
            torch.testing.assert_close(batch.memory["tokens"][i], single.memory["tokens"][0], **TOL)
            for got, want in zip(
                batch.memory["associative"], single.memory["associative"], strict=True
            ):
                torch.testing.assert_close(got[i], want[0], **TOL)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("depth,reaches_init", [(1, False), (3, False), (4, True), (-1, True)])
def test_bptt_depth_cuts_exactly_through_the_associative_state(family, depth, reaches_init):
    """4 segments, loss on the last one: a non-zero initial associative state [A | z] of each
    layer gets a gradient only when the cut keeps the first segment's read (depth >= 4, or full
    BPTT)."""
    model = make(family, bptt_depth=depth, segment_checkpointing=False).train()
    g = torch.Generator().manual_seed(3)
    feats = model.memory.num_features
    leaves = tuple(
        torch.cat([torch.randn(1, feats, 32, generator=g) * 0.1, torch.rand(1, feats, 1, generator=g)], -1)
        .requires_grad_()
        for _ in model.memory.layer_ids
    )  # fmt: skip
    tokens = model.memory.tokens.unsqueeze(0)
    model.memory.init_state = lambda b: {"tokens": tokens.expand(b, -1, -1), "associative": leaves}
    ids = rand_ids(1, 4 * SEG)
    labels = torch.full_like(ids, -100)
    labels[0, -2:] = ids[0, -2:]
    model(ids, labels=labels).loss.backward()
    for leaf in leaves:
        assert (leaf.grad is not None and leaf.grad.abs().sum().item() > 0) == reaches_init


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("depth,scheme", [(-1, True), (3, True), (-1, "partial"), (-1, "mlp")])
def test_checkpointed_gradients_equal_plain(monkeypatch, family, depth, scheme):
    """Every recomputation scheme (`rmt.modeling.checkpointing`); "partial" recomputes 3 of 7."""
    ids = rand_ids(2, 7 * SEG - 2)
    plain_loss, plain = grads_of(
        make(family, bptt_depth=depth, segment_checkpointing=False), ids, ids
    )
    model = make(family, bptt_depth=depth, segment_checkpointing=scheme)
    recompute_partially(monkeypatch, model, ids, 3)
    loss, grads = grads_of(model, ids, ids)
    torch.testing.assert_close(loss, plain_loss, **TOL)
    assert grads.keys() == plain.keys()
    assert "memory.query" in plain and "memory.value" in plain
    for name in plain:
        torch.testing.assert_close(grads[name], plain[name], **TOL)


@pytest.mark.parametrize(
    "options",
    [{}, {"memory_tokens_read": False}, {"read_into": "output", "normalize_inputs": True}],
    ids=["read", "no_read", "output_norm"],
)
@pytest.mark.parametrize("family", FAMILIES)
def test_generate_equals_forward_greedy(family, options):
    """Left-padded batch; the new tokens read the associative memory too (with the KV cache).
    With `memory_tokens_read=False` the read block of the left-aligned prompt stays unread in
    generate, as in forward."""
    model = make(family, options=options)
    seqs = [rand_ids(n, seed=n) for n in (13, 7, 19)]  # last segments of 1 token: room for 4 more
    ids, mask = pad_batch(seqs)
    with torch.no_grad():
        tokens, step_logits = generate_with_logits(model, ids, mask, steps=4)
        for i, s in enumerate(seqs):
            ref_tokens, ref_logits = forward_greedy(model, s, 4)
            torch.testing.assert_close(step_logits[i], ref_logits, **TOL)
            assert torch.equal(tokens[i], ref_tokens)


def test_beam_search_and_the_backbone_alone_after_generation():
    """Beam search repeats each sample's state; afterwards the backbone alone is unchanged."""
    model = make("llama")
    ids = rand_ids(2, 2 * SEG + 1)
    with torch.no_grad():
        plain = model.backbone(ids).logits
        beams = model.generate(ids, max_new_tokens=3, num_beams=2, do_sample=False)
        assert beams.shape == (2, 3)
        torch.testing.assert_close(model.backbone(ids).logits, plain, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip(family, tmp_path):
    model = make(family, options={"layers": [1], "nu": 2})
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["memory_type"] == "armt"
    assert saved["memory_options"] == {"key_dim": 8, "layers": [1], "nu": 2}
    ids = rand_ids(1, 3 * SEG)
    for loaded in (factory.load_model(tmp_path), AutoModelForCausalLM.from_pretrained(tmp_path)):
        assert isinstance(loaded.memory, AssociativeMemory) and loaded.memory.layer_ids == [1]
        torch.testing.assert_close(logits(loaded.eval(), ids), logits(model, ids), rtol=0, atol=0)
    assert factory.memory_summary(model)["memory_layers"] == [1]


# ---------------------------------------------------------------- the associative memory itself
def _pair(seed, *, dim=16, nu=3, hidden=24):
    g = torch.Generator().manual_seed(seed)
    k = features(torch.randn(1, 1, dim, generator=g), nu)
    return k, torch.randn(1, 1, hidden, generator=g)


def _empty(k, v):
    return v.new_zeros(1, k.shape[-1], v.shape[-1] + 1)


def test_read_after_write_returns_the_value():
    """Into an empty memory with either rule; over an overlapping earlier pair with correction."""
    k, v = _pair(0)
    other_k, other_v = _pair(1)
    assert (k * other_k).sum() > 0.05  # the keys overlap: the earlier pair is in the way
    beta = torch.full((1, 1, 1), 0.999)
    tol = {"rtol": 0, "atol": 1e-2 * v.abs().max().item()}
    for correction in (True, False):
        memory = associative_write(_empty(k, v), k, v, beta, correction=correction)
        torch.testing.assert_close(associative_read(memory, k), v, **tol)
    memory = associative_write(_empty(k, v), other_k, other_v, beta, correction=True)
    memory = associative_write(memory, k, v, beta, correction=True)
    torch.testing.assert_close(associative_read(memory, k), v, **tol)


def test_delta_rule_does_not_store_a_pair_twice():
    """With correction, a second write of the same pair barely changes [A | z]; without it, the
    pair is added again."""
    k, v = _pair(2)
    other_k, other_v = _pair(3)
    start = associative_write(_empty(k, v), other_k, other_v, torch.ones(1, 1, 1), correction=True)
    beta = torch.full((1, 1, 1), 0.999)
    once = associative_write(start, k, v, beta, correction=True)
    twice = associative_write(once, k, v, beta, correction=True)
    assert (twice - once).norm() < 1e-2 * (once - start).norm()
    assert (twice - once)[..., -1].norm() < 1e-2 * (once - start)[..., -1].norm()  # z alone
    plain_once = associative_write(start, k, v, beta, correction=False)
    plain_twice = associative_write(plain_once, k, v, beta, correction=False)
    torch.testing.assert_close(plain_twice - plain_once, plain_once - start)


def test_dpfp_is_the_paper_feature_map():
    """Products of r = [relu(x), relu(-x)] with its rolls by 1..nu (in some fixed order)."""
    x = torch.randn(3, 5, 8)
    r = torch.cat([x.relu(), (-x).relu()], -1)
    want = torch.cat([r * r.roll(j, dims=-1) for j in range(1, 4)], -1)
    got = dpfp(x, 3)
    assert got.shape == want.shape == (3, 5, 48)
    torch.testing.assert_close(got.sort(-1).values, want.sort(-1).values, rtol=0, atol=0)


def test_options_are_checked_naming_the_key():
    bb = tiny_backbone_config("gpt2", vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2)
    cases = [
        ({"layers": [2]}, r"memory_options.layers=\[2\]: the backbone has 2 layers"),
        ({"nu": 0}, r"memory_options.nu=0 must be an integer >= 1"),
        ({"feature_map": "elu"}, r"memory_options.feature_map='elu' is not known; use one of dpfp"),
        ({"keydim": 8}, r"memory_options.keydim: not an ARMT option"),
        ({"read_into": "both"}, r"memory_options.read_into='both' is not known; use input"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            RMTConfig(backbone_config=bb, memory_type="armt", memory_options=options)
    config = RMTConfig(backbone_config=bb, memory_type="armt", num_mem_tokens=0)
    with pytest.raises(ValueError, match="num_mem_tokens >= 1"):
        RMTForCausalLM(config)
