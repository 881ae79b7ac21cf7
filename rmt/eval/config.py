"""Typed schema of ``rmt-eval`` (``rmt/conf/eval.yaml`` extends it).

The schema is registered in Hydra's ConfigStore as ``base_eval``, so a typo
(``sample=10``) or a wrong type (``samples=many``) fails when the config is composed, naming
the key. Values left ``None`` are taken from the evaluated run's own config.yaml (its tasks,
background text and fact placement), which is why ``rmt-eval checkpoint=<run>`` needs no
other flag. Cross-field rules live in :func:`validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from rmt.config.keys import check_known_keys
from rmt.tasks.babilong.config import BACKGROUND_KINDS, BackgroundConfig
from rmt.tasks.babilong.haystack import parse_length
from rmt.tasks.babilong.scoring import check_scoring
from rmt.tasks.babilong.sources import EVAL_RENAMED, check_source


@dataclass
class EvalDataConfig:
    """Where the samples come from (the same names as ``task.source`` of rmt-train).

    ``None`` (default): the run's own ``task.source``/``task.path``, so a run trained on bAbI
    files is evaluated on their ``_test`` files, not on generated stories.
    ``generated``: built on the fly from the offline bAbI generator (``split`` stories) and the
    background text, seeded by ``seed`` so two evaluations score identical samples.
    ``babi``: stories from the raw bAbI ``.txt`` files in ``path`` (``_test`` files of a folder,
    or the one file given), hidden in the background text the same way.
    ``babilong``: pre-built BABILong rows: the published ``RMT-team/babilong`` set (or another
    id in ``path``; needs internet or the cache), or a local copy in the published format (a
    folder with ``<length>/<task>`` files, json/jsonl/parquet or ``save_to_disk``).
    """

    source: str | None = None  # None = the run's task.source; generated | babi | babilong
    path: str | None = None  # None = the run's task.path (or the source's default)
    split: str | None = None  # None = validation (the run's own); test: never-trained stories


@dataclass
class EvalBackgroundConfig(BackgroundConfig):
    """The training schema's background, with ``kind=None`` meaning "the run's own".

    Plain keys, so ``background.kind=files background.path=/my/text`` overrides it.
    """

    kind: str | None = None  # None = the run's task.background; builtin | files | hf


@dataclass
class EvalConfig:
    """Root config of ``rmt-eval``."""

    checkpoint: str | None = None  # run folder or its best/ folder
    checkpoints: list[str] = field(default_factory=list)  # several, compared in one table
    names: list[str] = field(default_factory=list)  # display names, one per checkpoint
    tasks: list[str] | None = None  # None = the run's task.tasks
    # None = the task's (BABILong: x1..x16, xK = K times the run's validation length; LM 512..4k)
    lengths: list[str] | None = None
    samples: int | None = None  # per (task, length) cell; None = the run's validation samples
    stage: int | None = None  # curriculum stage of story sizes; None = the checkpoint's stage
    batch_size: int | None = None  # None = the run's trainer.eval_batch_size
    max_batch_tokens: int = 65536  # fewer samples per batch at long lengths; 1 beyond this
    seed: int | None = None  # None = the run's trainer.seed (same seed, same samples)
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    background: EvalBackgroundConfig = field(default_factory=EvalBackgroundConfig)
    position: list[float] | None = None  # fact placement [start, end]; None = the run's
    scoring: str | None = None  # None = the run's task.scoring; babilong | strict
    max_new_tokens: int | None = None  # None = the run's trainer.max_new_tokens
    baseline: bool = False  # also score the backbone alone on the end of the input
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:1 ...
    dtype: str | None = None  # None = as saved; float32 | bfloat16 | float16
    compile: bool = False  # torch.compile each segment step of the read (eager, warned, on failure)
    strict_version: bool = True  # refuse checkpoints written by another rmt major.minor
    progress_bar: bool = True
    save_predictions: bool = True  # predictions.jsonl: one line per sample and mode
    output_dir: str | None = None  # set from Hydra's run dir


def length_times(label: str) -> int | None:
    """``"x4"`` -> 4 (a multiple of the run's validation length); None for other labels."""
    if not label.startswith("x"):
        return None
    if not label[1:].isdigit() or int(label[1:]) < 1:
        raise ValueError(f"{label!r} is not a length: write x1, x2, ... (K times the run's)")
    return int(label[1:])


def register_configs() -> None:
    ConfigStore.instance().store(name="base_eval", node=EvalConfig)


def checkpoint_list(cfg: DictConfig) -> list[str]:
    """The checkpoints to evaluate, from ``checkpoint`` and/or ``checkpoints``."""
    paths = list(cfg.checkpoints or [])
    if cfg.checkpoint:
        paths = [cfg.checkpoint, *[p for p in paths if p != cfg.checkpoint]]
    return [str(p) for p in paths]


def validate(cfg: DictConfig) -> None:
    """Rules a schema cannot express; each message names the key and the fix."""
    check_known_keys(cfg, "rmt-eval")  # also keys that +key=value added past the schema
    if not checkpoint_list(cfg):
        raise ValueError(
            "rmt-eval: no checkpoint given. Pass checkpoint=<run folder or its best/ folder> "
            "(or checkpoints=[a,b] to compare several)."
        )
    if cfg.names and len(cfg.names) != len(checkpoint_list(cfg)):
        raise ValueError(
            f"names has {len(cfg.names)} entries for {len(checkpoint_list(cfg))} checkpoints; "
            "give one name per checkpoint or leave names empty."
        )
    if cfg.data.source is not None:
        check_source(cfg.data.source, key="data.source", path_key="data.path",
                     renamed=EVAL_RENAMED)  # fmt: skip
    if cfg.scoring is not None:
        check_scoring(cfg.scoring, key="scoring")
    if cfg.data.source == "babi" and not cfg.data.path:
        raise ValueError(
            "data.source=babi needs data.path=<a bAbI .txt file or the folder of them> "
            "(e.g. tasks_1-20_v1-2/en-10k)."
        )
    for key in ("samples", "batch_size", "max_batch_tokens", "max_new_tokens"):
        if cfg[key] is not None and cfg[key] < 1:
            raise ValueError(f"{key}={cfg[key]}: must be >= 1.")
    if cfg.lengths is not None and not cfg.lengths:
        raise ValueError(
            "lengths is empty; give e.g. lengths=[x1,x4] or [0k,1k,4k], or leave it unset."
        )
    for length in cfg.lengths or ():
        try:
            length_times(str(length)) or parse_length(str(length))
        except ValueError as exc:
            raise ValueError(f"lengths: {exc}; or xK for K times the run's length") from exc
    if cfg.background.kind is not None and cfg.background.kind not in BACKGROUND_KINDS:
        raise ValueError(
            f"background.kind={cfg.background.kind!r}: unknown; use one of "
            f"{', '.join(BACKGROUND_KINDS)} (or leave it null for the run's own background)."
        )
    if cfg.tasks is not None and not cfg.tasks:
        raise ValueError("tasks is empty; give e.g. tasks=[qa1,qa2], or leave it unset.")
    if cfg.position is not None:
        pos = list(cfg.position)
        if len(pos) != 2 or not 0.0 <= pos[0] < pos[1] <= 1.0:
            raise ValueError(f"position={pos}: must be [start, end] with 0 <= start < end <= 1.")
