"""Training loop: run folder anatomy, resume equivalence, atomic checkpoints, curriculum."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from rmt.train import checkpoint, loop
from rmt.train.checkpoint import CheckpointError


def _events(run: Path, split: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["split"] == split]


def test_two_step_run_writes_the_run_folder(fast_cfg):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = fast_cfg("trainer.max_steps=2", "trainer.eval_every=2")
    result = loop.train(cfg)
    run = Path(cfg.output_dir)

    assert result["steps"] == 2 and result["stopped"] == "max_steps"
    assert 0.0 <= result["best_metric"] <= 1.0
    assert json.loads((run / "summary.json").read_text())["best_metric"] == result["best_metric"]
    assert (run / "config.yaml").read_text().count("num_tokens: 4") == 1
    train_events, valid_events = _events(run, "train"), _events(run, "valid")
    assert [e["step"] for e in train_events] == [1, 2]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "segments", "stage", "minutes"):
        assert key in train_events[0], key
    assert valid_events[-1]["step"] == 2
    assert {"accuracy", "loss", "samples"} <= set(valid_events[-1])
    assert valid_events[-1]["samples"] == 8
    assert list((run / "tb").glob("events.out.tfevents*"))

    best, last = run / "best", run / "last"
    assert (best / "config.yaml").is_file() and (best / "tokenizer.json").is_file()
    state = json.loads((best / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["metric_name"] == "valid/accuracy"
    model = AutoModelForCausalLM.from_pretrained(best)  # HF-native after `import rmt`
    assert type(model).__name__ == "RMTForCausalLM" and model.config.num_mem_tokens == 4
    assert AutoTokenizer.from_pretrained(best).pad_token == "<pad>"
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 2
    assert list(last.glob("*.safetensors")) and list(last.glob("random_states_*.pkl"))
    assert not list(run.glob(".*.tmp")) and not list(run.glob(".*.old"))


def test_resume_continues_exactly_like_an_uninterrupted_run(fast_cfg):
    # dropout and a warmup + cosine schedule: equality needs RNG, schedule and data order
    common = ("trainer.max_steps=6", "trainer.eval_every=2", "backbone.dropout=0.1",
              "optim.scheduler.warmup_steps=2")  # fmt: skip
    full = fast_cfg(*common, run="full")
    loop.train(full)

    part = fast_cfg(*common, run="part")
    stopped = loop.train(part, stop_at_step=3)
    assert stopped["stopped"] == "preempted" and stopped["step"] == 3
    assert not (Path(part.output_dir) / "summary.json").exists()
    assert json.loads((Path(part.output_dir) / "last/trainer_state.json").read_text())["step"] == 3

    resumed = checkpoint.resume_config(part.output_dir, [])
    resumed.trainer.progress_bar = False
    result = loop.train(resumed)
    assert result["steps"] == 6

    a = _events(Path(full.output_dir), "train")
    b = _events(Path(part.output_dir), "train")
    assert [e["step"] for e in b] == [1, 2, 3, 4, 5, 6]
    for ea, eb in zip(a, b, strict=True):
        assert ea["lr"] == eb["lr"]
        assert ea["loss"] == pytest.approx(eb["loss"], rel=1e-6, abs=1e-7), ea["step"]
    va, vb = _events(Path(full.output_dir), "valid"), _events(Path(part.output_dir), "valid")
    assert [(e["step"], e["loss"]) for e in va] == pytest.approx(
        [(e["step"], e["loss"]) for e in vb]
    )


def test_resume_config_keeps_the_run_and_refuses_group_changes(fast_cfg):
    cfg = fast_cfg("trainer.max_steps=1", "trainer.eval_every=1")
    loop.train(cfg)
    resumed = checkpoint.resume_config(cfg.output_dir, ["resume=x", "trainer.max_steps=3"])
    assert resumed.trainer.max_steps == 3 and resumed.memory.num_tokens == 4
    assert resumed.output_dir == cfg.output_dir
    with pytest.raises(CheckpointError, match="only plain keys"):
        checkpoint.resume_config(cfg.output_dir, ["task=babilong_qa2"])
    with pytest.raises(CheckpointError, match="config.yaml not found"):
        checkpoint.resume_config(Path(cfg.output_dir) / "nope", [])


def test_existing_run_folder_is_never_overwritten(fast_cfg):
    cfg = fast_cfg("trainer.max_steps=1", "trainer.eval_every=1")
    loop.train(cfg)
    before = (Path(cfg.output_dir) / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match="never overwritten"):
        loop.train(cfg)
    assert (Path(cfg.output_dir) / "metrics.jsonl").read_text() == before


def test_resume_without_checkpoint_says_what_to_do(fast_cfg, tmp_path):
    cfg = fast_cfg("trainer.max_steps=1")
    cfg.resume = cfg.output_dir
    Path(cfg.output_dir).mkdir()
    with pytest.raises(CheckpointError, match="no complete last/"):
        loop.train(cfg)


def test_atomic_dir_keeps_the_previous_checkpoint_on_failure(tmp_path):
    target = tmp_path / "best"
    with checkpoint.atomic_dir(target) as tmp:
        (tmp / "trainer_state.json").write_text('{"step": 1}')
    with pytest.raises(RuntimeError):
        with checkpoint.atomic_dir(target) as tmp:
            (tmp / "trainer_state.json").write_text('{"step": 2}')
            raise RuntimeError("killed mid-save")
    assert json.loads((target / "trainer_state.json").read_text()) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]

    # a crash between the two renames leaves the complete previous folder as .best.old
    os.replace(target, tmp_path / ".best.old")
    assert checkpoint.resolve_checkpoint(target) == tmp_path / ".best.old"
    with checkpoint.atomic_dir(target) as tmp:
        (tmp / "trainer_state.json").write_text('{"step": 3}')
    assert checkpoint.resolve_checkpoint(target) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_failed_best_save_leaves_best_untouched(fast_cfg, monkeypatch):
    cfg = fast_cfg("trainer.max_steps=2", "trainer.eval_every=1")
    scores = iter([0.5, 0.9])

    def evaluate(*args, **kwargs):
        return {"accuracy": next(scores), "loss": 1.0, "samples": 8}

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    original_save = checkpoint.save_best
    calls = []

    def save_then_break(target, **kwargs):
        calls.append(kwargs["state"]["step"])
        if len(calls) == 2:  # second save dies after writing part of the folder
            kwargs["tokenizer"].save_pretrained = broken_save
        return original_save(target, **kwargs)

    monkeypatch.setattr(loop, "evaluate", evaluate)
    monkeypatch.setattr(loop, "save_best", save_then_break)
    with pytest.raises(OSError, match="disk full"):
        loop.train(cfg)
    run = Path(cfg.output_dir)
    assert json.loads((run / "best/trainer_state.json").read_text())["step"] == 1
    assert (run / "best/model.safetensors").is_file()
    assert not (run / ".best.tmp").exists()


def test_curriculum_switches_stage_from_the_best_model(fast_cfg, monkeypatch):
    from rmt.modeling import RMTForCausalLM

    cfg = fast_cfg(
        "task=babilong_qa1",
        "task.min_facts=1",
        "task.max_facts=1",
        "task.curriculum=[{segments:[1],steps:3},{segments:[1,2],steps:2,max_ratio:1.0}]",
        "trainer.max_steps=10",
        "trainer.eval_every=1",
    )
    # stage 0: best at step 1 (0.9), then worse; stage 1 starts from step 1's weights
    scores = iter([0.9, 0.2, 0.1, 0.3, 0.4])
    monkeypatch.setattr(
        loop, "evaluate", lambda *a, **k: {"accuracy": next(scores), "loss": 1.0, "samples": 8}
    )
    seen = {}
    original = loop._next_stage

    def spy(accelerator, model, optimizer, run_dir, progress):
        before = {k: v.clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        original(accelerator, model, optimizer, run_dir, progress)
        best = RMTForCausalLM.from_pretrained(run_dir / "best").state_dict()
        after = accelerator.unwrap_model(model).state_dict()
        seen["loaded_best"] = all(torch.equal(after[k], best[k]) for k in best)
        seen["changed"] = any(not torch.equal(after[k], before[k]) for k in before)
        seen["best_step"] = json.loads((run_dir / "best/trainer_state.json").read_text())["step"]

    monkeypatch.setattr(loop, "_next_stage", spy)
    result = loop.train(cfg)
    assert seen == {"loaded_best": True, "changed": True, "best_step": 1}
    assert result["stopped"] == "curriculum_done" and result["steps"] == 5
    events = _events(Path(cfg.output_dir), "train")
    assert [e["stage"] for e in events] == [0, 0, 0, 1, 1]
    assert {e["segments"] for e in events[:3]} == {1} and {e["segments"] for e in events[3:]} == {2}
    warm = cfg.optim.lr / (cfg.optim.scheduler.warmup_steps + 1)  # first step of a schedule
    assert events[0]["lr"] == pytest.approx(warm) and events[3]["lr"] == pytest.approx(warm)
    valid = _events(Path(cfg.output_dir), "valid")
    assert [(e["stage"], e["segments"]) for e in valid] == [(0, 1)] * 3 + [(1, 2)] * 2
    assert result["best_metric"] == 0.4 and result["best_step"] == 5


def test_until_accuracy_ends_a_stage_early(fast_cfg, monkeypatch):
    cfg = fast_cfg(
        "task.curriculum=[{segments:[2],steps:50,until_accuracy:0.5},{segments:[3],steps:1}]",
        "trainer.max_steps=60",
        "trainer.eval_every=1",
    )
    scores = iter([0.1, 0.6, 0.0])
    monkeypatch.setattr(
        loop, "evaluate", lambda *a, **k: {"accuracy": next(scores), "loss": 1.0, "samples": 8}
    )
    result = loop.train(cfg)
    assert result["steps"] == 3 and result["stopped"] == "curriculum_done"
    assert [e["stage"] for e in _events(Path(cfg.output_dir), "train")] == [0, 0, 1]


def test_aux_lm_loss_adds_the_text_loss(fast_cfg):
    from rmt.train import build

    cfg = fast_cfg()
    tok = build.build_tokenizer(cfg)
    torch.manual_seed(0)
    model = build.build_model(cfg, tok)
    batch = next(iter(build.TaskData(cfg, tok).train_loader(0, epoch=0, batch_size=4)))
    plain, parts = loop.compute_loss(model, batch, 0.0)
    mixed, parts_aux = loop.compute_loss(model, batch, 0.5)
    assert parts_aux["loss"] == pytest.approx(plain.item(), rel=1e-5)
    assert mixed.item() == pytest.approx(plain.item() + 0.5 * parts_aux["lm_loss"].item(), rel=1e-5)
    assert parts_aux["lm_loss"].item() > 0


def test_lr_schedule_warms_up_then_decays():
    kw = dict(stage_start=10, stage_steps=20, warmup=4, min_ratio=0.1)
    cosine = [loop.lr_factor(s, name="cosine", **kw) for s in range(10, 30)]
    assert cosine[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert cosine[4] == pytest.approx(1.0) and cosine[-1] > 0.1
    assert all(a >= b for a, b in zip(cosine[4:], cosine[5:], strict=False))
    assert loop.lr_factor(40, name="cosine", **kw) == pytest.approx(0.1)
    assert loop.lr_factor(40, name="linear", **kw) == pytest.approx(0.1)
    assert loop.lr_factor(20, name="constant", **kw) == 1.0
    assert math.isclose(loop.lr_factor(22, name="linear", **kw), 1 - 0.9 * 8 / 16)


def test_preemption_guard_turns_sigterm_into_a_flag():
    before = signal.getsignal(signal.SIGTERM)
    with checkpoint.PreemptionGuard() as guard:
        assert not guard.triggered
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.triggered and guard.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


def _write_babi(folder: Path) -> None:
    story = (
        "1 Mary moved to the bathroom.\n2 John went to the hallway.\n"
        "3 Where is Mary? \tbathroom\t1\n4 Daniel went back to the hallway.\n"
        "5 Sandra moved to the garden.\n6 Where is Daniel? \thallway\t4\n"
    )
    for split in ("train", "test"):
        (folder / f"qa1_single-supporting-fact_{split}.txt").write_text(story * 10)


def test_local_babi_files_train(fast_cfg, tmp_path):
    data = tmp_path / "babi"
    data.mkdir()
    _write_babi(data)
    cfg = fast_cfg(
        "task.source=local", f"task.path={data}", "trainer.max_steps=1", "task.valid_samples=4",
        "task.curriculum=[{segments:[4]}]",  # stories of up to 5 facts before the last segment
    )  # fmt: skip
    result = loop.train(cfg)
    assert result["steps"] == 1
    assert _events(Path(cfg.output_dir), "valid")[-1]["samples"] == 4


def test_prebuilt_babilong_rows_train(fast_cfg, tmp_path):
    folder = tmp_path / "babilong" / "0k"
    folder.mkdir(parents=True)
    rows = [
        {"input": "Mary moved to the bathroom. John went to the hallway.",
         "question": "Where is Mary?", "target": "bathroom"},
        {"input": "Daniel went to the garden. Sandra moved to the office.",
         "question": "Where is Sandra?", "target": "office"},
    ] * 10  # fmt: skip
    (folder / "qa1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = fast_cfg(
        "task=babilong_hub", f"task.path={tmp_path / 'babilong'}", "task.babilong_length=0k",
        "task.valid_samples=4", "trainer.max_steps=2", "trainer.eval_every=2",
    )  # fmt: skip
    result = loop.train(cfg)
    assert result["steps"] == 2
    assert _events(Path(cfg.output_dir), "valid")[-1]["samples"] == 4


def test_stories_that_cannot_fit_fail_before_training(fast_cfg):
    from rmt.config.schema import ConfigError
    from rmt.train import build

    cfg = fast_cfg("task.max_facts=10", "task.min_facts=null")  # 24-token segments
    with pytest.raises(ConfigError, match="Lower task.max_facts"):
        build.TaskData(cfg, build.build_tokenizer(cfg)).preflight()
    with pytest.raises(ConfigError, match="task.max_facts"):
        loop.train(cfg)
    assert not (Path(cfg.output_dir) / "metrics.jsonl").exists()


def test_gradient_accumulation_and_bf16_autocast(fast_cfg):
    cfg = fast_cfg(
        "trainer.grad_accum=2", "trainer.max_steps=2", "trainer.eval_every=2",
        "trainer.mixed_precision=bf16",  # CPU autocast here; bf16/fp16 on GPUs
    )  # fmt: skip
    result = loop.train(cfg)
    state = json.loads((Path(cfg.output_dir) / "last/trainer_state.json").read_text())
    assert result["steps"] == 2 and state["progress"]["stage_batches"] == 4  # 2 micro per step
    assert [e["step"] for e in _events(Path(cfg.output_dir), "train")] == [1, 2]
