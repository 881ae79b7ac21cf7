"""Training loop: run folder anatomy, resume equivalence, atomic checkpoints, curriculum."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from helpers import events as _events

from rmt import run as checkpoint
from rmt.run import CheckpointError
from rmt.tasks.babilong.task import BabilongTask
from rmt.train import build, curriculum, trainer
from rmt.train.resume import PreemptionGuard, resume_config
from rmt.train.trainer import Trainer

# two curriculum stages of 3 steps on one-fact qa1 stories: 1 segment, then 1-2 segments
TWO_STAGES = (
    "task=babilong_qa1", "task.min_facts=1", "task.max_facts=1",
    "task.curriculum=[{segments:[1],steps:3},{segments:[1,2],steps:3,max_ratio:0.5}]",
)  # fmt: skip


def _curve(run: Path) -> dict[str, list]:
    """Everything logged per step, as plain lists (compared exactly)."""
    train, valid = _events(run, "train"), _events(run, "valid")
    return {
        "step": [e["step"] for e in train],
        "stage": [e["stage"] for e in train],
        "loss": [e["loss"] for e in train],
        "lr": [e["lr"] for e in train],
        "grad_norm": [e["grad_norm"] for e in train],
        "valid": [(e["step"], e["stage"], e["loss"], e["accuracy"]) for e in valid],
    }


def _optimizer_probe(monkeypatch) -> tuple[list[list], list[int]]:
    """Record, at every real optimizer step, the gradients it steps with and, after it, the
    step count of the first parameter's Adam state (the one place that touches internals)."""
    grads, counts = [], []
    make = build.make_optimizer

    def probed(cfg, model):
        opt = make(cfg, model)
        params = [p for group in opt.param_groups for p in group["params"]]

        def before(o, args, kwargs):
            grads.append([None if p.grad is None else p.grad.detach().clone() for p in params])

        def after(o, args, kwargs):
            counts.append(int(o.state[params[0]]["step"]))

        opt.register_step_pre_hook(before)
        opt.register_step_post_hook(after)
        return opt

    monkeypatch.setattr(build, "make_optimizer", probed)
    return grads, counts


def test_two_step_run_writes_the_run_folder(fast_cfg):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = fast_cfg("trainer.max_steps=2", "trainer.eval_every=2")
    result = trainer.train(cfg)
    run = Path(cfg.output_dir)

    assert result["steps"] == 2 and result["stopped"] == "max_steps"
    assert 0.0 <= result["best_metric"] <= 1.0
    assert json.loads((run / "summary.json").read_text())["best_metric"] == result["best_metric"]
    assert result["peak_memory_mb"] > 10 and 0 < result["steps_per_second"] < 1e4
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
    # dropout and a warmup + cosine schedule, two curriculum stages: equality needs RNG,
    # schedule, data order, stage and the best model of stage 0. The run stops at step 3, the
    # last step of stage 0, so the resumed run starts by switching stage.
    common = (*TWO_STAGES, "trainer.max_steps=6", "trainer.eval_every=2", "backbone.dropout=0.1",
              "optim.scheduler.warmup_steps=2")  # fmt: skip
    full = fast_cfg(*common, run="full")
    trainer.train(full)

    part = fast_cfg(*common, run="part")
    stopped = trainer.train(part, stop_at_step=3)
    assert stopped["stopped"] == "preempted" and stopped["step"] == 3
    assert not (Path(part.output_dir) / "summary.json").exists()
    state = json.loads((Path(part.output_dir) / "last/trainer_state.json").read_text())
    assert (state["step"], state["stage"]) == (3, 0)

    resumed = resume_config(part.output_dir, [])
    resumed.trainer.progress_bar = False
    result = trainer.train(resumed)
    assert result["steps"] == 6

    a, b = _curve(Path(full.output_dir)), _curve(Path(part.output_dir))
    assert a["step"] == [1, 2, 3, 4, 5, 6] and a["stage"] == [0, 0, 0, 1, 1, 1]
    assert b == a  # floats compared exactly: same process, same code, same RNG streams


def test_batches_built_in_workers_train_exactly_like_in_process(fast_cfg):
    # trainer.num_workers changes where batches are built, never what they hold: the same
    # losses with 0 (in the training process) and 2 workers, compared exactly.
    common = ("trainer.max_steps=3", "trainer.eval_every=3")
    curves = []
    for workers in (0, 2):
        cfg = fast_cfg(*common, f"trainer.num_workers={workers}", run=f"workers{workers}")
        trainer.train(cfg)
        curve = _curve(Path(cfg.output_dir))
        rows = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").open()]
        shares = [r["data_wait_share"] for r in rows if "data_wait_share" in r]
        assert len(shares) == 3 and all(0 <= s < 1 for s in shares)
        curves.append(curve)
    assert curves[0] == curves[1] and len(curves[0]["step"]) == 3


def test_resume_config_keeps_the_run_and_refuses_group_changes(fast_cfg):
    cfg = fast_cfg("trainer.max_steps=1", "trainer.eval_every=1")
    trainer.train(cfg)
    resumed = resume_config(cfg.output_dir, ["resume=x", "trainer.max_steps=3"])
    assert resumed.trainer.max_steps == 3 and resumed.memory.num_tokens == 4
    assert resumed.output_dir == cfg.output_dir
    with pytest.raises(CheckpointError, match="only plain keys"):
        resume_config(cfg.output_dir, ["task=babilong_qa2"])
    with pytest.raises(CheckpointError, match="config.yaml not found"):
        resume_config(Path(cfg.output_dir) / "nope", [])


def test_existing_run_folder_is_never_overwritten(fast_cfg):
    cfg = fast_cfg("trainer.max_steps=1", "trainer.eval_every=1")
    trainer.train(cfg)
    before = (Path(cfg.output_dir) / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match="never overwritten"):
        trainer.train(cfg)
    assert (Path(cfg.output_dir) / "metrics.jsonl").read_text() == before


def test_resume_without_checkpoint_says_what_to_do(fast_cfg, tmp_path):
    cfg = fast_cfg("trainer.max_steps=1")
    cfg.resume = cfg.output_dir
    Path(cfg.output_dir).mkdir()
    with pytest.raises(CheckpointError, match="no complete last/"):
        trainer.train(cfg)


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

    def evaluate(self):
        return {"accuracy": next(scores), "loss": 1.0, "samples": 8}, []

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    original_save = checkpoint.save_best
    calls = []

    def save_then_break(target, **kwargs):
        calls.append(kwargs["state"]["step"])
        if len(calls) == 2:  # second save dies after writing part of the folder
            kwargs["tokenizer"].save_pretrained = broken_save
        return original_save(target, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    monkeypatch.setattr(trainer, "save_best", save_then_break)
    with pytest.raises(OSError, match="disk full"):
        trainer.train(cfg)
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
        Trainer,
        "evaluate",
        lambda self: ({"accuracy": next(scores), "loss": 1.0, "samples": 8}, []),
    )
    seen = {}
    original = Trainer.next_stage

    def spy(self):
        accelerator, model, run_dir = self.accelerator, self.model, self.run_dir
        before = {k: v.clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        original(self)
        best = RMTForCausalLM.from_pretrained(run_dir / "best").state_dict()
        after = accelerator.unwrap_model(model).state_dict()
        seen["loaded_best"] = all(torch.equal(after[k], best[k]) for k in best)
        seen["changed"] = any(not torch.equal(after[k], before[k]) for k in before)
        seen["best_step"] = json.loads((run_dir / "best/trainer_state.json").read_text())["step"]

    monkeypatch.setattr(Trainer, "next_stage", spy)
    _, adam_steps = _optimizer_probe(monkeypatch)
    result = trainer.train(cfg)
    assert seen == {"loaded_best": True, "changed": True, "best_step": 1}
    assert adam_steps == [1, 2, 3, 1, 2]  # fresh optimizer moments in stage 1
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
        Trainer,
        "evaluate",
        lambda self: ({"accuracy": next(scores), "loss": 1.0, "samples": 8}, []),
    )
    result = trainer.train(cfg)
    assert result["steps"] == 3 and result["stopped"] == "curriculum_done"
    assert [e["stage"] for e in _events(Path(cfg.output_dir), "train")] == [0, 0, 1]


def test_a_stage_lr_sets_that_stages_peak_and_the_others_keep_optim_lr(fast_cfg):
    """``task.curriculum[i].lr``: e.g. a high rate to learn the memory path on the easy stage, a
    low one where the harder stage needs it; the schedule restarts at each stage's own peak."""
    cfg = fast_cfg(
        "task.curriculum=[{segments:[2],steps:2},{segments:[2],steps:2,lr:0.5}]",
        "trainer.max_steps=10", "optim.lr=0.01", "optim.scheduler.name=constant",
        "optim.scheduler.warmup_steps=0",
    )  # fmt: skip
    trainer.train(cfg)
    assert [e["lr"] for e in _events(Path(cfg.output_dir), "train")] == [0.01, 0.01, 0.5, 0.5]


