"""The run-folder contract: what ``rmt-train`` writes and ``rmt-eval`` / resume read.

::

    <run folder>/
      .hydra/overrides.yaml   what this job changed (sweep jobs are named by it)
      config.yaml             the fully resolved config of the run
      metrics.jsonl           one JSON object per log/eval event
      tb/                     TensorBoard events
      best/                   save_pretrained model + tokenizer + config.yaml + trainer_state.json
      last/                   accelerator.save_state + trainer_state.json, for resume
      predictions/valid_<step>.jsonl   one line per validation sample: prompt digest, answer
      summary.json            final metrics

Why atomic: a run can be killed at any moment (pre-emption, OOM, Ctrl-C). Every checkpoint is
written into a temporary folder next to its target and renamed into place only once complete,
so ``best/`` and ``last/`` are always either the previous complete checkpoint or the new one.
The swap is two renames (target -> ``.<name>.old``, tmp -> target); if a crash falls between
them, :func:`resolve_checkpoint` finds the complete ``.old`` folder.

``best/`` is Hugging Face native, so it describes itself; ``last/`` holds everything needed to
continue a run bit for bit. Train and eval both go through this module, so the file names and
the one :class:`CheckpointError` are defined once.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open

import rmt

STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
TB_DIR = "tb"
BEST = "best"
LAST = "last"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
PREDICTIONS_DIR = "predictions"
FAILED_FILE = "failed.json"  # a sweep job that failed: why (rmt-report shows it)
MULTIRUN_FILE = "multirun.yaml"  # Hydra's config of a whole sweep, in the sweep folder


class CheckpointError(ValueError):
    """A run folder or checkpoint that cannot be used; the message says what is wrong and the fix."""


COPY_AGAIN = "Copy the run folder again from where it was written."


# ------------------------------------------------------------------------- atomic publishing
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


def prepare_tmp(target: Path) -> Path:
    """Create an empty temporary folder next to ``target`` (left-overs of a crash are removed)."""
    tmp = _tmp_path(target)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it becomes ``target``, on error it is removed.

    Single-process helper; multi-process saves use :func:`prepare_tmp` / :func:`publish` with a
    barrier between them (see :func:`save_last`).
    """
    target = Path(target)
    tmp = prepare_tmp(target)
    with _disk_full_is_one_error(tmp, target):
        yield tmp
    publish(tmp, target)


# ---------------------------------------------------------------------------------- full disk
class DiskFullError(CheckpointError):
    """A checkpoint could not be written for lack of space; the message gives path and bytes."""


def _is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    # torch's zip writer reports a short write as "[enforce fail at inline_container.cc] unexpected
    # pos" or "file write failed", without the errno
    return isinstance(err, RuntimeError) and any(
        text in str(err) for text in ("unexpected pos", "file write failed")
    )


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def disk_full_message(target: Path, *, need: int, written: int = 0) -> str:
    """One line: which write failed, how many bytes it needs and how many are free, the fix."""
    free = shutil.disk_usage(target.parent).free
    previous = resolve_checkpoint(target)
    size = (
        f"about {need:,} bytes (the size of the previous {target.name}/)"
        if previous is not None
        else f"more than the {written:,} bytes written before the disk filled"
    )
    return (
        f"disk full: writing {target} needs {size}, and {free:,} bytes are free on that disk. "
        f"The earlier checkpoints are untouched and the partial copy was removed; free some "
        f"space, then continue with rmt-train resume={target.parent}."
    )


@contextmanager
def _disk_full_is_one_error(tmp: Path, target: Path) -> Iterator[None]:
    """Remove ``tmp`` if the body fails (a partial checkpoint would keep the disk full); a full
    disk becomes a :class:`DiskFullError` that says so, instead of torch's zip-writer error."""
    try:
        yield
    except BaseException as err:
        written = folder_bytes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if not _is_disk_full(err):
            raise
        previous = resolve_checkpoint(target)
        need = folder_bytes(previous) if previous is not None else 0
        raise DiskFullError(disk_full_message(target, need=need, written=written)) from None


