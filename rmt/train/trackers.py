"""Experiment trackers (Weights & Biases, MLflow) through Accelerate's ``log_with``; off by default.

``metrics.jsonl`` and TensorBoard stay the run's own record; a tracker receives the same events
(``<split>/<key>`` at the same step), so dashboards and the run folder never disagree. Both
trackers keep their files inside the run folder unless the environment points elsewhere:
W&B writes ``<run>/wandb/`` (``WANDB_MODE=offline`` for no network; ``wandb sync`` uploads
later), MLflow writes a file store at ``<run>/mlruns`` unless ``MLFLOW_TRACKING_URI`` is set
(a server, or ``sqlite:///...`` with the full ``mlflow`` package).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rmt.errors import ConfigError


def accelerator_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """``log_with`` for the Accelerator (empty when no tracker is asked for).

    A tracker whose package is missing fails here, before any compute, naming the extra.
    """
    log_with = list(cfg.trainer.log_with)
    for name in log_with:
        if importlib.util.find_spec(name) is None:
            raise ConfigError(
                f"trainer.log_with=[{name}] needs the {name} package: pip install 'rmt[{name}]'."
            )
    return {"log_with": log_with} if log_with else {}


def start(accelerator, cfg: DictConfig, run_dir: Path) -> None:
    """Open the trackers on the main process, with the resolved config as their parameters."""
    log_with = list(cfg.trainer.log_with)
    if not log_with:
        return
    init: dict[str, dict] = {}
    if "wandb" in log_with:
        init["wandb"] = {"dir": str(run_dir), "name": run_dir.name}
    if "mlflow" in log_with:
        init["mlflow"] = {"run_name": run_dir.name}
        if accelerator.is_main_process and not os.environ.get("MLFLOW_TRACKING_URI"):
            import mlflow  # lazy: optional extra rmt[mlflow], only when log_with has it

            # MLflow 3 keeps its file store (the one store mlflow-skinny has) behind an opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    accelerator.init_trackers(cfg.name, config=flat, init_kwargs=init)


def log(accelerator, split: str, step: int, values: dict[str, Any]) -> None:
    """The numbers of one ``metrics.jsonl`` event, as ``<split>/<key>`` at ``step``."""
    numbers = {f"{split}/{k}": v for k, v in values.items() if isinstance(v, int | float)}
    accelerator.log(numbers, step=step)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become strings (tracker parameters are flat)."""
    if not isinstance(tree, dict):
        return {prefix: tree if isinstance(tree, int | float | str | bool) or tree is None
                else str(tree)}  # fmt: skip
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat
