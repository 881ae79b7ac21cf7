"""``rmt-train``: the Hydra entrypoint of the training loop (see ``rmt/conf/train.yaml``).

Thin on purpose: it turns Hydra's composed config into the run's config (the run folder Hydra
chose, or the saved config of a run to resume) and hands it to :func:`rmt.train.trainer.train`.
Also runnable as ``python -m rmt.cli.train`` and under ``accelerate launch -m rmt.cli.train``.
Bad input (an impossible config, a run folder that is taken) ends with a one-paragraph message
and exit status 2, and what Hydra had written for the refused command is removed (a new run's
folder, a resume's ``.hydra/resume-<time>``); a run stopped by SIGTERM/SIGINT saves last/ and
exits with 128 + signal. Resuming a finished run says so, changes nothing and exits 0.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from rmt.cli import quiet_library_bars
from rmt.config.schema import ConfigError  # importing the schema registers it and its resolvers
from rmt.run import CheckpointError, discard_refused
from rmt.sweep.jobs import record_failure
from rmt.sweep.resume import is_sweep_dir, resume_sweep
from rmt.train import trainer
from rmt.train.resume import resume_config

log = logging.getLogger(__name__)


def run_config(cfg: DictConfig) -> DictConfig:
    """The config a job trains with: Hydra's run folder, or the saved config when resuming."""
    hydra_cfg = HydraConfig.get()
    if cfg.resume:
        return resume_config(cfg.resume, list(hydra_cfg.overrides.task))
    cfg.output_dir = hydra_cfg.runtime.output_dir
    return cfg


def _given_fail_fast() -> bool | None:
    """``sweep.fail_fast`` if the command line sets it (a resumed sweep keeps its own)."""
    for item in HydraConfig.get().overrides.task:
        if item.lstrip("+").startswith("sweep.fail_fast="):
            return item.partition("=")[2].lower() == "true"
    return None


def discard_own_files(cfg: DictConfig) -> None:
    """What this command's Hydra wrote, for a command that ends without training.

    A new run's folder (this process claimed it, see ``rmt_hydra_subdir``) goes entirely unless
    it holds run data; a resume loses only its ``.hydra/resume-<time>``. Rank 0 only.
    """
    hydra_cfg = HydraConfig.get()
    subdir = hydra_cfg.output_subdir
    if subdir is None:  # non-zero ranks write nothing of their own
        return
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if cfg.resume:
        shutil.rmtree(run_dir / subdir, ignore_errors=True)
        with contextlib.suppress(OSError):  # .hydra/ itself, if this command created it
            (run_dir / subdir).parent.rmdir()
    else:
        discard_refused(run_dir)


def refuse(message: str) -> NoReturn:
    print(f"rmt-train: error: {message}", file=sys.stderr)
    raise SystemExit(2) from None


def train_sweep_job(cfg: DictConfig) -> dict:
    """One job of ``rmt-train -m``: a failure is recorded in the job folder (``failed.json``,
    shown by rmt-report) and the sweep goes on, unless ``sweep.fail_fast=true``."""
    try:
        return trainer.train(run_config(cfg))
    except Exception as err:
        reason = record_failure(HydraConfig.get().runtime.output_dir, err)
        if cfg.sweep.fail_fast:
            refuse(f"sweep job {HydraConfig.get().job.num} failed: {reason} (sweep.fail_fast=true)")
        log.error("rmt-train: sweep job %s failed: %s; the sweep goes on (sweep.fail_fast=true "
                  "stops it instead)", HydraConfig.get().job.num, reason)  # fmt: skip
        return {"failed": reason}


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Train; return the best validation metric (what Hydra sweepers optimise)."""
    quiet_library_bars()
    try:
        if cfg.get("resume") and is_sweep_dir(cfg.resume):  # continue a whole sweep
            metrics = resume_sweep(cfg.resume, fail_fast=_given_fail_fast())
        elif HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            metrics = train_sweep_job(cfg)
        else:
            metrics = trainer.train(run_config(cfg))
    except (ConfigError, CheckpointError) as err:
        discard_own_files(cfg)
        refuse(str(err))
    except OSError as err:  # a full disk outside a checkpoint write (logs, metrics)
        if err.errno != errno.ENOSPC:
            raise
        run = cfg.resume or HydraConfig.get().runtime.output_dir
        print(f"rmt-train: error: disk full: writing {err.filename or run} failed. Free some "
              f"space, then continue with rmt-train resume={run}.", file=sys.stderr)  # fmt: skip
        raise SystemExit(2) from None
    if metrics.get("finished"):  # a resumed run that had nothing left to do (trainer logs it)
        discard_own_files(cfg)
        return metrics.get("best_metric")
    if metrics.get("signal"):
        raise SystemExit(128 + int(metrics["signal"]))
    return metrics.get("best_metric")


if __name__ == "__main__":
    main()