def test_aux_lm_loss_adds_the_text_loss(fast_cfg):
    from rmt.config import typed

    cfg = typed(fast_cfg())
    tok = build.build_tokenizer(cfg)
    torch.manual_seed(0)
    model = build.build_model(cfg, tok)
    task = build.task_for(cfg, tok)
    batch = next(iter(curriculum.train_loader(task, cfg, 0, epoch=0, batch_size=4)))
    plain, parts = task.loss(model, batch, aux_weight=0.0)
    mixed, parts_aux = task.loss(model, batch, aux_weight=0.5)
    assert parts_aux["loss"] == pytest.approx(plain.item(), rel=1e-5)
    assert mixed.item() == pytest.approx(plain.item() + 0.5 * parts_aux["lm_loss"].item(), rel=1e-5)
    assert parts_aux["lm_loss"].item() > 0


def test_lr_schedule_warms_up_then_decays():
    kw = dict(stage_start=10, stage_steps=20, warmup=4, min_ratio=0.1)
    cosine = [curriculum.lr_factor(s, name="cosine", **kw) for s in range(10, 30)]
    assert cosine[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert cosine[4] == pytest.approx(1.0) and cosine[-1] > 0.1
    assert all(a >= b for a, b in zip(cosine[4:], cosine[5:], strict=False))
    assert curriculum.lr_factor(40, name="cosine", **kw) == pytest.approx(0.1)
    assert curriculum.lr_factor(40, name="linear", **kw) == pytest.approx(0.1)
    assert curriculum.lr_factor(20, name="constant", **kw) == 1.0
    assert math.isclose(curriculum.lr_factor(22, name="linear", **kw), 1 - 0.9 * 8 / 16)


def test_preemption_guard_turns_sigterm_into_a_flag():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        assert not guard.triggered
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.triggered and guard.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


def test_preemption_guard_gives_a_second_signal_its_previous_action():
    """The second signal restores the handlers from before and is raised again: without rmt's
    handler in the way, it does what it did before (SIGTERM's default: end the process)."""
    calls = []

    def previous(signum, frame):
        calls.append(signum)

    before = signal.signal(signal.SIGUSR1, previous)
    try:
        with PreemptionGuard(signals=(signal.SIGUSR1,)) as guard:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert guard.received == signal.SIGUSR1 and calls == []
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(100):  # Python runs the re-raised signal's handler between bytecodes
                if calls:
                    break
            assert calls == [signal.SIGUSR1]
            assert signal.getsignal(signal.SIGUSR1) is previous
    finally:
        signal.signal(signal.SIGUSR1, before)


def _write_babi(folder: Path) -> None:
    story = (
        "1 Mary moved to the bathroom.\n2 John went to the hallway.\n"
        "3 Where is Mary? \tbathroom\t1\n4 Daniel went back to the hallway.\n"
        "5 Sandra moved to the garden.\n6 Where is Daniel? \thallway\t4\n"
    )
    for split in ("train", "test"):
        (folder / f"qa1_single-supporting-fact_{split}.txt").write_text(story * 10)


def test_babi_files_train(fast_cfg, tmp_path):
    data = tmp_path / "babi"
    data.mkdir()
    _write_babi(data)
    cfg = fast_cfg(
        "task.source=babi", f"task.path={data}", "trainer.max_steps=1", "task.valid_samples=4",
        "task.curriculum=[{segments:[4]}]",  # stories of up to 5 facts before the last segment
        "task.debug=false",  # min/max_facts 2..4 keep both questions (debug caps at 2 facts)
    )  # fmt: skip
    result = trainer.train(cfg)
    assert result["steps"] == 1
    # 4 questions: two whole stories held out of the _train file
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
    result = trainer.train(cfg)
    assert result["steps"] == 2
    assert _events(Path(cfg.output_dir), "valid")[-1]["samples"] == 4


def test_stories_that_cannot_fit_fail_before_training(fast_cfg):
    from rmt.config import ConfigError, typed

    # 24-token segments; task.debug=false: debug=fast would cap the stories at 2 facts
    cfg = typed(fast_cfg("task.max_facts=10", "task.min_facts=null", "task.debug=false"))
    with pytest.raises(ConfigError, match="Lower task.max_facts"):
        build.task_for(cfg, build.build_tokenizer(cfg)).preflight()
    with pytest.raises(ConfigError, match="task.max_facts"):
        trainer.train(cfg)
    assert not (Path(cfg.output_dir) / "metrics.jsonl").exists()


def _record_batches(monkeypatch) -> list[dict]:
    """Every training micro-batch, as the loss function receives it."""
    seen = []
    task_loss = BabilongTask.loss

    def probed(self, model, batch, *, aux_weight):
        seen.append({k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)})
        return task_loss(self, model, batch, aux_weight=aux_weight)

    monkeypatch.setattr(BabilongTask, "loss", probed)
    return seen


