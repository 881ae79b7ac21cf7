"""The jobs of a sweep (``rmt-train -m``): the list Hydra's basic sweeper will run, checked all
together before the first job trains, and what a failed job leaves behind.

Why up front: Hydra composes each job only when its turn comes, so a config error in job k used
to show after jobs 0..k-1 had trained, and then cancelled the rest. :class:`SweepCallback`
(``rmt/conf/hydra/default.yaml``) expands the sweep's overrides the way the basic sweeper does,
composes and validates every job, and refuses the whole sweep with one line naming the job. A
job that fails later (a crash mid-training) is recorded in its folder (``failed.json``) and the
sweep goes on, unless ``sweep.fail_fast=true``; ``rmt-report`` lists it with its reason.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rmt.config.schema import typed, validate
from rmt.errors import ConfigError
from rmt.run import FAILED_FILE, MULTIRUN_FILE, CheckpointError, write_json

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def sweep_jobs(sweep_cfg: DictConfig) -> list[list[str]] | None:
    """The override list of every job, in Hydra's job order; None for another sweeper (an
    optimising sweeper picks its jobs as it goes, so they cannot be known in advance)."""
    if OmegaConf.select(sweep_cfg, "hydra.sweeper._target_") != BASIC_SWEEPER:
        return None
    params = OmegaConf.select(sweep_cfg, "hydra.sweeper.params") or {}
    task = OmegaConf.select(sweep_cfg, "hydra.overrides.task") or []
    params = [f"{k}={v}" for k, v in params.items()]
    task = list(OmegaConf.to_container(task, resolve=False)) if task else []
    overrides = OverridesParser.create().parse_overrides([*params, *task])
    return BasicSweeper.split_arguments(overrides, None)[0]


def read_sweep_jobs(sweep_dir: str | Path) -> list[list[str]] | None:
    """The jobs of the sweep saved in ``<sweep_dir>/multirun.yaml`` (None if absent)."""
    file = Path(sweep_dir) / MULTIRUN_FILE
    if not file.is_file():
        return None
    return sweep_jobs(OmegaConf.load(file))


def job_config(overrides: list[str], config_name: str = "train") -> DictConfig:
    """One job's composed config (Hydra is initialized: inside ``rmt-train``'s main)."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    return compose(config_name=config_name, overrides=kept)


def check_jobs(jobs: list[list[str]], config_name: str = "train") -> None:
    """Compose and validate every job; a ConfigError names the first bad job and its overrides."""
    for num, overrides in enumerate(jobs):
        try:
            validate(typed(job_config(overrides, config_name)))
        except (ConfigError, CheckpointError) as err:
            raise ConfigError(
                f"sweep job {num} ({' '.join(overrides)}): {err} No job was started."
            ) from None


def record_failure(job_dir: str | Path, err: BaseException) -> str:
    """Write ``failed.json`` (the reason, one line) into a failed job's folder; return the reason."""
    text = str(err).strip().splitlines()
    reason = f"{type(err).__name__}: {text[0] if text else ''}".strip()
    if isinstance(err, ConfigError | CheckpointError):
        reason = text[0] if text else type(err).__name__
    Path(job_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(job_dir) / FAILED_FILE, {"reason": reason, "type": type(err).__name__})
    return reason


class SweepCallback(Callback):
    """Validate every job of a basic sweep before the first one starts (see the module doc)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = sweep_jobs(config)
        if not jobs:
            return
        try:
            check_jobs(jobs, config_name=kwargs.get("config_name") or "train")
        except ConfigError as err:
            print(f"rmt-train: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
