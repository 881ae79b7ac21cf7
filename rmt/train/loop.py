"""The training loop of ``rmt-train``: ``train(cfg) -> metrics``.

One linear Accelerate loop, read top to bottom: setup (validate, seed, build, prepare once),
train (accumulate, clip, schedule, log, validate every N steps, curriculum stages), save
(best/ on a better validation accuracy, last/ for resume), cleanup (summary, close writers).

Everything that makes a resumed run continue exactly where it stopped lives in
``trainer_state.json`` (step, stage, micro-batches consumed in the stage) and in
``accelerator.save_state`` (weights, optimizer, RNG states): data order is a pure function of
(seed, stage, batch index), the learning rate a pure function of the step, and data loaders
carry their own generators, so nothing else draws from the global RNG streams.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from rmt.config.schema import ConfigError, TrainConfig, validate
from rmt.train import build
from rmt.train.checkpoint import (
    CONFIG_FILE,
    METRICS_FILE,
    PreemptionGuard,
    check_fresh_run_dir,
    load_last,
    new_state,
    resolve_checkpoint,
    save_best,
    save_last,
    write_json,
)

log = logging.getLogger(__name__)

METRIC_NAME = "valid/accuracy"


@dataclass
class Progress:
    """Where the run stands; saved in trainer_state.json with every checkpoint."""

    step: int = 0  # optimizer steps done
    stage: int = 0  # curriculum stage index
    stage_start: int = 0  # step at which this stage began
    epoch: int = 0  # passes over a finite training set in this stage
    stage_batches: int = 0  # micro-batches consumed in this epoch of the stage (data position)
    best_metric: float | None = None  # best validation accuracy in this stage
    best_step: int | None = None
    seconds: float = 0.0  # wall-clock time spent in train() so far, over all invocations
    tokens: int = 0  # input tokens trained on, all processes


# ----------------------------------------------------------------------------------- helpers
def as_config(cfg: DictConfig | dict) -> DictConfig:
    """Merge into the typed schema (so a hand-made dict gets the same checks as the CLI)."""
    return OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)


def lr_factor(step: int, *, stage_start: int, stage_steps: int, warmup: int, name: str,
              min_ratio: float) -> float:  # fmt: skip
    """Learning-rate multiplier for optimizer step ``step`` (0-based) of the current stage.

    Linear warmup, then cosine/linear decay to ``min_ratio`` or constant. Every curriculum
    stage restarts the schedule, as each stage is a fresh run from the previous best model.
    """
    t = step - stage_start
    if t < warmup:
        return (t + 1) / (warmup + 1)
    if name == "constant":
        return 1.0
    span = max(stage_steps - warmup, 1)
    progress = min((t - warmup) / span, 1.0)
    if name == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0 - (1 - min_ratio) * progress


def resolve_precision(mode: str) -> str:
    """``auto`` -> bf16 on GPUs that support it, else full precision (CPU autocast is slow)."""
    if mode != "auto":
        return mode
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def make_accelerator(cfg: DictConfig):
    from accelerate import Accelerator

    has_device = torch.cuda.is_available() or (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    )
    return Accelerator(
        cpu=not has_device,  # `accelerate launch --multi_gpu` on a CPU machine: gloo processes
        mixed_precision=resolve_precision(cfg.trainer.mixed_precision),
        gradient_accumulation_steps=cfg.trainer.grad_accum,
    )


def shared_run_dir(accelerator, cfg: DictConfig) -> Path:
    """The run folder chosen by rank 0 (each rank's Hydra may have picked its own timestamp)."""
    from accelerate.utils import broadcast_object_list

    chosen = [cfg.output_dir]
    if accelerator.num_processes > 1:
        broadcast_object_list(chosen, from_process=0)
        own = cfg.output_dir
        if not accelerator.is_main_process and own and own != chosen[0]:
            _remove_stray_hydra_dir(Path(own))
    if chosen[0] is None:
        raise ValueError(
            "cfg.output_dir is not set: run through `rmt-train` (Hydra picks the run folder) "
            "or set output_dir=<folder> when calling train(cfg) directly."
        )
    return Path(chosen[0])


def _only_main_writes_logs() -> None:
    """Other ranks drop Hydra's log file handler and keep only warnings on the console."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
    logging.getLogger("rmt").setLevel(logging.WARNING)


def _remove_stray_hydra_dir(path: Path) -> None:
    """A non-zero rank's own Hydra folder holds at most a log file; rank 0's folder is used."""
    try:
        for child in path.iterdir():
            if child.is_file() and child.suffix == ".log":
                child.unlink()
        path.rmdir()
    except OSError:
        pass  # not empty (someone else's files) or already gone: leave it


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only; biases and norm weights (1-D) are not decayed."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise ValueError(
            "the model has no trainable parameter: with memory.freeze_backbone=true give "
            "memory.num_tokens > 0 or enable memory.lora."
        )
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    from hydra.utils import instantiate

    opt = cfg.optim
    factory = instantiate(
        {"_target_": opt._target_, "lr": opt.lr, "betas": tuple(opt.betas), "eps": opt.eps},
        _partial_=True,
    )
    return factory(param_groups(model, opt.weight_decay))


def compute_loss(model, batch: dict, aux_weight: float) -> tuple[torch.Tensor, dict[str, Any]]:
    """Answer loss, plus ``aux_weight`` x next-token loss on the haystack text when > 0.

    The answer carries only a couple of labelled tokens per sample; the auxiliary LM loss
    gives the model a dense signal about the text it must remember.
    """
    if aux_weight == 0:
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )
        return out.loss, {"loss": out.loss.detach()}
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], return_logits=True
    )
    logits = out.logits[:, :-1].float()
    answer = batch["labels"][:, 1:]
    text = batch["input_ids"][:, 1:].masked_fill(
        (batch["attention_mask"][:, 1:] == 0) | (answer != -100), -100
    )
    flat = logits.reshape(-1, logits.shape[-1])
    answer_loss = F.cross_entropy(flat, answer.reshape(-1), ignore_index=-100)
    lm_loss = F.cross_entropy(flat, text.reshape(-1), ignore_index=-100)
    return answer_loss + aux_weight * lm_loss, {
        "loss": answer_loss.detach(),
        "lm_loss": lm_loss.detach(),
    }


@torch.no_grad()
def evaluate(accelerator, model, loader, tokenizer, cfg: DictConfig) -> dict[str, float]:
    """Validation: answer loss, and accuracy of answers generated through memory.

    The prompt (haystack + question + marker, left-padded) is read segment by segment into
    memory, then the model writes the answer; BABILong's scorer compares it with the target.
    """
    from rmt.data.scoring import compare_answers

    unwrapped = accelerator.unwrap_model(model)
    was_training = unwrapped.training
    unwrapped.eval()
    limit = cfg.trainer.eval_samples
    correct, losses, seen = [], [], 0
    for batch in loader:
        with accelerator.autocast():
            out = unwrapped(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                labels=batch["labels"],
            )
            new_tokens = unwrapped.generate(
                batch["prompt_input_ids"],
                attention_mask=batch["prompt_attention_mask"],
                max_new_tokens=cfg.trainer.max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        outputs = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        ok = [
            compare_answers(target, output, question, task)
            for target, output, question, task in zip(
                batch["target"], outputs, batch["question"], batch["task"], strict=True
            )
        ]
        ok = torch.tensor(ok, dtype=torch.float32, device=accelerator.device)
        ok, sample_loss = accelerator.gather_for_metrics((ok, out.sample_loss.float()))
        correct.append(ok.cpu())
        losses.append(sample_loss.cpu())
        seen += len(ok)
        if limit is not None and seen >= limit:
            break
    unwrapped.train(was_training)
    correct_t, loss_t = torch.cat(correct), torch.cat(losses)
    if limit is not None:
        correct_t, loss_t = correct_t[:limit], loss_t[:limit]
    return {"accuracy": correct_t.mean().item(), "loss": loss_t.nanmean().item(),
            "samples": len(correct_t)}  # fmt: skip


class MetricsLog:
    """metrics.jsonl + TensorBoard, written by the main process only."""

    def __init__(self, run_dir: Path, *, enabled: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.writer = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # events logged after the checkpoint we resume from are replayed: drop them
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter

        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge)

    def log(self, split: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        event = {"step": step, "split": split, **values}
        with self.path.open("a") as f:
            f.write(json.dumps(event) + "\n")
        for key, value in values.items():
            if isinstance(value, int | float) and key not in ("stage", "samples", "minutes"):
                self.writer.add_scalar(f"{split}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def summary_table(summary: dict[str, Any]) -> str:
    """The final console table."""
    rows = [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in summary.items()]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    body = "\n".join(f"{k.ljust(width)} | {v}" for k, v in rows)
    return f"{line}\n{body}\n{line}"


# ------------------------------------------------------------------------------------- train
def train(cfg: DictConfig | dict, *, stop_at_step: int | None = None) -> dict[str, Any]:
    """Train an RMT as configured; return the final metrics (best accuracy, steps, minutes...).

    ``cfg.output_dir`` is the run folder; ``cfg.resume`` (a run folder) continues that run
    from its last/ checkpoint. ``stop_at_step`` behaves as if the process received SIGTERM
    after that step (save last/ and return), which tests use to check resume equivalence.
    """
    # --------------------------------------------------------------------------- setup
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    started = time.perf_counter()
    cfg = as_config(cfg)
    if cfg.resume and not cfg.output_dir:
        cfg.output_dir = str(cfg.resume)
    validate(cfg)
    tr, task = cfg.trainer, cfg.task
    accelerator = make_accelerator(cfg)
    main = accelerator.is_main_process
    if not main:
        _only_main_writes_logs()
    run_dir = shared_run_dir(accelerator, cfg)
    resuming = bool(cfg.resume)
    if main:
        if resuming and Path(cfg.resume).resolve() != run_dir.resolve():
            raise ConfigError(
                f"resume={cfg.resume} but output_dir={run_dir}: a run resumes in its own "
                "folder; leave output_dir unset (rmt-train resume=<run dir> does)."
            )
        if not resuming:
            check_fresh_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    accelerator.wait_for_everyone()

    set_seed(tr.seed)
    tokenizer = build.build_tokenizer(cfg)
    model = build.build_model(cfg, tokenizer)
    optimizer = make_optimizer(cfg, model)
    model, optimizer = accelerator.prepare(model, optimizer)
    n_params = sum(p.numel() for p in accelerator.unwrap_model(model).parameters())
    trainable = sum(
        p.numel() for p in accelerator.unwrap_model(model).parameters() if p.requires_grad
    )
    data = build.TaskData(cfg, tokenizer)
    data.preflight()

    progress = Progress()
    if resuming:
        state = load_last(run_dir, accelerator=accelerator)
        progress = Progress(**state["progress"])
        log.info("resumed %s at step %d (stage %d)", run_dir, progress.step, progress.stage)
    seconds_before = progress.seconds
    metrics = MetricsLog(run_dir, enabled=main, resume_step=progress.step if resuming else None)
    stages = list(task.curriculum)
    valid_loaders: dict[int, Any] = {}

    def valid_loader(stage: int):
        if stage not in valid_loaders:
            valid_loaders[stage] = accelerator.prepare_data_loader(
                data.valid_loader(stage, batch_size=tr.eval_batch_size)
            )
        return valid_loaders[stage]

    def stage_budget(i: int) -> int:
        steps = stages[i].steps
        return steps if steps is not None else max(tr.max_steps - progress.stage_start, 1)

    def state_dict() -> dict[str, Any]:
        progress.seconds = elapsed()
        return new_state(
            step=progress.step,
            stage=progress.stage,
            best_metric=progress.best_metric,
            best_step=progress.best_step,
            metric_name=METRIC_NAME,
            progress=asdict(progress),
            num_processes=accelerator.num_processes,
        )

    def validate_and_save() -> dict[str, float]:
        nonlocal valid_step
        valid_step = progress.step
        n_seg = max(stages[progress.stage].segments)
        result = evaluate(accelerator, model, valid_loader(progress.stage), tokenizer, cfg)
        result.update(stage=progress.stage, segments=n_seg, minutes=elapsed() / 60)
        metrics.log("valid", progress.step, result)
        better = progress.best_metric is None or result["accuracy"] > progress.best_metric
        if better:
            progress.best_metric, progress.best_step = result["accuracy"], progress.step
            if main:
                save_best(
                    run_dir / "best",
                    model=accelerator.unwrap_model(model),
                    tokenizer=tokenizer,
                    cfg=cfg,
                    state=state_dict(),
                )
        accelerator.wait_for_everyone()
        save_last(run_dir / "last", accelerator=accelerator, state=state_dict())
        return result

    def stage_finished(stage) -> bool:
        """Step budget spent, or validation accuracy reached the stage's threshold."""
        if stage.steps is not None and progress.step - progress.stage_start >= stage.steps:
            return True
        return (
            stage.until_accuracy is not None
            and progress.best_metric is not None
            and progress.best_metric >= stage.until_accuracy
        )

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - started

    def set_lr() -> float:
        sched = cfg.optim.scheduler
        factor = lr_factor(
            progress.step,
            stage_start=progress.stage_start,
            stage_steps=stage_budget(progress.stage),
            warmup=sched.warmup_steps,
            name=sched.name,
            min_ratio=sched.min_lr_ratio,
        )
        lr = cfg.optim.lr * factor
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    # --------------------------------------------------------------------------- train
    log.info(
        "run folder %s | %s params (%s trainable) | %d process(es) on %s | precision %s",
        run_dir, f"{n_params:,}", f"{trainable:,}", accelerator.num_processes,
        accelerator.device, accelerator.mixed_precision,
    )  # fmt: skip
    bar = tqdm(
        total=tr.max_steps,
        initial=progress.step,
        disable=not (main and tr.progress_bar),
        desc="train",
        dynamic_ncols=True,
    )
    stopped = None
    window: dict[str, list[float]] = {}
    window_tokens, window_start = 0, time.perf_counter()
    last_valid: dict[str, float] = {}
    valid_step = -1
    model.train()
    with PreemptionGuard() as guard:
        while stopped is None:
            stage = stages[progress.stage]
            if stage_finished(stage):  # also right after resuming from a stage's last save
                if progress.stage + 1 >= len(stages):
                    stopped = "curriculum_done"
                    break
                _next_stage(accelerator, model, optimizer, run_dir, progress)
                log.info("curriculum stage %d starts from the best model of stage %d",
                         progress.stage, progress.stage - 1)  # fmt: skip
                save_last(run_dir / "last", accelerator=accelerator, state=state_dict())
                continue
            loader = accelerator.prepare_data_loader(
                data.train_loader(
                    progress.stage,
                    epoch=progress.epoch,
                    batch_size=tr.batch_size,
                )
            )
            loader = accelerator.skip_first_batches(loader, progress.stage_batches)
            for batch in loader:
                with accelerator.accumulate(model):
                    lr = set_lr()
                    loss, parts = compute_loss(model, batch, tr.aux_lm_loss)
                    accelerator.backward(loss)
                    grad_norm = None
                    if accelerator.sync_gradients:  # max_norm=inf: measure without clipping
                        grad_norm = accelerator.clip_grad_norm_(
                            model.parameters(), tr.max_grad_norm or math.inf
                        )
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                progress.stage_batches += 1
                n_tokens = int(batch["attention_mask"].sum())
                window_tokens += n_tokens
                for key, value in parts.items():
                    window.setdefault(key, []).append(value.item())
                if grad_norm is not None:
                    window.setdefault("grad_norm", []).append(float(grad_norm))
                if not accelerator.sync_gradients:
                    continue

                progress.step += 1
                bar.update(1)
                if progress.step % tr.log_every == 0:
                    tokens = accelerator.reduce(
                        torch.tensor(window_tokens, device=accelerator.device), "sum"
                    ).item()
                    progress.tokens += int(tokens)
                    values = {
                        key: accelerator.reduce(
                            torch.tensor(sum(v) / len(v), device=accelerator.device), "mean"
                        ).item()
                        for key, v in sorted(window.items())
                    }
                    values.update(
                        lr=lr,
                        tokens_per_s=tokens / max(time.perf_counter() - window_start, 1e-9),
                        stage=progress.stage,
                        segments=math.ceil(
                            int(batch["attention_mask"].sum(1).max()) / cfg.segment.size
                        ),
                        minutes=elapsed() / 60,
                    )
                    metrics.log("train", progress.step, values)
                    postfix = {"loss": f"{values['loss']:.3f}", "acc": last_valid.get("accuracy")}
                    if tr.max_minutes is not None:  # the step ETA means little under a budget
                        postfix["budget_left"] = f"{tr.max_minutes - elapsed() / 60:.1f}min"
                    bar.set_postfix(postfix)
                    window, window_tokens, window_start = {}, 0, time.perf_counter()

                budget_spent = (
                    stage.steps is not None and progress.step - progress.stage_start >= stage.steps
                )
                if progress.step % tr.eval_every == 0 or budget_spent:
                    last_valid = validate_and_save()
                    bar.set_postfix(acc=f"{last_valid['accuracy']:.3f}")

                if guard.triggered or (stop_at_step is not None and progress.step >= stop_at_step):
                    accelerator.set_trigger()
                if tr.max_minutes is not None and elapsed() >= tr.max_minutes * 60:
                    accelerator.set_trigger()
                if accelerator.check_trigger():  # any process asked to stop: all stop together
                    over_time = tr.max_minutes is not None and elapsed() >= tr.max_minutes * 60
                    stopped = "max_minutes" if over_time else "preempted"
                    break
                if progress.step >= tr.max_steps:
                    stopped = "max_steps"
                    break
                if stage_finished(stage):
                    break
            else:  # a finite training set ran out: next epoch, same stage
                progress.epoch += 1
                progress.stage_batches = 0
    bar.close()

    # --------------------------------------------------------------------------- save
    if stopped == "preempted":
        save_last(run_dir / "last", accelerator=accelerator, state=state_dict())
        log.warning("stopped at step %d; resume with: rmt-train resume=%s", progress.step, run_dir)
        metrics.close()
        return {
            "stopped": stopped,
            "step": progress.step,
            "signal": guard.received,
            "output_dir": str(run_dir),
        }
    if valid_step != progress.step:
        last_valid = validate_and_save()  # also saves last/ at this step

    # --------------------------------------------------------------------------- cleanup
    summary = {
        "best_metric": progress.best_metric,
        "metric_name": METRIC_NAME,
        "best_step": progress.best_step,
        "final_accuracy": last_valid["accuracy"],
        "final_loss": last_valid["loss"],
        "stage": progress.stage,
        "stages": len(stages),
        "steps": progress.step,
        "minutes": elapsed() / 60,
        "tokens": progress.tokens,
        "params": n_params,
        "trainable_params": trainable,
        "stopped": stopped,
        "output_dir": str(run_dir),
    }
    if main:
        write_json(run_dir / "summary.json", summary)
        log.info("summary\n%s", summary_table(summary))
    metrics.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _next_stage(accelerator, model, optimizer, run_dir: Path, progress: Progress) -> None:
    """Start the next curriculum stage from the best weights of this one, fresh optimizer."""
    from rmt.modeling.factory import load_model

    accelerator.wait_for_everyone()
    best = resolve_checkpoint(run_dir / "best")
    if best is not None:
        weights = load_model(best).state_dict()
        accelerator.unwrap_model(model).load_state_dict(weights)
    inner = getattr(optimizer, "optimizer", optimizer)
    inner.state.clear()  # moments of the previous stage do not describe the new data
    progress.stage += 1
    progress.stage_start = progress.step
    progress.epoch = progress.stage_batches = 0
    progress.best_metric = progress.best_step = None  # best of the new stage
