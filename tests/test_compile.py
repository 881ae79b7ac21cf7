"""`compile_segments` / `trainer.compile` / `rmt-eval compile=true`: the compiled segment step
computes what the eager one does, in training and in generation (the prompt read), and wherever
torch.compile is missing or fails the model warns once and runs eagerly."""

from __future__ import annotations

import warnings

import pytest
import torch

from rmt import RMTConfig, RMTForCausalLM
from rmt.modeling.backbones import tiny_backbone_config
from rmt.modeling.padding import left_pad
from rmt.train import trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _model() -> RMTForCausalLM:
    torch.manual_seed(0)
    bb = tiny_backbone_config("llama", vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                              max_positions=32)  # fmt: skip
    return RMTForCausalLM(RMTConfig(backbone_config=bb, num_mem_tokens=2, segment_size=6))


def _loss_and_grad(model):
    ids = torch.arange(24).reshape(2, 12) % 50
    model.zero_grad()
    loss = model(ids, labels=ids).loss
    loss.backward()
    return loss.detach(), model.memory.tokens.grad.clone()


def _prompts():
    """A left-padded batch whose samples have 1, 3 and 4 segments of 6: the read runs steps with
    part of the batch (select/merge, gathered segments) and generation pads the last segment."""
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(0, 49, (n,), generator=g) for n in (5, 17, 22)]
    return left_pad(rows, 49)


def _generate(model):
    ids, mask = _prompts()
    return model.generate(ids, mask, max_new_tokens=3, do_sample=False, pad_token_id=49)


def _raise(*args, **kwargs):
    raise RuntimeError("no compiler here")


def test_compile_failing_at_wrap_time_warns_and_runs_eagerly(monkeypatch):
    model = _model()
    expected = _loss_and_grad(model)
    monkeypatch.setattr(torch, "compile", _raise)
    with pytest.warns(UserWarning, match="running eagerly: RuntimeError: no compiler here"):
        model.compile_segments()
    got = _loss_and_grad(model)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_compile_failing_at_the_first_call_warns_once_and_runs_eagerly(monkeypatch):
    model = _model()
    expected = _loss_and_grad(model)
    monkeypatch.setattr(torch, "compile", lambda fn, **options: _raise)  # compiles, fails on use
    model.compile_segments()
    with pytest.warns(UserWarning, match="running eagerly") as caught:
        got = _loss_and_grad(model)
    assert len(caught) == 1  # two segments, one warning: later steps go straight to eager
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _loss_and_grad(model)


def test_generation_falls_back_to_eager_when_compile_fails(monkeypatch):
    model = _model().eval()
    expected = _generate(model)
    monkeypatch.setattr(torch, "compile", lambda fn, **options: _raise)  # compiles, fails on use
    model.compile_segments()
    with pytest.warns(UserWarning, match="running eagerly") as caught:
        got = _generate(model)
    assert len(caught) == 1
    assert torch.equal(got, expected)


def test_trainer_compile_option_reaches_the_model(fast_cfg, monkeypatch):
    calls = []
    monkeypatch.setattr(
        RMTForCausalLM, "compile_segments", lambda self, **kw: calls.append(type(self).__name__)
    )
    trainer.train(fast_cfg("trainer.max_steps=1", "trainer.eval_every=1", "trainer.compile=true"))
    assert calls == ["RMTForCausalLM"]


@pytest.mark.slow  # dynamo traces the backbone: ~10-25 s on a CPU core
def test_compiled_segment_step_matches_eager():
    model = _model()
    expected = _loss_and_grad(model)
    model.compile_segments(backend="eager")  # dynamo's graphs, without a C++ toolchain
    got = _loss_and_grad(model)
    assert model._segment_step.compiled is not None  # no fallback: it really ran compiled
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-6)


def test_compiled_segment_step_generates_what_eager_does():
    torch._dynamo.reset()  # graphs cached by earlier tests count against the recompile limit
    model = _model().eval()
    ids, mask = _prompts()
    expected_memory, expected = model.read_memory(ids, mask), _generate(model)
    model.compile_segments(backend="eager")  # seconds: dynamo traces one graph per batch shape
    with torch.no_grad():
        memory = model.read_memory(ids, mask)
    got = _generate(model)
    assert model._segment_step.compiled is not None  # no fallback: it really ran compiled
    torch.testing.assert_close(memory, expected_memory, rtol=1e-5, atol=1e-6)
    assert torch.equal(got, expected)


def test_compiled_read_compiles_once_whatever_the_input_width():
    """Segments sliced from batches of other widths have other strides; a compiled step that
    guards on them would compile again for every length rmt-eval reads (and fall back to eager
    after torch's recompile limit). Counted with a backend that records each graph it gets."""
    torch._dynamo.reset()  # graphs cached by earlier tests count against the recompile limit
    graphs = []

    def backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    model = _model().eval()
    model.compile_segments(backend=backend)
    counts = []
    for width in (30, 42, 54):  # 5, 7 and 9 segments of 6
        model.generate(torch.randint(0, 49, (2, width)), max_new_tokens=1, do_sample=False,
                       pad_token_id=49)  # fmt: skip
        counts.append(len(graphs))
    assert counts[0] >= 1 and counts == [counts[0]] * 3
