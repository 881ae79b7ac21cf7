"""The training recipe of ``rmt-train``: a :class:`Trainer` with explicit state, and ``train(cfg)``.

Read top to bottom, as torchtune's recipes: ``setup`` (validate, seed, build, prepare once,
resume), ``fit`` (accumulate, clip, schedule, log, validate every N steps, curriculum stages),
``cleanup`` (summary, close writers). ``validate`` scores answers with the same
generate-and-judge code as ``rmt-eval`` (:mod:`rmt.tasks.generative`); ``save_best`` and
``save_last`` write the run folder of :mod:`rmt.run`. What a sharded engine (FSDP2, DeepSpeed)
needs differently is in :mod:`rmt.train.distributed`, called at those few places.

Everything that makes a resumed run continue exactly where it stopped lives in
``trainer_state.json`` (:class:`Progress`) and in ``accelerator.save_state`` (weights,
optimizer, RNG states): data order is a pure function of (seed, stage, batch index), the
learning rate a pure function of the step, and data loaders carry their own generators, so
nothing else draws from the global RNG streams.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list, set_seed
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from rmt.config.schema import typed, validate
from rmt.errors import ConfigError
from rmt.modeling.factory import load_model
from rmt.run import (
    BEST,
    CONFIG_FILE,
    LAST,
    SUMMARY_FILE,
    CheckpointError,
    check_fresh_run_dir,
    load_last,
    new_state,
    predictions_file,
    resolve_checkpoint,
    save_best,
    save_last,
    write_json,
    write_jsonl,
)
from rmt.train import build, curriculum, distributed, trackers
from rmt.train.metrics import MetricsLog, Window, peak_memory_mb, summary_table
from rmt.train.resume import PreemptionGuard, finished_summary

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where the run stands; saved in trainer_state.json with every checkpoint."""

    step: int = 0  # optimizer steps done
    stage: int = 0  # curriculum stage index
    stage_start: int = 0  # step at which this stage began
    epoch: int = 0  # passes over a finite training set in this stage
    stage_batches: int = 0  # micro-batches consumed in this epoch of the stage (data position)
    best_metric: float | None = None  # best validation metric (the task's) in this stage
    best_step: int | None = None
    seconds: float = 0.0  # wall-clock time spent in train() so far, over all invocations
    tokens: int = 0  # input tokens trained on, all processes


def train(cfg: DictConfig | dict, *, stop_at_step: int | None = None) -> dict[str, Any]:
    """Train an RMT as configured; return the final metrics (best accuracy, steps, minutes...).

    ``cfg.output_dir`` is the run folder; ``cfg.resume`` (a run folder) continues that run
    from its last/ checkpoint. ``stop_at_step`` behaves as if the process received SIGTERM
    after that step (save last/ and return), which tests use to check resume equivalence.
    """
    trainer = Trainer(cfg, stop_at_step=stop_at_step)
    if trainer.finished is not None:  # resume of a finished run: its summary, nothing written
        log.warning("%s", trainer.finished["finished"])
        return trainer.finished
    trainer.setup()
    stopped = trainer.fit()
    return trainer.cleanup(stopped)


