"""What to recompute in backward (`rmt.modeling.checkpointing`): `auto` keeps every activation
when the whole BPTT chain fits `checkpointing_budget` of the free memory, else takes the cheapest
scheme that fits ("partial": the fewest earliest segments; "mlp": every layer's MLP; "full": every
segment but the last). Every scheme gives plain BPTT's loss and gradients."""

from __future__ import annotations

import pytest
import torch
from helpers import grads_of, recompute_partially

from rmt import RMTConfig
from rmt.modeling import checkpointing
from rmt.modeling.backbones import FAMILIES, tiny_backbone_config
from rmt.modeling.checkpointing import Recompute, choose

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

IDS = torch.randint(3, 97, (2, 37), generator=torch.Generator().manual_seed(1))  # 5 segments of 8
N_SEGMENTS = 5


def labels():
    out = IDS.clone()
    out[:, :30] = -100
    return out


def count_calls(model, monkeypatch) -> tuple[int, int]:
    """(segment calls, MLP calls) during one forward + backward (recomputation calls them again)."""
    calls = {"segment": 0, "mlp": 0}
    original = model._run_segment

    def counted(*args):
        calls["segment"] += 1
        return original(*args)

    monkeypatch.setattr(model, "_run_segment", counted)
    mlp = type(model.backbone.model.layers[0].mlp)  # llama
    forward = mlp.forward

    def counted_mlp(self, *args, **kwargs):
        calls["mlp"] += 1
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(mlp, "forward", counted_mlp)
    model.train()(IDS, labels=labels()).loss.backward()
    return calls["segment"], calls["mlp"]


