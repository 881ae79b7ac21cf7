"""Checkpoints of a run folder: atomic writes, best/ and last/, and resume.

Why atomic: a run can be killed at any moment (pre-emption, OOM, Ctrl-C). Every checkpoint is
written into a temporary folder next to its target and renamed into place only once complete,
so ``best/`` and ``last/`` are always either the previous complete checkpoint or the new one.
The swap is two renames (target -> ``.<name>.old``, tmp -> target); if a crash falls between
them, :func:`resolve_checkpoint` finds the complete ``.old`` folder.

``best/`` is Hugging Face native (``save_pretrained`` model + tokenizer, loadable by
``AutoModelForCausalLM.from_pretrained`` after ``import rmt``) plus ``config.yaml`` and
``trainer_state.json``, so it describes itself. ``last/`` is ``accelerator.save_state`` (model,
optimizer, RNG states of every process) plus ``trainer_state.json`` (step, stage, data position),
which is everything needed to continue a run bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"


class CheckpointError(RuntimeError):
    """A run folder or checkpoint that cannot be used; the message says what to do."""


def _tmp_path(target: Path) -> Path:
    return target.parent / f".{target.name}.tmp"


def _old_path(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def publish(tmp: Path, target: Path) -> None:
    """Move a complete ``tmp`` folder to ``target``, replacing an existing one."""
    old = _old_path(target)
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it becomes ``target``, on error it is removed.

    Single-process helper; multi-process saves use :func:`prepare_tmp` / :func:`publish` with a
    barrier between them (see ``save_last``).
    """
    target = Path(target)
    tmp = prepare_tmp(target)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, target)


def prepare_tmp(target: Path) -> Path:
    """Create an empty temporary folder next to ``target`` (left-overs of a crash are removed)."""
    tmp = _tmp_path(target)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def resolve_checkpoint(target: str | os.PathLike) -> Path | None:
    """The complete checkpoint folder for ``target``: itself, or ``.old`` after a crash mid-swap."""
    target = Path(target)
    if target.is_dir() and (target / STATE_FILE).is_file():
        return target
    old = _old_path(target)
    if old.is_dir() and (old / STATE_FILE).is_file():
        return old
    return None


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {path} ({err}); the checkpoint is incomplete.") from err


def save_best(
    target: Path,
    *,
    model,
    tokenizer,
    cfg: DictConfig,
    state: dict[str, Any],
) -> None:
    """Write ``best/``: HF-native model + tokenizer + config.yaml + trainer_state.json.

    ``model`` must be the unwrapped model (``accelerator.unwrap_model``); call on the main
    process only.
    """
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        write_json(tmp / STATE_FILE, state)


def save_last(target: Path, *, accelerator, state: dict[str, Any]) -> None:
    """Write ``last/`` with ``accelerator.save_state``; call on every process.

    Every process writes its own RNG state into the shared temporary folder, so the folder
    name is fixed (not per process) and only the main process renames it after a barrier.
    """
    tmp = _tmp_path(target)
    if accelerator.is_main_process:
        prepare_tmp(target)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / STATE_FILE, state)
        publish(tmp, target)
    accelerator.wait_for_everyone()


def load_last(run_dir: str | os.PathLike, *, accelerator) -> dict[str, Any]:
    """Restore model/optimizer/RNG states from ``<run_dir>/last``; return its trainer state."""
    ckpt = resolve_checkpoint(Path(run_dir) / "last")
    if ckpt is None:
        raise CheckpointError(
            f"{run_dir} has no complete last/ checkpoint to resume from; the run stopped before "
            "its first checkpoint. Start a new run instead of resume=..."
        )
    accelerator.load_state(str(ckpt))
    return read_state(ckpt)


def resume_config(run_dir: str | os.PathLike, overrides: list[str]) -> DictConfig:
    """The config to continue ``run_dir`` with: its own config.yaml plus plain key=value overrides.

    A resumed run must be the same experiment, so group choices (``task=...``) are refused;
    plain keys (``trainer.max_steps=5000``) are allowed, e.g. to extend a run.
    """
    from rmt.config.schema import TrainConfig

    run_dir = Path(run_dir)
    cfg_file = run_dir / CONFIG_FILE
    if not cfg_file.is_file():
        raise CheckpointError(
            f"resume={str(run_dir)!r}: {cfg_file} not found; give the run folder written by "
            "rmt-train (it holds config.yaml, metrics.jsonl and last/)."
        )
    schema = OmegaConf.structured(TrainConfig)
    cfg = OmegaConf.merge(schema, OmegaConf.load(cfg_file))
    plain = []
    for item in overrides:
        key, _, _ = item.partition("=")
        key = key.lstrip("+~")
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


def check_fresh_run_dir(run_dir: str | os.PathLike) -> None:
    """Refuse to start a new run in a folder that already holds one (never overwrite a run)."""
    run_dir = Path(run_dir)
    taken = [n for n in (METRICS_FILE, "last", "best", "summary.json") if (run_dir / n).exists()]
    if taken:
        raise CheckpointError(
            f"run folder {run_dir} already holds a run ({', '.join(taken)}); it is never "
            f"overwritten. Continue it with resume={run_dir}, or choose another folder "
            "(hydra.run.dir=... or a different name=...)."
        )


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
        import signal

        self._signal = signal
        self.signals = signals if signals is not None else (signal.SIGTERM, signal.SIGINT)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # second signal: give up on the graceful path
            self.restore()
            self._signal.raise_signal(signum)
            return
        self.received = signum

    @property
    def triggered(self) -> bool:
        return self.received is not None

    def __enter__(self) -> PreemptionGuard:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = self._signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            self._signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc) -> None:
        self.restore()


def new_state(**fields: Any) -> dict[str, Any]:
    """A trainer_state dict stamped with the package version."""
    from rmt import __version__

    return {"rmt_version": __version__, **fields}