class Trainer:
    """One training run: its config, objects and :class:`Progress`, as attributes."""

    def __init__(self, cfg: DictConfig | dict, *, stop_at_step: int | None = None) -> None:
        self.started = time.perf_counter()
        cfg = typed(cfg)
        if cfg.resume and not cfg.output_dir:
            cfg.output_dir = str(cfg.resume)
        validate(cfg)
        self.finished = finished_summary(cfg) if cfg.resume else None
        self.cfg, self.stop_at_step = cfg, stop_at_step
        self.stages = list(cfg.task.curriculum)
        self.progress = Progress()
        self.last_valid: dict[str, float] = {}
        self.valid_step = -1  # step of the last validation
        self._valid_loaders: dict[int, Any] = {}

    # ------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        """Run folder, model, optimizer, task and (when resuming) the saved state."""
        cfg = self.cfg
        self.accelerator = build.make_accelerator(cfg)
        distributed.check_engine(self.accelerator, cfg.trainer.batch_size)
        self.main = self.accelerator.is_main_process
        if not self.main:
            _only_main_writes_logs()
        self.run_dir = _shared_run_dir(self.accelerator, cfg)
        if self.main:
            self._claim_run_dir()
        self.accelerator.wait_for_everyone()
        trackers.start(self.accelerator, cfg, self.run_dir)

        set_seed(cfg.trainer.seed)
        self.tokenizer = build.build_tokenizer(cfg)
        model = build.build_model(cfg, self.tokenizer)
        if cfg.trainer.compile:
            model.compile_segments()
        model = distributed.shard(self.accelerator, model)
        optimizer = build.make_optimizer(cfg, model)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.task = build.task_for(cfg, self.tokenizer)
        self.task.preflight()
        curriculum.check_train_sizes(self.task, cfg, batch_size=cfg.trainer.batch_size)
        if cfg.resume:
            self.resume()
        self.seconds_before = self.progress.seconds
        self.metrics = MetricsLog(
            self.run_dir, enabled=self.main, resume_step=self.progress.step if cfg.resume else None,
            accelerator=self.accelerator if cfg.trainer.log_with else None,
        )  # fmt: skip

    def _claim_run_dir(self) -> None:
        cfg, run_dir = self.cfg, self.run_dir
        if cfg.resume and Path(cfg.resume).resolve() != run_dir.resolve():
            raise ConfigError(
                f"resume={cfg.resume} but output_dir={run_dir}: a run resumes in its own "
                "folder; leave output_dir unset (rmt-train resume=<run dir> does)."
            )
        if cfg.resume:  # config.yaml is rewritten only once the resume has succeeded
            return
        check_fresh_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        try:  # exclusive create: of two runs given the same folder, exactly one gets it
            with (run_dir / CONFIG_FILE).open("x") as file:
                file.write(OmegaConf.to_yaml(cfg, resolve=True))
        except FileExistsError:
            raise CheckpointError(
                f"run folder {run_dir} already holds a run ({CONFIG_FILE}); it is never "
                "overwritten. Choose another output_dir."
            ) from None

    def resume(self) -> None:
        """Weights, optimizer, RNG states and progress from ``last/``; then config.yaml."""
        state = load_last(self.run_dir, accelerator=self.accelerator)
        self.progress = Progress(**state["progress"])
        if self.main:
            (self.run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        log.info("resumed %s at step %d (stage %d)", self.run_dir, self.progress.step,
                 self.progress.stage)  # fmt: skip

    # ------------------------------------------------------------------------------- train
    def fit(self) -> str:
        """Train until a stop condition; returns why it stopped (summary's ``stopped``)."""
        self._log_start()
        self.bar = self._progress_bar()
        self.window = Window()
        self.model.train()
        stopped = None
        with PreemptionGuard() as self.guard:
            while stopped is None:
                if self._stage_done():  # also right after resuming from a stage's last save
                    if self.progress.stage + 1 >= len(self.stages):
                        stopped = "curriculum_done"
                        break
                    self.next_stage()
                    continue
                stopped = self._train_epoch()
        self.bar.close()
        return stopped

    def _progress_bar(self) -> tqdm:
        """Steps out of ``max_steps``; under a time budget, seconds out of the budget, so the
        ETA is the budget's (``max_steps`` is then only a cap, often far away)."""
        tr, show = self.cfg.trainer, self.main and self.cfg.trainer.progress_bar
        if tr.max_minutes is None:
            return tqdm(total=tr.max_steps, initial=self.progress.step, desc="train",
                        disable=not show, dynamic_ncols=True)  # fmt: skip
        budget = round(tr.max_minutes * 60)
        return tqdm(total=budget, initial=min(int(self.elapsed()), budget), unit="s",
                    desc=f"train step {self.progress.step}", disable=not show, dynamic_ncols=True,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f}s of the "
                    "time budget [{elapsed}<{remaining}{postfix}]")  # fmt: skip

    def _advance_bar(self) -> None:
        if self.cfg.trainer.max_minutes is None:
            self.bar.update(1)
            return
        self.bar.set_description_str(f"train step {self.progress.step}", refresh=False)
        self.bar.update(max(min(int(self.elapsed()), self.bar.total) - self.bar.n, 0))

    def _train_epoch(self) -> str | None:
        """Batches of the current stage from the saved data position, until the stage ends,
        the run stops (returned) or a finite training set runs out (next epoch)."""
        p, acc = self.progress, self.accelerator
        loader = acc.prepare_data_loader(
            curriculum.train_loader(self.task, self.cfg, p.stage, epoch=p.epoch,
                                    batch_size=self.cfg.trainer.batch_size)
        )  # fmt: skip
        batches = iter(acc.skip_first_batches(loader, p.stage_batches))
        while True:
            waited = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            self.window.data_wait += time.perf_counter() - waited
            self.train_step(batch)
            if not acc.sync_gradients:
                continue
            p.step += 1
            self._advance_bar()
            self._after_step(batch)
            stopped = self._should_stop()
            if stopped is not None:
                return stopped
            if self._stage_done():
                return None
        p.epoch += 1
        p.stage_batches = 0
        return None

    def train_step(self, batch: dict) -> None:
        """One micro-batch: forward, backward, and (at a sync) clip + optimizer step."""
        acc = self.accelerator
        with acc.accumulate(self.model):
            self.lr = self._set_lr()
            loss, parts = self.task.loss(self.model, batch, aux_weight=self.cfg.trainer.aux_lm_loss)
            acc.backward(loss)
            grad_norm = None
            if acc.sync_gradients:  # max_norm=inf: measure without clipping
                grad_norm = acc.clip_grad_norm_(
                    self.model.parameters(), self.cfg.trainer.max_grad_norm or math.inf
                )
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.progress.stage_batches += 1
        self.window.add(parts, grad_norm, batch["attention_mask"].sum())

    def _after_step(self, batch: dict) -> None:
        """Log every ``log_every`` steps; validate every ``eval_every`` and at a stage's end."""
        p, tr = self.progress, self.cfg.trainer
        if p.step % tr.log_every == 0:
            self._log_train(batch)
        stage = self.stages[p.stage]
        if p.step % tr.eval_every == 0 or curriculum.steps_spent(
            stage, step=p.step, stage_start=p.stage_start
        ):
            self.last_valid = self.validate()
            self.bar.set_postfix({self.task.metric: f"{self.last_valid[self.task.metric]:.3f}"})

    def _log_train(self, batch: dict) -> None:
        means, tokens, tokens_per_s = self.window.reduce(self.accelerator)
        self.progress.tokens += tokens
        longest = int(batch["attention_mask"].sum(1).max())
        values = {
            **means,
            "lr": self.lr,
            "tokens_per_s": tokens_per_s,
            "stage": self.progress.stage,
            "segments": math.ceil(longest / self.cfg.segment.size),
            "minutes": self.elapsed() / 60,
        }
        self.metrics.log("train", self.progress.step, values)
        postfix = {
            "loss": f"{values['loss']:.3f}",
            self.task.metric: self.last_valid.get(self.task.metric),
        }
        self.bar.set_postfix(postfix)
        self.window = Window()

    def _should_stop(self) -> str | None:
        """A signal, ``stop_at_step``, the time budget (on any process: all stop together) or
        ``max_steps``."""
        acc, p, tr = self.accelerator, self.progress, self.cfg.trainer
        over_time = tr.max_minutes is not None and self.elapsed() >= tr.max_minutes * 60
        stop = self.guard.triggered or (
            self.stop_at_step is not None and p.step >= self.stop_at_step
        )
        triggered = stop or over_time  # one process needs no device round trip per step
        if acc.num_processes > 1:  # several agree through a collective: all stop together
            if triggered:
                acc.set_trigger()
            triggered = acc.check_trigger()
        if triggered:
            over_time = tr.max_minutes is not None and self.elapsed() >= tr.max_minutes * 60
            return "max_minutes" if over_time else "preempted"
        if p.step >= tr.max_steps:
            return "max_steps"
        return None

    def _stage_done(self) -> bool:
        p = self.progress
        return curriculum.stage_done(self.stages[p.stage], step=p.step, stage_start=p.stage_start,
                                     best_metric=p.best_metric)  # fmt: skip

    def _set_lr(self) -> float:
        p, sched = self.progress, self.cfg.optim.scheduler
        steps = self.stages[p.stage].steps
        factor = curriculum.lr_factor(
            p.step,
            stage_start=p.stage_start,
            stage_steps=steps
            if steps is not None
            else max(self.cfg.trainer.max_steps - p.stage_start, 1),
            warmup=sched.warmup_steps,
            name=sched.name,
            min_ratio=sched.min_lr_ratio,
        )
        peak = self.stages[p.stage].lr
        lr = (self.cfg.optim.lr if peak is None else peak) * factor
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def next_stage(self) -> None:
        """Start the next curriculum stage from the best weights of this one, fresh optimizer."""
        acc, p = self.accelerator, self.progress
        acc.wait_for_everyone()
        best = resolve_checkpoint(self.run_dir / BEST)
        if best is not None:
            distributed.load_weights(acc, self.model, load_model(best).state_dict())
        distributed.reset_optimizer(self.optimizer)  # moments of the previous stage do not fit
        p.stage += 1
        p.stage_start = p.step
        p.epoch = p.stage_batches = 0
        p.best_metric = p.best_step = None  # best of the new stage
        log.info("curriculum stage %d starts from the best model of stage %d", p.stage, p.stage - 1)
        self.save_last()

    # ---------------------------------------------------------------------------- validate
    def validate(self) -> dict[str, float]:
        """Score the current stage's validation set, log it, save best/ (if better) and last/."""
        p = self.progress
        self.valid_step = p.step
        with distributed.full_weights(self.accelerator, self.model):  # FSDP: whole weights
            result, records = self.evaluate()  # (generation runs outside the root forward)
        result.update(stage=p.stage, segments=max(self.stages[p.stage].segments),
                      minutes=self.elapsed() / 60)  # fmt: skip
        self.metrics.log("valid", p.step, result)
        log.info(
            "valid step %d | %s",
            p.step,
            " | ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
            ),
        )  # fmt: skip  (train.log keeps the validations, not only metrics.jsonl)
        if self.main and records:  # what rmt-eval reproduces: each sample's prompt and answer
            write_jsonl(predictions_file(self.run_dir, p.step), records)
        if self._improves(result[self.task.metric]):
            p.best_metric, p.best_step = result[self.task.metric], p.step
            weights = distributed.consolidated_state_dict(self.accelerator, self.model)  # all ranks
            if self.main:
                save_best(self.run_dir / BEST, model=self.accelerator.unwrap_model(self.model),
                          state_dict=weights, tokenizer=self.tokenizer, cfg=self.cfg,
                          state=self.state())  # fmt: skip
        self.accelerator.wait_for_everyone()
        self.save_last()
        return result

    def _improves(self, value: float) -> bool:
        best = self.progress.best_metric
        if best is None:
            return True
        return value > best if self.task.higher_is_better else value < best

    @property
    def metric_name(self) -> str:
        return f"valid/{self.task.metric}"

    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """The task's validation metrics (BABILong: answer loss + accuracy of answers generated
        through memory, rmt-eval's generate-and-judge path; LM: perplexity by segment index) over
        ``trainer.eval_samples`` samples, gathered from every process; and the per-sample
        ``records`` a task's rows may carry (answer tasks: prompt digest, answer, verdict),
        numbered by their place in the validation set."""
        acc, tr = self.accelerator, self.cfg.trainer
        model = acc.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        parts: dict[str, list[torch.Tensor]] = {}
        records: list[dict[str, Any]] = []
        seen = 0
        for batch in self._valid_loader():
            with acc.autocast():
                rows = self.task.validation_rows(model, batch, max_new_tokens=tr.max_new_tokens)
            records += acc.gather_for_metrics(rows.pop("records", []), use_gather_object=True)
            rows = acc.gather_for_metrics(rows)
            for key, value in rows.items():
                parts.setdefault(key, []).append(value.cpu())
            seen += len(next(iter(rows.values())))
            if tr.eval_samples is not None and seen >= tr.eval_samples:
                break
        model.train(was_training)
        rows = {key: torch.cat(values)[: tr.eval_samples] for key, values in parts.items()}
        samples = len(next(iter(rows.values())))
        records = [{"index": i, **r} for i, r in enumerate(records[: tr.eval_samples])]
        return {**self.task.validation_metrics(rows), "samples": samples}, records

    def _valid_loader(self):
        stage = self.progress.stage
        if stage not in self._valid_loaders:
            self._valid_loaders[stage] = self.accelerator.prepare_data_loader(
                curriculum.valid_loader(self.task, self.cfg, stage,
                                        batch_size=self.cfg.trainer.eval_batch_size)
            )  # fmt: skip
        return self._valid_loaders[stage]

    # ------------------------------------------------------------------------ save, cleanup
    def state(self) -> dict[str, Any]:
        """trainer_state.json: the progress, stamped with the version."""
        p = self.progress
        p.seconds = self.elapsed()
        return new_state(
            step=p.step, stage=p.stage, best_metric=p.best_metric, best_step=p.best_step,
            metric_name=self.metric_name, progress=asdict(p),
            num_processes=self.accelerator.num_processes,
        )  # fmt: skip

    def save_last(self) -> None:
        save_last(self.run_dir / LAST, accelerator=self.accelerator, state=self.state())

    def elapsed(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def cleanup(self, stopped: str) -> dict[str, Any]:
        """Save last/ (pre-empted) or validate the final step; write summary.json; close."""
        p = self.progress
        if stopped == "preempted":
            self.save_last()
            log.warning(
                "stopped at step %d; resume with: rmt-train resume=%s", p.step, self.run_dir
            )
            self.metrics.close()
            self.accelerator.end_training()  # closes the trackers
            return {"stopped": stopped, "step": p.step, "signal": self.guard.received,
                    "output_dir": str(self.run_dir)}  # fmt: skip
        if self.valid_step != p.step:
            self.last_valid = self.validate()  # also saves last/ at this step
        summary = self._summary(stopped)
        if self.main:
            write_json(self.run_dir / SUMMARY_FILE, summary)
            log.info("summary\n%s", summary_table(summary))
        self.metrics.close()
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        return summary

    def _summary(self, stopped: str) -> dict[str, Any]:
        p, model = self.progress, self.accelerator.unwrap_model(self.model)
        return {
            "best_metric": p.best_metric,
            "metric_name": self.metric_name,
            "scoring": self.task.scoring,
            "best_step": p.best_step,
            f"final_{self.task.metric}": self.last_valid[self.task.metric],
            "final_loss": self.last_valid["loss"],
            "stage": p.stage,
            "stages": len(self.stages),
            "steps": p.step,
            "minutes": self.elapsed() / 60,
            "steps_per_second": p.step / max(self.elapsed(), 1e-9),  # validation time included
            "peak_memory_mb": round(peak_memory_mb(self.accelerator.device), 1),
            "tokens": p.tokens,
            "params": sum(q.numel() for q in model.parameters()),
            "trainable_params": sum(q.numel() for q in model.parameters() if q.requires_grad),
            "stopped": stopped,
            "output_dir": str(self.run_dir),
        }

    def _log_start(self) -> None:
        acc, model = self.accelerator, self.accelerator.unwrap_model(self.model)
        n_params = sum(q.numel() for q in model.parameters())
        trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
        log.info(
            "run folder %s | %s params (%s trainable) | %d process(es) on %s | precision %s",
            self.run_dir, f"{n_params:,}", f"{trainable:,}", acc.num_processes, acc.device,
            acc.mixed_precision,
        )  # fmt: skip


def _shared_run_dir(accelerator, cfg: DictConfig) -> Path:
    """The run folder chosen by rank 0 (each rank's Hydra may have picked its own timestamp)."""
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
    """A non-zero rank's own Hydra folder holds at most a log file; rank 0's folder is used.

    A folder with anything else in it belongs to another run (started in the same second):
    it is left alone, its log included.
    """
    try:
        children = list(path.iterdir())
        if not all(child.is_file() and child.suffix == ".log" for child in children):
            return
        for child in children:
            child.unlink()
        path.rmdir()
    except OSError:
        pass  # not empty (someone else's files) or already gone: leave it