# ---------------------------------------------------------------- every scheme is plain BPTT
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("scheme", [True, "partial", "mlp"])
def test_each_scheme_gives_the_plain_loss_and_gradients(tiny_rmt, monkeypatch, family, scheme):
    plain_loss, plain = grads_of(tiny_rmt(family, segment_checkpointing=False), IDS, labels())
    model = tiny_rmt(family, segment_checkpointing=scheme)
    recompute_partially(monkeypatch, model, IDS, 2)  # "partial": the first 2 of 5 segments
    loss, grads = grads_of(model, IDS, labels())
    torch.testing.assert_close(loss, plain_loss)
    assert grads.keys() == plain.keys()
    for name in plain:
        torch.testing.assert_close(grads[name], plain[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "scheme,recomputed,segment_calls,mlp_calls",
    [
        (False, Recompute("none", 0), N_SEGMENTS, 2 * N_SEGMENTS),
        (True, Recompute("full", 4), 2 * N_SEGMENTS - 1, 2 * (2 * N_SEGMENTS - 1)),
        ("partial", Recompute("partial", 2), N_SEGMENTS + 2, 2 * (N_SEGMENTS + 2)),
        ("mlp", Recompute("mlp", 0), N_SEGMENTS, 2 * 2 * N_SEGMENTS),  # 2 layers, each twice
    ],
)
def test_each_scheme_recomputes_what_it_says(
    tiny_rmt, monkeypatch, scheme, recomputed, segment_calls, mlp_calls
):
    model = tiny_rmt("llama", segment_checkpointing=scheme).train()
    recompute_partially(monkeypatch, model, IDS, 2)
    assert model._recompute(model.make_plan(IDS)) == recomputed
    assert count_calls(model, monkeypatch) == (segment_calls, mlp_calls)
    with torch.no_grad():
        assert model._recompute(model.make_plan(IDS)) == Recompute()  # nothing kept to recompute


# ---------------------------------------------------------------- auto's choice
STEPS = [100] * 10  # ten equal segments: 1000 bytes of activations
MLP_SHARE = 0.6  # the "mlp" scheme keeps 400 bytes


@pytest.mark.parametrize(
    "allowed,mlp_share,expected",
    [
        (1000, MLP_SHARE, Recompute("none", 0)),  # the whole chain fits
        (999, MLP_SHARE, Recompute("partial", 1)),  # one segment is enough
        (700, MLP_SHARE, Recompute("partial", 3)),  # 30% recomputed: cheaper than the MLPs
        (400, MLP_SHARE, Recompute("mlp", 0)),  # 60% recomputed would cost more than the MLPs
        (400, None, Recompute("partial", 6)),  # ... unless the backbone has no MLP scheme
        (399, MLP_SHARE, Recompute("partial", 7)),  # the MLP scheme does not fit
        (150, MLP_SHARE, Recompute("full", 9)),  # only the last segment is kept
        (50, MLP_SHARE, Recompute("full", 9)),  # nothing fits: recompute all but the last
    ],
)
def test_auto_takes_the_cheapest_scheme_that_fits(monkeypatch, allowed, mlp_share, expected):
    monkeypatch.setattr(checkpointing, "SEGMENT_RECOMPUTE_COST", 0.30)
    monkeypatch.setattr(checkpointing, "MLP_RECOMPUTE_COST", 0.15)
    assert choose(STEPS, allowed, mlp_share=mlp_share) == expected


def test_auto_never_recomputes_a_single_segment():
    assert choose([100], 1, mlp_share=MLP_SHARE) == Recompute()


def test_fewest_segments_keeps_the_latest_that_fit():
    assert checkpointing.fewest_segments([5, 1, 2, 3], 11) == 0
    assert checkpointing.fewest_segments([5, 1, 2, 3], 6) == 1
    assert checkpointing.fewest_segments([5, 1, 2, 3], 5) == 2
    assert checkpointing.fewest_segments([5, 1, 2, 3], 1) == 3  # all but the last, even if too big
    assert checkpointing.fewest_segments([5], 1) == 0  # never the last


@pytest.mark.parametrize(
    "free_share,expected",
    [
        (1.0, Recompute("none", 0)),
        (0.7, Recompute("partial", 2)),  # of 5 segments (77 positions of 16, 16, 16, 16, 13)
        (0.46, Recompute("mlp", 0)),  # tiny llama: the MLP scheme keeps 320 of 704 bytes a layer
        (0.2, Recompute("full", 4)),
    ],
)
def test_auto_decides_by_free_memory(tiny_rmt, monkeypatch, free_share, expected):
    """Each branch of `auto` for fake free memory values (a budget of 0.5 of the free memory)."""
    monkeypatch.setattr(checkpointing, "SEGMENT_RECOMPUTE_COST", 0.30)
    monkeypatch.setattr(checkpointing, "MLP_RECOMPUTE_COST", 0.15)  # so that "mlp" can win here
    model = tiny_rmt("llama", checkpointing_budget=0.5).train()
    plan = model.make_plan(IDS)
    total = sum(model._activation_estimate(plan)[0])
    monkeypatch.setattr(checkpointing, "free_memory", lambda device: 2 * free_share * total)
    assert model._recompute(plan) == expected


def test_auto_decision_is_the_estimate_against_the_budget(tiny_rmt, monkeypatch):
    """The chain fits exactly when its estimate is at most budget x free memory."""
    model = tiny_rmt("llama", checkpointing_budget=0.25).train()
    plan = model.make_plan(IDS)
    total = sum(model._activation_estimate(plan)[0])
    monkeypatch.setattr(checkpointing, "free_memory", lambda device: 4 * total)
    assert model._recompute(plan) == Recompute()
    monkeypatch.setattr(checkpointing, "free_memory", lambda device: 4 * total - 4)
    assert model._recompute(plan).scheme != "none"


def test_auto_with_a_big_budget_keeps_activations_and_a_tiny_one_recomputes(tiny_rmt, monkeypatch):
    big = tiny_rmt("llama", segment_checkpointing="auto", checkpointing_budget=1.0)
    assert count_calls(big, monkeypatch)[0] == N_SEGMENTS  # no recomputation
    tiny = tiny_rmt("llama", segment_checkpointing="auto", checkpointing_budget=1e-12)
    # every segment but the last is recomputed in backward
    assert count_calls(tiny, monkeypatch)[0] == 2 * N_SEGMENTS - 1


# ---------------------------------------------------------------- the estimate per scheme
def test_estimate_counts_tokens_memory_positions_and_dtype(tiny_rmt):
    model = tiny_rmt("llama", mem=4, seg=8).train()
    bb = model.config.backbone_config
    steps, mlp_share = model._activation_estimate(model.make_plan(IDS[:1]))
    # 37 tokens in 5 segments, each with 2 x 4 memory positions, fp32
    per_token = checkpointing.bytes_per_token(bb, 4)
    assert steps == [16 * per_token] * 4 + [13 * per_token]
    assert model._activation_estimate(model.make_plan(IDS))[0] == [2 * s for s in steps]
    assert checkpointing.bytes_per_token(bb, 2) * 2 == per_token
    # hidden 32, MLP 128: 10 x 32 kept by the "mlp" scheme of 10 x 32 + 3 x 128 per layer
    assert mlp_share == pytest.approx(1 - 320 / 704)


def test_estimate_per_scheme_decreases_with_recomputation():
    steps = [100, 100, 100, 100, 80]
    sizes = [
        checkpointing.estimate(Recompute(scheme, r), steps, 0.55)
        for scheme, r in [("none", 0), ("partial", 1), ("partial", 3), ("full", 4)]
    ]
    assert sizes == [480, 380, 180, 80]
    assert checkpointing.estimate(Recompute("mlp"), steps, 0.55) == 216  # 45% of everything
    bb = tiny_backbone_config("gpt2", vocab_size=97, hidden_size=32, num_layers=2, num_heads=4)
    assert (
        0 < checkpointing.bytes_per_token(bb, 4, mlp=False) < checkpointing.bytes_per_token(bb, 4)
    )


def test_cost_of_partial_is_the_recomputed_share(monkeypatch):
    monkeypatch.setattr(checkpointing, "SEGMENT_RECOMPUTE_COST", 0.4)
    assert checkpointing.cost(Recompute("partial", 1), [100, 300]) == pytest.approx(0.1)
    assert checkpointing.cost(Recompute("none"), [100, 300]) == 0


# ---------------------------------------------------------------- config
def test_free_memory_on_cpu_is_available_ram():
    free = checkpointing.free_memory(torch.device("cpu"))
    assert 0 < free <= 1024**5


def bb_config(family="llama"):
    return tiny_backbone_config(family, vocab_size=97, hidden_size=32, num_layers=2, num_heads=4)


@pytest.mark.parametrize("budget", [0, -0.5, 1.5, "half", True])
def test_budget_must_be_a_fraction(budget):
    with pytest.raises(ValueError, match="checkpointing_budget"):
        RMTConfig(backbone_config=bb_config(), checkpointing_budget=budget)


@pytest.mark.parametrize("setting", ["sometimes", "full", 1, None])
def test_unknown_setting_is_refused(setting):
    with pytest.raises(ValueError, match="segment_checkpointing=.*use true, false, 'auto'"):
        RMTConfig(backbone_config=bb_config(), segment_checkpointing=setting)


def test_mlp_scheme_needs_a_family_with_one_mlp_per_layer():
    from rmt.modeling.backbones import tiny_encoder_config

    bert = tiny_encoder_config("bert", vocab_size=97, hidden_size=32, num_layers=2, num_heads=4)
    with pytest.raises(ValueError, match="'mlp'.*bert.*use 'auto'"):
        RMTConfig(backbone_config=bert, segment_checkpointing="mlp")
    assert RMTConfig(backbone_config=bert, segment_checkpointing="partial")


def test_activation_dtype_follows_autocast():
    cpu = torch.device("cpu")
    assert checkpointing.activation_dtype(cpu, torch.float32) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert checkpointing.activation_dtype(cpu, torch.float32) == torch.bfloat16


@pytest.mark.parametrize("setting", ["partial", "mlp", True])
def test_setting_is_saved_in_config_json(tmp_path, setting):
    RMTConfig(backbone_config=bb_config(), segment_checkpointing=setting).save_pretrained(tmp_path)
    assert RMTConfig.from_pretrained(tmp_path).segment_checkpointing == setting
