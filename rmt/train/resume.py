"""Resuming and pre-emption: the config a resumed run continues with, and the signal guard
that turns SIGTERM/SIGINT into a save of ``last/`` at the next step boundary."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rmt.config.schema import typed
from rmt.run import (
    CONFIG_FILE,
    LAST,
    SUMMARY_FILE,
    CheckpointError,
    override_key,
    read_config,
    read_json,
    read_state,
    resolve_checkpoint,
)


def resume_config(run_dir: str | os.PathLike, overrides: list[str]) -> DictConfig:
    """The config to continue ``run_dir`` with: its own config.yaml plus plain key=value overrides.

    A resumed run must be the same experiment, so group choices (``task=...``) are refused;
    plain keys (``trainer.max_steps=5000``) are allowed, e.g. to extend a run.
    """
    run_dir = Path(run_dir)
    cfg_file = run_dir / CONFIG_FILE
    if not cfg_file.is_file():
        raise CheckpointError(
            f"resume={str(run_dir)!r}: {cfg_file} not found; give the run folder written by "
            "rmt-train (it holds config.yaml, metrics.jsonl and last/)."
        )
    cfg = typed(read_config(cfg_file, fix=(
        f"it is damaged. Restore it ({run_dir / 'best' / CONFIG_FILE} holds the config of the "
        "same run), or start a new run."
    )))  # fmt: skip
    plain = []
    for item in overrides:
        key = override_key(item)
        if key == "resume" or key.startswith("hydra"):
            continue
        if "." not in key:
            raise CheckpointError(
                f"override {item!r} picks a config group, but a resumed run keeps its own "
                "config; only plain keys (e.g. trainer.max_steps=5000) can change on resume."
            )
        plain.append(item.lstrip("+"))
    if plain:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(plain))
    cfg.resume = str(run_dir)
    cfg.output_dir = str(run_dir)
    return cfg


def finished_summary(cfg: DictConfig) -> dict[str, Any] | None:
    """For ``resume``: the saved summary (with a ``finished`` message) if the run has nothing
    left to do under ``cfg``, else ``None``; refuses a ``trainer.max_steps`` below its step.

    Read from the files alone, before any model is built, so a resume that has nothing to do
    writes nothing: no extra step, and summary.json, best/ and last/ stay as they are.
    """
    run_dir, tr = Path(cfg.resume), cfg.trainer
    last = resolve_checkpoint(run_dir / LAST)
    if last is None:  # load_last explains it
        return None
    progress = read_state(last).get("progress", {})
    step = int(progress.get("step", 0))
    if tr.max_steps < step:
        raise CheckpointError(
            f"trainer.max_steps={tr.max_steps} is below the run's current step {step} "
            f"({run_dir}); a run cannot go back. Give trainer.max_steps > {step} to train further."
        )
    summary_file = run_dir / SUMMARY_FILE
    summary = read_json(summary_file) if summary_file.is_file() else None
    if not isinstance(summary, dict) or summary.get("steps") != step:
        return None  # interrupted after its last summary (or before any): resume it
    if summary.get("stopped") == "curriculum_done":
        why = "its curriculum is done"
    elif step >= tr.max_steps:
        why = f"it reached trainer.max_steps={tr.max_steps}"
    elif tr.max_minutes is not None and progress.get("seconds", 0.0) >= tr.max_minutes * 60:
        why = f"its time budget trainer.max_minutes={tr.max_minutes} is spent"
    else:
        return None
    return {
        **summary,
        "finished": f"run {run_dir} is already finished at step {step} ({why}); nothing was "
        f"changed. To train further: rmt-train resume={run_dir} trainer.max_steps=<more than "
        f"{step}>.",
    }


class PreemptionGuard:
    """Turn SIGTERM/SIGINT into a flag the loop checks, so it can save last/ before exiting.

    Why not save inside the handler: the handler runs between two Python bytecodes, possibly
    in the middle of an optimizer step; the loop saves at the next step boundary instead.
    A second signal (e.g. while that save runs) gives up on the graceful path: the handlers
    that were there before come back and the signal is raised again, so it does what it does
    without rmt: SIGTERM ends the process at once (status 128 + 15), SIGINT raises
    KeyboardInterrupt.
    """

    def __init__(self, signals: tuple[int, ...] | None = None) -> None:
        self.signals = signals if signals is not None else (signal.SIGTERM, signal.SIGINT)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # second signal: give up on the graceful path
            self.restore()
            signal.raise_signal(signum)
            return
        self.received = signum

    @property
    def triggered(self) -> bool:
        return self.received is not None

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc) -> None:
        self.restore()