# ------------------------------------------------------------------------------ trainer state
def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON object (config.json, trainer_state.json, summary.json), or a
    CheckpointError naming the file when it is missing, not text, not JSON or not an object."""
    damaged = f"the checkpoint is damaged. {COPY_AGAIN}"
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as err:
        raise CheckpointError(f"cannot read {path} ({err}); the checkpoint is incomplete.") from err
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not UTF-8 text (binary data); {damaged}") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); {damaged}") from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path} holds a JSON {type(data).__name__}, not an object; {damaged}"
        )
    return data


def read_config(path: Path, *, fix: str = "") -> DictConfig:
    """A saved config.yaml, or a CheckpointError naming the file when it is damaged."""
    fix = fix or COPY_AGAIN
    try:
        cfg = OmegaConf.load(path)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as err:
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} is not a readable config ({why}); {fix}") from None
    if not isinstance(cfg, DictConfig):
        raise CheckpointError(f"{path} holds a YAML {type(cfg).__name__}, not a mapping; {fix}")
    return cfg


def read_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    return read_json(Path(checkpoint) / STATE_FILE)


def new_state(**fields: Any) -> dict[str, Any]:
    """A trainer_state dict stamped with the package version."""
    return {"rmt_version": rmt.__version__, **fields}


# ---------------------------------------------------------------------------- saving, loading
def save_best(
    target: Path,
    *,
    model,
    tokenizer,
    cfg: DictConfig,
    state: dict[str, Any],
    state_dict: dict[str, Any] | None = None,
) -> None:
    """Write ``best/``: HF-native model + tokenizer + config.yaml + trainer_state.json.

    ``model`` must be the unwrapped model (``accelerator.unwrap_model``); call on the main
    process only. ``state_dict``: the full weights gathered from a sharded model
    (``rmt.train.distributed.consolidated_state_dict``); ``None`` saves the model's own.
    """
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
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
    with _disk_full_is_one_error(tmp, target):
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_json(tmp / STATE_FILE, state)
    if accelerator.is_main_process:
        publish(tmp, target)
    accelerator.wait_for_everyone()


def load_last(run_dir: str | os.PathLike, *, accelerator) -> dict[str, Any]:
    """Restore model/optimizer/RNG states from ``<run_dir>/last``; return its trainer state."""
    ckpt = resolve_checkpoint(Path(run_dir) / LAST)
    if ckpt is None:
        raise CheckpointError(f"{run_dir} has no complete last/ checkpoint: {NOTHING_TO_RESUME}")
    state = read_state(ckpt)
    check_files(ckpt)
    try:
        accelerator.load_state(str(ckpt))
    except Exception as err:  # any unreadable file: one line naming the folder
        raise CheckpointError(
            f"cannot load the checkpoint {ckpt} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); it is damaged. {_DAMAGED_FIX}"
        ) from None
    return state


_DAMAGED_FIX = f"{COPY_AGAIN} A damaged last/ cannot be resumed; otherwise start a new run."


def check_files(ckpt: Path) -> None:
    """Refuse a checkpoint whose weight or optimizer file is cut short (a copy that stopped, a
    full disk), naming the file, before anything is loaded from it."""
    for file in sorted(ckpt.iterdir()):
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt"):
                    pass
            elif file.suffix in (".bin", ".pkl", ".pt", ".pth"):
                with zipfile.ZipFile(file):  # torch.save's format: a truncated zip has no index
                    pass
        except Exception as err:  # safetensors and zipfile raise their own types
            raise CheckpointError(
                f"{file} is damaged ({str(err).splitlines()[0] if str(err) else type(err).__name__}"
                f"; {file.stat().st_size} bytes). {_DAMAGED_FIX}"
            ) from None


# ---------------------------------------------------------------------------- predictions
def predictions_file(run_dir: str | os.PathLike, step: int) -> Path:
    """Where the validation at ``step`` writes its per-sample predictions."""
    return Path(run_dir) / PREDICTIONS_DIR / f"valid_{step}.jsonl"


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """A whole JSON-lines file at once (written to a temporary name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if not _is_disk_full(err):
            raise
        raise DiskFullError(
            f"disk full: writing {path} failed ({shutil.disk_usage(path.parent).free:,} bytes "
            f"free). Free some space, then continue with rmt-train resume={path.parent.parent}."
        ) from None
    os.replace(tmp, path)


# ------------------------------------------------------------------------------- resolving
def resolve_checkpoint(target: str | os.PathLike) -> Path | None:
    """The complete checkpoint folder for ``target``: itself, or ``.old`` after a crash mid-swap."""
    target = Path(target)
    if target.is_dir() and (target / STATE_FILE).is_file():
        return target
    old = _old_path(target)
    if old.is_dir() and (old / STATE_FILE).is_file():
        return old
    return None


def locate_best(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """Map a run folder or a ``best/`` folder to ``(best_dir, run_dir)``."""
    given = Path(path).expanduser()
    if not given.exists():
        raise CheckpointError(
            f"checkpoint={path}: no such folder. Pass a training run folder "
            "(outputs/train/<date>/<time>) or its best/ folder."
        )
    if not given.is_dir():
        raise CheckpointError(
            f"checkpoint={path}: is a file; pass the run folder or its best/ folder, not a file in it."
        )
    if (given / "config.json").is_file():
        parent = given.parent  # best/ (or .best.old) of a run folder, or a lone copy
        is_run = (parent / CONFIG_FILE).is_file() or (parent / ".hydra").is_dir()
        return given, (parent if is_run else None)
    best = resolve_checkpoint(given / BEST)  # best/, or the complete .best.old of a crash
    if best is not None:
        return best, given
    if (given / BEST).is_dir():
        return given / BEST, given
    if (given / LAST).is_dir():
        raise CheckpointError(
            f"checkpoint={path}: the run has last/ but no best/ folder: training stopped before "
            "its first validation wrote best/. Resume it (`rmt-train resume=<run dir>`) until a "
            "validation has run, then evaluate."
        )
    raise CheckpointError(
        f"checkpoint={path}: not an rmt checkpoint: neither config.json nor a best/ folder is in "
        "it. Pass the run folder that rmt-train printed, or its best/ folder."
    )


def claim_new_dir(path: str | os.PathLike) -> Path:
    """Create and return a folder no other process has: ``path``, else ``path-2``, ``path-3``...

    Run folders are named by the second they start in, so identical commands started together
    ask for the same name; ``os.mkdir`` is atomic (exactly one caller creates a given folder),
    so each caller gets its own folder instead of sharing one.
    """
    path = Path(path)
    check_free_space(_existing_ancestor(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            candidate = path if n == 1 else path.with_name(f"{path.name}-{n}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return candidate
    except OSError as err:
        if not _is_disk_full(err):
            raise
        check_free_space(_existing_ancestor(path), minimum=None)
    raise CheckpointError(f"cannot claim a new folder next to {path}: 9999 names are taken.")


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest parent that exists (whose disk a new folder would go on)."""
    return next(p for p in (path, *path.absolute().parents) if p.exists())


MIN_FREE_BYTES = 1 << 20  # a new folder's config, log and first metrics; checkpoints need more


def check_free_space(folder: Path, *, minimum: int | None = MIN_FREE_BYTES) -> None:
    """Refuse to start in ``folder`` when its disk has less than ``minimum`` bytes free (a new
    run there would fail in Hydra's first write); ``minimum=None`` refuses in any case (a
    write already failed with ENOSPC)."""
    free = shutil.disk_usage(folder).free
    if minimum is not None and free >= minimum:
        return
    raise DiskFullError(
        f"disk full: {folder} has {free:,} bytes free and a new run needs at least "
        f"{MIN_FREE_BYTES:,} for its config and logs (and its checkpoints more); free some space "
        "or choose a folder on another disk (hydra.run.dir=...)."
    )


def claim_run_dir(run_dir: str | os.PathLike, marker: str) -> None:
    """Claim the existing folder ``run_dir`` for a new run by creating ``marker`` in it atomically.

    Of several processes given the same folder, one wins; the others, and a folder that
    already holds a run, get a :class:`CheckpointError` (a run is never overwritten).
    """
    run_dir = Path(run_dir)
    check_fresh_run_dir(run_dir)
    existing = _existing_ancestor(run_dir)
    check_free_space(existing)
    try:
        (run_dir / marker).mkdir(parents=True)
    except OSError as err:
        if not isinstance(err, FileExistsError):
            if _is_disk_full(err):
                check_free_space(existing, minimum=None)
            raise
        raise CheckpointError(
            f"run folder {run_dir} is already used by another rmt-train ({marker} exists); it is "
            "never shared. Choose another folder (hydra.run.dir=... or a different name=...)."
        ) from None


def discard_refused(folder: str | os.PathLike, *, keep_run: bool = True) -> None:
    """Remove what a refused command created: ``folder`` and its parents that are left empty.

    ``keep_run``: leave a folder that holds run data (metrics.jsonl, last/, best/, summary.json)
    untouched. Only a folder that holds nothing but Hydra's ``.hydra/`` and log files is removed,
    never the working directory or one above it; parents are removed only up to the working
    directory, and only when empty.
    """
    folder = Path(folder).absolute()
    if not folder.is_dir():
        return
    if keep_run and any((folder / n).exists() for n in (METRICS_FILE, LAST, BEST, SUMMARY_FILE)):
        return
    cwd = Path.cwd().absolute()
    if folder == cwd or folder in cwd.parents:
        return  # hydra.run.dir=. (or above): never remove the folder the user works in
    if any(
        p.name != ".hydra" and not (p.is_file() and p.suffix == ".log") for p in folder.iterdir()
    ):
        return  # it holds more than Hydra wrote for this command: not ours to remove
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    while parent != cwd and cwd in parent.parents:
        try:
            parent.rmdir()  # only succeeds when empty
        except OSError:
            return
        parent = parent.parent


NOTHING_TO_RESUME = (
    "the run stopped before its first checkpoint, so there is nothing to resume. Start it again "
    "as a new run in a new folder: the same rmt-train command without resume= and without "
    "hydra.run.dir= (its overrides are in .hydra/overrides.yaml of that folder)."
)


def check_fresh_run_dir(run_dir: str | os.PathLike) -> None:
    """Refuse to start a new run in a folder that already holds one (never overwrite a run).

    The advice agrees with :func:`load_last`'s: a run with a checkpoint is resumed, a run
    without one is started again in a new folder."""
    run_dir = Path(run_dir)
    taken = [n for n in (METRICS_FILE, LAST, BEST, SUMMARY_FILE) if (run_dir / n).exists()]
    if taken and resolve_checkpoint(run_dir / LAST) is None:
        raise CheckpointError(
            f"run folder {run_dir} already holds a run ({', '.join(taken)}; it is never "
            f"overwritten) and it has no last/ checkpoint: {NOTHING_TO_RESUME}"
        )
    if taken:
        raise CheckpointError(
            f"run folder {run_dir} already holds a run ({', '.join(taken)}); it is never "
            f"overwritten. Continue it with resume={run_dir}, or choose another folder "
            "(hydra.run.dir=... or a different name=...)."
        )


# ------------------------------------------------------------------------------- overrides
def override_key(item: str) -> str:
    """``"+memory.num_tokens=4"`` -> ``"memory.num_tokens"`` (Hydra's ``+``/``++``/``~`` dropped)."""
    return item.partition("=")[0].lstrip("+~")


def read_overrides(run_dir: str | os.PathLike) -> list[str]:
    """The job's command-line overrides from ``.hydra/overrides.yaml``."""
    file = Path(run_dir) / OVERRIDES_FILE
    try:
        raw = yaml.safe_load(file.read_text()) or []
    except yaml.YAMLError as exc:
        raise ValueError(f"cannot parse {file}: {exc}") from exc
    if not isinstance(raw, list):
        raise ValueError(f"{file} should be a YAML list of key=value strings")
    return [str(item) for item in raw]
