"""The scoring loop: counting, laziness, batching, and the no-memory baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rmt import RMTConfig, RMTForCausalLM
from rmt.eval.grid import Grid, batch_size_for, evaluate_model, unique_names
from rmt.modeling.backbones import tiny_backbone_config
from rmt.modeling.padding import left_pad
from rmt.tasks.babilong.config import BabilongTaskConfig
from rmt.tasks.babilong.tokenizer import build_tokenizer
from rmt.tasks.base import EvalCell, EvalItem, build_task
from rmt.tasks.generative import generate_answers

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def babilong(tokenizer):
    """The BABILong task as rmt-eval builds it: generated stories, builtin background."""
    return build_task(OmegaConf.structured(BabilongTaskConfig), tokenizer=tokenizer,
                      segment_size=32, seed=0)  # fmt: skip


def _grid(task, **kwargs) -> Grid:
    return Grid(task, kwargs.pop("name", "stub"), "x", **kwargs)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    torch.manual_seed(0)
    bb = tiny_backbone_config(
        "gpt2",
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        max_positions=96,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return RMTForCausalLM(RMTConfig(backbone_config=bb, num_mem_tokens=4, segment_size=32)).eval()


class AnswerStub(torch.nn.Module):
    """A 'model' that always answers the same words; records what it was asked."""

    def __init__(self, tokenizer, answer: str, log: list):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.answer = tokenizer(f" {answer}", add_special_tokens=False)["input_ids"]
        self.eos = tokenizer.eos_token_id
        self.log = log

    def generate(self, ids, mask, **kwargs):
        self.log.append(("generate", ids.shape[0]))
        row = self.answer + [self.eos] + [0] * (kwargs["max_new_tokens"] - len(self.answer) - 1)
        return torch.tensor([row] * ids.shape[0])


def test_counts_and_one_batch_at_a_time(tokenizer, babilong, tmp_path: Path):
    log: list = []
    targets = ["kitchen", "garden", "kitchen", "office", "kitchen"]

    def make_items(cell):
        for i, target in enumerate(targets):
            log.append(("build", i))
            ids = tokenizer(" Mary went home . Where is Mary ? Answer:")["input_ids"]
            yield EvalItem(cell.task, i, ids, target, "Where is Mary?")

    model = AnswerStub(tokenizer, "kitchen", log)
    with open(tmp_path / "p.jsonl", "a") as predictions:
        grid = _grid(babilong, batch_size=2, max_new_tokens=5, predictions=predictions)
        rows = evaluate_model(model, grid, [EvalCell("qa1", "0k", 0)], make_items, progress=False)
    (row,) = rows
    assert (row.correct, row.n, row.accuracy) == (3, 5, 0.6)
    assert row.exact_match == 0.6  # the output is exactly "kitchen"
    # samples are built a batch at a time, right before their batch is scored
    assert log == [
        ("build", 0), ("build", 1), ("generate", 2),
        ("build", 2), ("build", 3), ("generate", 2),
        ("build", 4), ("generate", 1),
    ]  # fmt: skip
    preds = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [p["output"] for p in preds] == ["kitchen"] * 5
    assert [p["correct"] for p in preds] == [t == "kitchen" for t in targets]


def test_scoring_uses_babilong_rule_not_string_equality(tokenizer, babilong):
    items = [EvalItem("qa2", 0, [5, 6, 7], "kitchen", "Where is the milk?")]
    model = AnswerStub(tokenizer, "the milk is in the kitchen", [])
    (row,) = evaluate_model(
        model, _grid(babilong, max_new_tokens=10), [EvalCell("qa2", "0k", 0)],
        lambda cell: items, progress=False,
    )  # fmt: skip
    assert row.accuracy == 1.0 and row.exact_match == 0.0


def test_batch_size_shrinks_with_length():
    assert batch_size_for(0, 16, 65536) == 16
    assert batch_size_for(4096, 16, 65536) == 16
    assert batch_size_for(32768, 16, 65536) == 2
    assert batch_size_for(1 << 20, 16, 65536) == 1


def test_left_pad():
    ids, mask = left_pad([torch.tensor([1, 2, 3]), torch.tensor([4])], 0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    # embeddings too (the model's final segment): trailing dimensions are kept
    emb, mask = left_pad([torch.ones(2, 3), torch.full((1, 3), 2.0)])
    assert emb.shape == (2, 2, 3) and emb[1, 0].eq(0).all() and emb[1, 1].eq(2).all()
    assert mask.tolist() == [[1, 1], [0, 1]]


def test_batched_equals_one_by_one(tiny, tokenizer, babilong):
    """Padding in a batch (0k prompts differ in length) changes no answer."""
    items = list(babilong.eval_items(EvalCell("qa2", "0k", 0), samples=6, seed=0))
    assert len({len(it.prompt_ids) for it in items}) > 1
    prompts = [torch.as_tensor(it.prompt_ids) for it in items]
    kw = {"max_new_tokens": 4, "pad_id": tokenizer.pad_token_id, "eos_id": tokenizer.eos_token_id}
    for mode in ("rmt", "baseline"):
        batched = generate_answers(tiny, prompts, mode=mode, **kw)
        single = [generate_answers(tiny, [p], mode=mode, **kw)[0] for p in prompts]
        assert batched == single


def test_baseline_reads_the_end_that_fits(tiny, tokenizer, monkeypatch):
    """The backbone alone gets the last (positions - max_new_tokens) prompt tokens."""
    limit = tiny.config.max_backbone_positions()
    assert limit == 96
    seen = []
    original = tiny.backbone.generate

    def spy(**kwargs):
        seen.append(kwargs["input_ids"].clone())
        return original(**kwargs)

    monkeypatch.setattr(tiny.backbone, "generate", spy)
    prompt = torch.randint(3, len(tokenizer), (500,))
    answers = generate_answers(
        tiny, [prompt], mode="baseline", max_new_tokens=6, pad_id=0, eos_id=None
    )
    assert seen[0].shape == (1, limit - 6)
    assert torch.equal(seen[0][0], prompt[-(limit - 6) :])
    # and it is plain HF greedy generation on that window
    direct = original(
        input_ids=prompt[None, -(limit - 6) :], max_new_tokens=6, do_sample=False, pad_token_id=0
    )
    assert answers[0] == direct[0, limit - 6 :].tolist()
    with pytest.raises(ValueError, match="leaves no room"):
        generate_answers(tiny, [prompt], mode="baseline", max_new_tokens=96, pad_id=0, eos_id=None)


def test_rmt_gets_the_whole_prompt(tiny, monkeypatch):
    """RMT mode hands the full prompt to the memory model (which streams it); no cut."""
    seen = []
    original = type(tiny).generate

    def spy(self, ids, mask, **kwargs):
        seen.append((ids.clone(), mask.clone()))
        return original(self, ids, mask, **kwargs)

    monkeypatch.setattr(type(tiny), "generate", spy)
    prompts = [torch.randint(3, 500, (480,)), torch.randint(3, 500, (470,))]
    generate_answers(tiny, prompts, mode="rmt", max_new_tokens=3, pad_id=0, eos_id=None)
    ids, mask = seen[0]
    assert ids.shape == (2, 480) and mask.sum(1).tolist() == [480, 470]
    assert torch.equal(ids[0], prompts[0]) and torch.equal(ids[1, 10:], prompts[1])


def test_generated_items_are_seeded(tokenizer, babilong):
    def prompts(seed, length):
        cell = EvalCell("qa1", str(length), length)
        return [(list(it.prompt_ids), it.target)
                for it in babilong.eval_items(cell, samples=3, seed=seed)]  # fmt: skip

    a = prompts(0, 300)
    assert prompts(0, 300) == a
    assert prompts(1, 300) != a
    q = tokenizer(" Where", add_special_tokens=False)["input_ids"][0]
    for ids, _ in a:  # haystack of exactly the length, then question and marker
        assert len(ids) > 300 and ids[300] == q
    # the same stories at every length
    assert [t for _, t in prompts(0, 600)] == [t for _, t in a]


def test_unique_names():
    paths = [Path("/x/a/12-00"), Path("/x/b/12-00"), Path("/x/b/13-00")]
    assert unique_names(paths) == ["a/12-00", "b/12-00", "b/13-00"]
    assert unique_names([Path("/r/run1"), Path("/r/run2")]) == ["run1", "run2"]
