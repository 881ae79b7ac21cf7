"""``rmt-train resume=<multirun folder>``: continue an interrupted sweep as a whole.

The jobs are those of the sweep's ``multirun.yaml`` (:func:`rmt.sweep.jobs.read_sweep_jobs`),
all validated first. Each job's folder ``<sweep>/<num>`` decides what happens to it:

* finished (``summary.json`` that resuming would not change): skipped;
* a ``last/`` checkpoint: resumed from it, exactly as ``resume=<job folder>`` would;
* anything else (never started, failed, or stopped before its first checkpoint): started from
  step 0 in that folder, after the files of the attempt that left no checkpoint are removed.

Jobs run one after another in this process; a failed job is recorded and the next one starts,
unless ``sweep.fail_fast=true``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rmt.config.schema import typed
from rmt.errors import ConfigError
from rmt.run import (
    CONFIG_FILE,
    FAILED_FILE,
    LAST,
    METRICS_FILE,
    OVERRIDES_FILE,
    PREDICTIONS_DIR,
    SUMMARY_FILE,
    TB_DIR,
    resolve_checkpoint,
)
from rmt.sweep.jobs import check_jobs, job_config, read_sweep_jobs, record_failure
from rmt.train import trainer
from rmt.train.resume import finished_summary, resume_config

log = logging.getLogger(__name__)
_ATTEMPT_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, FAILED_FILE, TB_DIR, PREDICTIONS_DIR,
                  "best", ".best.tmp", ".last.tmp")  # fmt: skip


def is_sweep_dir(path: str | Path) -> bool:
    return read_sweep_jobs(path) is not None


def job_plan(job_dir: Path, overrides: list[str]) -> tuple[str, DictConfig | None]:
    """``("done", None)``, ``("resume", cfg)`` or ``("start", cfg)`` for one job folder."""
    if resolve_checkpoint(job_dir / LAST) is not None:
        cfg = typed(resume_config(job_dir, []))
        if (job_dir / FAILED_FILE).is_file() or finished_summary(cfg) is None:
            return "resume", cfg
        return "done", None
    cfg = job_config(overrides)
    cfg.output_dir = str(job_dir)
    return "start", cfg


def _clear_attempt(job_dir: Path, overrides: list[str]) -> None:
    """Remove what an attempt without a checkpoint wrote; keep (or write) the job's overrides."""
    for name in _ATTEMPT_FILES:
        path = job_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (job_dir / OVERRIDES_FILE).parent.mkdir(parents=True, exist_ok=True)
    (job_dir / OVERRIDES_FILE).write_text("".join(f"- {o}\n" for o in overrides))


def resume_sweep(sweep_dir: str | Path, *, fail_fast: bool | None = None) -> dict[str, Any]:
    """Finish every job of the sweep in ``sweep_dir``; returns the count of each outcome."""
    sweep_dir = Path(sweep_dir)
    jobs = read_sweep_jobs(sweep_dir) or []
    check_jobs(jobs)
    counts = {"skipped": 0, "resumed": 0, "started": 0, "failed": 0}
    for num, overrides in enumerate(jobs):
        job_dir = sweep_dir / str(num)
        action, cfg = job_plan(job_dir, overrides)
        if action == "done":
            log.info("sweep job %d is finished: skipped", num)
            counts["skipped"] += 1
            continue
        if action == "start":
            _clear_attempt(job_dir, overrides)
        log.info("sweep job %d (%s): %s", num, " ".join(overrides), action)
        try:
            (job_dir / FAILED_FILE).unlink(missing_ok=True)
            result = trainer.train(cfg)
        except Exception as err:
            reason = record_failure(job_dir, err)
            counts["failed"] += 1
            stop = cfg.sweep.fail_fast if fail_fast is None else fail_fast
            if stop:
                raise ConfigError(f"sweep job {num} failed: {reason}") from None
            log.error("sweep job %d failed: %s; the sweep goes on", num, reason)
            continue
        counts["resumed" if action == "resume" else "started"] += 1
        if result.get("signal"):
            return {**counts, "signal": result["signal"]}
    return counts
