"""task=lm: next-token loss on documents read segment by segment, perplexity by segment index.

The model is checked against the plain backbone, the per-segment losses against the overall
one, memory against no memory on text whose later segments repeat the first, and the CLI
(debug=fast task=lm: train, resume, rmt-eval, a sweep and rmt-report) end to end.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import FAST, compose_config, events, main_in_process
from omegaconf import OmegaConf

from rmt.config import ConfigError, typed, validate
from rmt.tasks import TASKS, build_task
from rmt.tasks.babilong.tokenizer import build_tokenizer
from rmt.tasks.lm import LmTask
from rmt.tasks.lm.config import LmTaskConfig
from rmt.tasks.lm.data import TokenStream, collate, perplexity_metrics, segment_losses
from rmt.tasks.text import builtin_documents
from rmt.train.resume import resume_config

LM = [*FAST, "task=lm"]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _task(tok, segment_size=8, **fields) -> LmTask:
    cfg = OmegaConf.merge(OmegaConf.structured(LmTaskConfig), {"builtin": {"num_docs": 20}}, fields)
    return build_task(cfg, tokenizer=tok, segment_size=segment_size, seed=0)


def test_lm_is_registered_with_its_schema(tok):
    assert TASKS["lm"] is LmTask
    cfg = typed(compose_config(LM))
    assert cfg.task.type == "lm" and cfg.task.source.kind == "builtin"
    validate(cfg, check_backbone=False)
    with pytest.raises(Exception, match="min_facts"):
        compose_config([*LM, "task.min_facts=2"])  # a BABILong key is a typo here
    with pytest.raises(ConfigError, match="until_accuracy"):
        validate(
            typed(compose_config([*LM, "task.curriculum=[{segments:[2],until_accuracy:0.5}]"]))
        )
    with pytest.raises(ConfigError, match="task.source.path"):
        validate(typed(compose_config([*LM, "task.source.kind=files", "task.source.path=/nope"])))
    with pytest.raises(ConfigError, match="task.source.kind=hf needs task.source.dataset"):
        validate(typed(compose_config([*LM, "task.source.kind=hf"])))
    with pytest.raises(ConfigError, match="task.source.kind='web' is not valid"):
        validate(typed(compose_config([*LM, "task.source.kind=web"])))


def test_windows_splits_and_documents(tok, tmp_path):
    docs = builtin_documents(0, 6, 5, 4)
    assert docs == builtin_documents(0, 6, 5, 4) and len(set(docs)) == 6
    task = _task(tok)
    streams = task.streams
    assert {len(streams[s].starts) for s in ("validation", "test")} == {2}
    assert len(streams["train"].starts) == 16
    train = task.dataset("train", stage=0, seed=0, num_samples=50)
    assert len(train[(3, 40)]["input_ids"]) == 40 and train[(3, 40)] == train[(3, 40)]
    assert train[(3, 40)] != train[(4, 40)]
    stream = TokenStream(torch.arange(10).numpy(), starts=torch.tensor([0, 6]).numpy(),
                         ends=torch.tensor([6, 10]).numpy())  # fmt: skip
    assert stream.window(1, 6).tolist() == [6, 7, 8, 9, 0, 1]  # document 1 reads on, wrapping
    assert stream.window(2, 3).tolist() == [3, 4, 5]  # document 0, its second piece
    few = tmp_path / "two"
    few.mkdir()
    for i in range(2):
        (few / f"{i}.txt").write_text("the old river waited . " * 20)
    with pytest.raises(ConfigError, match="at least 3"):
        _task(tok, source={"kind": "files", "path": str(few)}).preflight()


def test_one_segment_without_memory_equals_the_backbone(tok, tiny_rmt):
    """The task's loss on one segment with no memory is the plain backbone's LM loss."""
    model = tiny_rmt("llama", mem=0, seg=16, vocab=len(tok))
    task = _task(tok, segment_size=16)
    batch = task.collate([task.dataset("train", stage=0, seed=0, num_samples=4)[(i, 16)]
                          for i in range(4)])  # fmt: skip
    loss, parts = task.loss(model, batch, aux_weight=0.0)
    plain = model.backbone(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
    assert loss.item() == pytest.approx(plain.item(), rel=1e-5)
    assert parts["loss"].item() == pytest.approx(plain.item(), rel=1e-5)


def test_loss_by_segment_adds_up_to_the_overall_loss(tok, tiny_rmt):
    model = tiny_rmt("llama", mem=4, seg=8, vocab=len(tok))
    task = _task(tok, segment_size=8)
    data = task.dataset("validation", stage=0, seed=0, num_samples=3)
    items = [data[(0, 30)], data[(1, 21)], data[(2, 8)]]  # 4, 3 and 1 segments, right-padded
    batch = task.collate(items)
    out = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")})
    rows = task.validation_rows(model, batch)
    assert rows["tokens"].tolist() == [[8, 8, 8, 5], [8, 8, 4, 0], [7, 0, 0, 0]]
    metrics = task.validation_metrics(rows)
    weighted = sum(metrics[f"loss_seg{k}"] * rows["tokens"][:, k].sum().item() for k in range(4))
    assert weighted / rows["tokens"].sum().item() == pytest.approx(out.loss.item(), rel=1e-5)
    assert metrics["loss"] == pytest.approx(out.loss.item(), rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(out.loss.item()), rel=1e-5)
    assert metrics["tokens"] == 8 * 3 + 5 + 8 * 2 + 4 + 7 == int(out.num_label_tokens.sum())


def test_segment_losses_follow_the_alignment():
    loss = torch.arange(1.0, 8.0).unsqueeze(0)  # 7 tokens: positions 0..5 predict
    labels = torch.zeros(1, 7, dtype=torch.long)
    left, n_left = segment_losses(loss, labels, segment_size=3, alignment="left")
    right, n_right = segment_losses(loss, labels, segment_size=3, alignment="right")
    assert n_left.tolist() == [[3, 3, 0]] and left.tolist() == [[6, 15, 0]]
    assert n_right.tolist() == [[1, 3, 2]] and right.tolist() == [[1, 9, 11]]
    metrics = perplexity_metrics(left, n_left)
    assert metrics["loss"] == pytest.approx(21 / 6) and "loss_seg2" not in metrics


def _repeat_batch(gen: torch.Generator, vocab: int, size: int, segments: int) -> dict:
    """Every sample: a random segment, then the same tokens again in every later segment."""
    first = torch.randint(3, vocab, (16, size), generator=gen)
    return collate([{"input_ids": row.repeat(segments).tolist()} for row in first], pad_id=0)


def _later_segment_loss(tok, tiny_rmt, mem: int, steps: int = 150) -> tuple[float, float]:
    torch.manual_seed(0)
    model = tiny_rmt("llama", mem=mem, seg=4, vocab=16).train()
    task = _task(tok, segment_size=4)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss, _ = task.loss(model, _repeat_batch(gen, 16, 4, 2), aux_weight=0.0)
        loss.backward()
        optim.step()
        optim.zero_grad()
    model.eval()
    with torch.no_grad():
        rows = task.validation_rows(
            model, _repeat_batch(torch.Generator().manual_seed(1), 16, 4, 2)
        )
    metrics = task.validation_metrics(rows)
    return metrics["loss_seg0"], metrics["loss_seg1"]


def test_memory_lowers_the_loss_of_segments_that_repeat_an_earlier_one(tok, tiny_rmt, one_thread):
    """Segment 1 repeats segment 0: its tokens are predictable only through memory."""
    mem_first, mem_later = _later_segment_loss(tok, tiny_rmt, mem=4)
    none_first, none_later = _later_segment_loss(tok, tiny_rmt, mem=0)
    assert none_later > 0.8 * none_first  # without memory the repeat is (nearly) as hard
    assert mem_later < 0.7 * none_later  # memory carries the first segment into the second


# ------------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    run = root / "run"
    with pytest.MonkeyPatch.context() as mp:
        code = main_in_process(mp, *LM, f"hydra.run.dir={run}", "trainer.max_steps=3",
                               "trainer.eval_every=2")  # fmt: skip
    assert code == 0
    return root, run


def test_debug_fast_lm_trains_and_keeps_the_lowest_perplexity(lm_run):
    _, run = lm_run
    valid = events(run, "valid")
    assert [e["step"] for e in valid] == [2, 3]
    assert all(
        {"perplexity", "perplexity_seg0", "perplexity_seg1", "loss"} <= set(e) for e in valid
    )
    assert all("tokens_per_s" in e for e in events(run, "train"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metric_name"] == "valid/perplexity"
    assert summary["best_metric"] == min(e["perplexity"] for e in valid)
    best = json.loads((run / "best" / "trainer_state.json").read_text())
    assert best["step"] == summary["best_step"]


def test_lm_run_resumes(lm_run, monkeypatch):
    _, run = lm_run
    assert resume_config(run, []).task.type == "lm"
    assert main_in_process(monkeypatch, f"resume={run}", "trainer.max_steps=4") == 0
    assert [e["step"] for e in events(run, "train")] == [1, 2, 3, 4]
    assert json.loads((run / "summary.json").read_text())["steps"] == 4


def test_rmt_eval_reports_perplexity_by_length_and_segment(lm_run, monkeypatch):
    root, run = lm_run
    out = root / "eval"
    args = (f"checkpoint={run}", "lengths=[24,72]", "samples=3", f"hydra.run.dir={out}",
            "progress_bar=false")  # fmt: skip
    assert main_in_process(monkeypatch, *args, cli="rmt-eval") == 0
    rows = json.loads((out / "results.json").read_text())["results"]
    assert [(r["length_tokens"], len(r["segments"])) for r in rows] == [(24, 1), (72, 3)]
    assert all(r["n"] == 3 and r["perplexity"] > 1 for r in rows)
    assert (out / "perplexity_by_segment.png").stat().st_size > 0
    assert "seg2" in (out / "results.md").read_text()


def test_lm_sweep_and_report(tmp_path, monkeypatch):
    from rmt.cli import report

    sweep = tmp_path / "sweep"
    code = main_in_process(monkeypatch, "-m", *LM, "trainer.max_steps=1", "trainer.eval_every=1",
                           "memory.num_tokens=0,2", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert code == 0
    paths = report.run([str(sweep)])
    table = paths["markdown"].read_text()
    assert "memory.num_tokens" in table and "best_valid_perplexity" in table
