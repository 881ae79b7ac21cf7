"""BabilongDataset, collate and the curriculum sampler."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.utils.data import DataLoader

from rmt.modeling.padding import left_pad
from rmt.tasks.babilong.babi import BabiSample
from rmt.tasks.babilong.background import Background, make_background
from rmt.tasks.babilong.dataset import BabilongDataset, collate
from rmt.tasks.babilong.format import IGNORE_INDEX
from rmt.tasks.babilong.generators import generate_sample
from rmt.tasks.babilong.haystack import HaystackBuilder
from rmt.tasks.babilong.tokenizer import build_tokenizer
from rmt.tasks.generative import batch_prompts
from rmt.train.curriculum import CurriculumBatchSampler


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def builder(tok):
    return HaystackBuilder(tok, Background(make_background("builtin").sentences[:2000]))


def make(tok, builder, **kw):
    args = dict(split="train", num_samples=12, tokenizer=tok, builder=builder, length=300)
    args.update(kw)
    return BabilongDataset(args.pop("tasks", ["qa1", "qa2"]), **args)


def test_items_follow_the_generator_and_the_format(tok, builder):
    ds = make(tok, builder)
    assert len(ds) == 12
    item = ds[3]  # index 3 -> task qa2 (3 % 2), story 1 (3 // 2)
    sample = generate_sample("qa2", 1, split="train")
    assert (item["task"], item["question"], item["target"]) == (
        "qa2",
        sample.question,
        sample.answer,
    )
    p = item["prompt_length"]
    answer = tok(f" {sample.answer}", add_special_tokens=False)["input_ids"]
    assert item["input_ids"][p:] == answer + [tok.eos_token_id]
    q_len = len(tok(f" {sample.question} Answer:", add_special_tokens=False)["input_ids"])
    assert p == 300 + q_len  # length counts haystack tokens
    assert item["labels"][:p] == [IGNORE_INDEX] * p
    # deterministic, also for a freshly built dataset (another DataLoader worker)
    assert make(tok, builder)[3] == item
    assert make(tok, builder, seed=1)[3] != item
    assert make(tok, builder, split="test")[3]["question"] is not None
    with pytest.raises(IndexError):
        ds[12]


def test_total_length_fills_exactly(tok, builder):
    ds = make(tok, builder, length=None, total_length=256)
    for i in range(6):
        assert len(ds[i]["input_ids"]) == 256
        assert len(ds[(i, 512)]["input_ids"]) == 512  # per-batch length from the sampler


def test_facts_end_from_end_puts_facts_before_the_last_segment(tok, builder):
    segment = 64
    ds = make(tok, builder, length=None, facts_end_from_end=segment, max_facts=4)
    for i in range(8):
        total = 4 * segment
        item = ds[(i, total)]
        ids = item["input_ids"]
        assert len(ids) == total
        sample = ds.sample(i)
        last_fact = tok(f" {sample.facts[-1]}", add_special_tokens=False)["input_ids"]
        ends = [
            s + len(last_fact)
            for s in range(len(ids) - len(last_fact) + 1)
            if ids[s : s + len(last_fact)] == last_fact
        ]
        assert ends and min(ends) <= total - segment


def test_position_window_is_passed_through(tok, builder):
    ds = make(tok, builder, length=2000, position=(0.75, 1.0), tasks=["qa1"])
    item, sample = ds[0], ds.sample(0)
    first = tok(f" {sample.facts[0]}", add_special_tokens=False)["input_ids"]
    ids = item["input_ids"]
    hits = [s for s in range(2000) if ids[s : s + len(first)] == first]
    assert hits and all(h >= 1500 for h in hits)


def test_given_samples(tok, builder):
    samples = [
        BabiSample("qa1", ("Mary moved to the kitchen.",), "Where is Mary?", "kitchen", (0,)),
        BabiSample("qa6", ("John went to the office.",), "Is John in the office?", "yes", (0,)),
    ]
    ds = BabilongDataset(
        None, split="test", num_samples=None, tokenizer=tok, builder=builder, length=50,
        samples=samples,
    )  # fmt: skip
    assert len(ds) == 2
    assert [ds[i]["task"] for i in range(2)] == ["qa1", "qa6"]
    assert ds[1]["target"] == "yes"


def test_dataset_argument_errors(tok, builder):
    with pytest.raises(ValueError, match="no sample length"):
        make(tok, builder, length=None)[0]
    with pytest.raises(ValueError, match="num_samples"):
        make(tok, builder, num_samples=None)
    with pytest.raises(ValueError, match="split"):
        make(tok, builder, split="holdout")


def test_collate_pads_right_and_gives_the_prompts(tok, builder):
    ds = make(tok, builder, length=None, max_facts=3)
    items = [ds[(0, 100)], ds[(1, 120)]]
    batch = collate(items, pad_id=tok.pad_token_id)
    assert batch["input_ids"].shape == (2, 120) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"][0].tolist() == [1] * 100 + [0] * 20
    assert batch["input_ids"][0, 100:].eq(tok.pad_token_id).all()
    assert batch["labels"][0, 100:].eq(IGNORE_INDEX).all()
    assert batch["labels"][0, :100].tolist() == items[0]["labels"]
    p0, p1 = items[0]["prompt_length"], items[1]["prompt_length"]
    assert batch["prompt_length"].tolist() == [p0, p1]
    # the generation prompts are the inputs up to the answer, left-padded when generating
    prompts = batch_prompts(batch)
    assert [p.tolist() for p in prompts] == [items[0]["input_ids"][:p0], items[1]["input_ids"][:p1]]
    ids, mask = left_pad(prompts, tok.pad_token_id)
    width = max(p0, p1)
    assert ids.shape == (2, width) and ids[0, width - p0 :].tolist() == items[0]["input_ids"][:p0]
    assert mask[0].tolist() == [0] * (width - p0) + [1] * p0
    assert batch["target"] == [items[0]["target"], items[1]["target"]]
    assert batch["task"] == ["qa1", "qa2"] and len(batch["question"]) == 2


def test_sampler_lengths_ratio_and_determinism():
    sampler = CurriculumBatchSampler(
        num_samples=100, batch_size=4, segment_counts=[1, 2, 3], segment_size=32,
        max_ratio=0.4, seed=7,
    )  # fmt: skip
    batches = list(sampler)
    assert len(batches) == len(sampler) == 25
    indices = [i for b in batches for i, _ in b]
    assert sorted(indices) == list(range(100))  # one pass, every sample once
    totals = [b[0][1] for b in batches]
    assert all(len({t for _, t in b}) == 1 for b in batches)  # one length per batch
    assert set(totals) <= {32, 64, 96}
    assert totals.count(96) >= 10  # 40% forced to the maximum, plus uniform draws
    assert list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    never_max = CurriculumBatchSampler(100, 4, [1, 2, 3], 32, max_ratio=0.0, seed=7)
    all_max = CurriculumBatchSampler(100, 4, [1, 2, 3], 32, max_ratio=1.0, seed=7)
    assert {b[0][1] for b in all_max} == {96}
    assert len({b[0][1] for b in never_max}) == 3


def test_sampler_num_batches_and_partial_batches():
    s = CurriculumBatchSampler(10, 4, [2], 16, num_batches=7)
    batches = list(s)
    assert len(batches) == 7 and all(len(b) == 4 for b in batches)
    s = CurriculumBatchSampler(10, 4, [2], 16, drop_last=False)
    assert [len(b) for b in s] == [4, 4, 2]
    with pytest.raises(ValueError, match="segment_counts"):
        CurriculumBatchSampler(10, 4, [0], 16)
    with pytest.raises(ValueError, match="max_ratio"):
        CurriculumBatchSampler(10, 4, [1], 16, max_ratio=1.5)


def test_dataloader_with_sampler_and_workers(tok, builder):
    # stories short enough for two 64-token segments (bAbI's qa2 stories run past 128 tokens)
    ds = make(tok, builder, num_samples=8, length=None, max_facts=10)
    sampler = CurriculumBatchSampler(8, 2, [2, 3], 64, seed=1)
    collate_fn = partial(collate, pad_id=tok.pad_token_id)
    single = list(DataLoader(ds, batch_sampler=sampler, collate_fn=collate_fn))
    multi = list(DataLoader(ds, batch_sampler=sampler, collate_fn=collate_fn, num_workers=2))
    assert len(single) == 4
    for a, b in zip(single, multi, strict=True):
        assert a["input_ids"].shape[1] in (128, 192)
        assert torch.equal(a["input_ids"], b["input_ids"]) and a["target"] == b["target"]


def test_auto_workers_keep_a_core_for_training(monkeypatch):
    from rmt.train import curriculum

    assert curriculum.num_workers(0) == 0 and curriculum.num_workers(3) == 3
    monkeypatch.setattr(curriculum.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    assert curriculum.num_workers(None) == 1
    monkeypatch.setattr(curriculum.os, "sched_getaffinity", lambda _: set(range(64)), raising=False)
    assert curriculum.num_workers(None) == curriculum.MAX_AUTO_WORKERS
    monkeypatch.setattr(curriculum.os, "sched_getaffinity", lambda _: {0}, raising=False)
    assert curriculum.num_workers(None) == 0
