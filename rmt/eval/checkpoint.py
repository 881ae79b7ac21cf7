"""Find, check and load the checkpoint that ``rmt-train`` wrote, with no other flags.

``checkpoint=`` may name a run folder (``outputs/train/<date>/<time>``) or its ``best/`` folder.
Everything needed is in ``best/``: the model (``save_pretrained``), the tokenizer, the run's
resolved ``config.yaml`` and ``trainer_state.json``. Before any weight is read the folder is
checked, so a broken copy, a plain Hugging Face model or a checkpoint written by another rmt
version fails with a message that names the file and the fix, instead of a stack trace from
deep inside ``from_pretrained``. Nothing here writes to disk.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoTokenizer

import rmt
from rmt.modeling.factory import MODEL_TYPE, load_model
from rmt.run import CONFIG_FILE, STATE_FILE, CheckpointError, locate_best, read_config, read_json

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass
class Checkpoint:
    """A checked checkpoint folder, before or after loading the model."""

    given: Path  # the path the user passed
    best_dir: Path  # folder holding config.json + weights + tokenizer
    run_dir: Path | None  # the training run folder, when best_dir sits in one
    run_config: DictConfig  # the run's fully resolved config.yaml
    trainer_state: dict

    @property
    def name(self) -> str:
        """Display name: the run folder's name (``<time>[_<experiment>]``)."""
        return (self.run_dir or self.best_dir).name


def check(path: str | Path, *, strict_version: bool = True) -> Checkpoint:
    """Check a checkpoint folder without loading weights; returns its config and state."""
    best_dir, run_dir = locate_best(path)
    missing = []
    if not (best_dir / "config.json").is_file():
        missing.append("config.json")
    if not any((best_dir / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES[:2]))
    if not any((best_dir / f).is_file() for f in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES))
    if not (best_dir / STATE_FILE).is_file():
        missing.append(STATE_FILE)
    config_yaml = best_dir / CONFIG_FILE
    if not config_yaml.is_file() and run_dir is not None and (run_dir / CONFIG_FILE).is_file():
        config_yaml = run_dir / CONFIG_FILE
    if not config_yaml.is_file():
        missing.append("config.yaml")
    if missing:
        raise CheckpointError(
            f"checkpoint {best_dir} is incomplete: missing {', '.join(missing)}. rmt-train writes "
            "all of them into best/ at once; the folder was probably copied partly or edited. "
            "Copy the whole best/ folder again, or point checkpoint= at a complete run."
        )

    hf_config = read_json(best_dir / "config.json")
    model_type = hf_config.get("model_type")
    if model_type != MODEL_TYPE:
        raise CheckpointError(
            f"{best_dir / 'config.json'} has model_type={model_type!r}, not {MODEL_TYPE!r}: "
            "this is not an RMT checkpoint. To evaluate a plain Hugging Face model, train it with "
            "memory first (`rmt-train backbone.pretrained=<it>`), or wrap it with "
            "RMTForCausalLM.from_backbone and save_pretrained."
        )

    state = read_json(best_dir / "trainer_state.json")
    version = state.get("rmt_version") if isinstance(state, dict) else None
    if version is None:
        raise CheckpointError(
            f"{best_dir / 'trainer_state.json'} has no rmt_version: it was not written by rmt-train. "
            "Evaluate checkpoints written by rmt-train (best/ of a run folder)."
        )
    if not _compatible(str(version), rmt.__version__):
        message = (
            f"checkpoint {best_dir} was written by rmt {version}, this is rmt {rmt.__version__}; "
            f"checkpoint formats may differ between versions. Install the version that wrote it "
            f"(`pip install rmt=={version}`), or pass strict_version=false to try anyway."
        )
        if strict_version:
            raise CheckpointError(message)
        warnings.warn(message, stacklevel=2)

    run_config = read_config(config_yaml)
    return Checkpoint(Path(path), best_dir, run_dir, run_config, state)


def load(ckpt: Checkpoint, *, device: str = "cpu", dtype: str | None = None):
    """Load ``(model, tokenizer)`` from a checked checkpoint, in eval mode on ``device``."""
    kwargs = {}
    if dtype:
        if not hasattr(torch, dtype):
            raise CheckpointError(f"dtype={dtype!r}: unknown; use float32, bfloat16 or float16.")
        kwargs["dtype"] = getattr(torch, dtype)
    try:
        model = load_model(ckpt.best_dir, **kwargs)
    except Exception as exc:
        raise CheckpointError(
            f"cannot load the model from {ckpt.best_dir}: {type(exc).__name__}: {exc}. The weights "
            "do not match config.json (damaged copy or edited config); copy best/ again."
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(ckpt.best_dir)
    except Exception as exc:
        raise CheckpointError(
            f"cannot load the tokenizer from {ckpt.best_dir}: {type(exc).__name__}: {exc}. "
            "Copy best/ again (rmt-train saves the tokenizer next to the model)."
        ) from exc
    model.to(device).eval()
    return model, tokenizer


def _compatible(saved: str, current: str) -> bool:
    """Same major.minor: patch releases keep the checkpoint format."""

    def key(v: str):
        parts = v.split(".")
        return tuple(parts[:2])

    return key(saved) == key(current)