def test_gradient_accumulation_equals_one_large_batch(fast_cfg, monkeypatch):
    """grad_accum=2 with batch 2 steps with the gradients of one batch of 4 (same samples).

    The loss is a mean over labelled tokens; accumulation averages the micro-batch means, which
    equals the large batch's mean when every sample has as many labelled (and text) tokens, as
    here (checked). Clipping is off, so a gradient off by a factor would show.
    """
    monkeypatch.setattr(
        Trainer, "evaluate", lambda self: ({"accuracy": 0.0, "loss": 1.0, "samples": 8}, [])
    )
    common = ("task.train_samples=16", "trainer.max_steps=1", "trainer.max_grad_norm=null")
    grads, batches = {}, {}
    for name, batch, accum in (("large", 4, 1), ("accum", 2, 2)):
        cfg = fast_cfg(*common, f"trainer.batch_size={batch}", f"trainer.grad_accum={accum}",
                       run=name)  # fmt: skip
        with monkeypatch.context() as mp:
            grads[name], _ = _optimizer_probe(mp)
            batches[name] = _record_batches(mp)
            trainer.train(cfg)
        state = json.loads((Path(cfg.output_dir) / "last/trainer_state.json").read_text())
        assert state["progress"]["stage_batches"] == accum  # micro-batches consumed
    # the same four samples, no padding, one answer token count for all of them
    (large,), micro = batches["large"], batches["accum"]
    assert len(micro) == 2 and len(grads["large"]) == len(grads["accum"]) == 1
    assert torch.equal(torch.cat([m["input_ids"] for m in micro]), large["input_ids"])
    assert bool(large["attention_mask"].all())
    assert len(set((large["labels"] != -100).sum(1).tolist())) == 1

    for g_large, g_accum in zip(grads["large"][0], grads["accum"][0], strict=True):
        assert (g_large is None) == (g_accum is None)
        if g_large is not None:
            torch.testing.assert_close(g_accum, g_large, rtol=1e-5, atol=1e-6)


def _record_linear_dtypes(monkeypatch) -> set:
    """Output dtypes of the model's Linear layers during training forward passes."""
    dtypes = set()
    build_model = build.build_model

    def probed(cfg, tokenizer):
        model = build_model(cfg, tokenizer)
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(
                    lambda m, args, out: dtypes.add(out.dtype) if m.training else None
                )
        return model

    monkeypatch.setattr(build, "build_model", probed)
    return dtypes


@pytest.mark.parametrize(
    "precision, expected",
    [
        ("bf16", "bf16"),  # CPU autocast here; bf16/fp16 on GPUs
        # auto: bf16 on GPUs that support it, full precision elsewhere (README)
        ("auto", "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"),
    ],
)
def test_mixed_precision_autocasts_the_forward(fast_cfg, monkeypatch, caplog, precision, expected):
    dtypes = _record_linear_dtypes(monkeypatch)
    cfg = fast_cfg("trainer.max_steps=1", f"trainer.mixed_precision={precision}")
    with caplog.at_level("INFO", logger="rmt"):
        result = trainer.train(cfg)
    assert result["steps"] == 1
    expected_dtype = torch.bfloat16 if expected == "bf16" else torch.float32
    assert dtypes == {expected_dtype}
    assert f"precision {expected}" in caplog.text
    if precision == "bf16":  # the weights stay float32; only the computation is bf16
        from transformers import AutoModelForCausalLM

        best = AutoModelForCausalLM.from_pretrained(Path(cfg.output_dir) / "best")
        assert {p.dtype for p in best.parameters()} == {torch.float32}


def test_auto_precision_resolves_by_device(monkeypatch):
    assert build.resolve_precision("fp16") == "fp16" and build.resolve_precision("no") == "no"
    for cuda, bf16, expected in ((False, False, "no"), (True, False, "no"), (True, True, "bf16")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, bf16=bf16, **k: bf16)
        assert build.resolve_precision("auto") == expected, (cuda, bf16)
