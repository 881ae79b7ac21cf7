"""The schema of ``task`` for BABILong (``task.type=babilong``), owned by this package.

Registered in Hydra's ConfigStore as ``task/base_babilong`` by :mod:`rmt.config.schema`, so the
YAML files in ``rmt/conf/task/`` extend it and a typo fails at compose time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rmt.tasks.base import CurriculumStage, TaskConfig
from rmt.tasks.text import TEXT_KINDS

BACKGROUND_KINDS = TEXT_KINDS  # the background is a text source (rmt.tasks.text)
AUX_LABELS = ("question_subject", "fact_subject")


@dataclass
class BackgroundConfig:
    """Where the haystack text comes from (see :func:`rmt.tasks.babilong.background.make_background`)."""

    kind: str = (
        "builtin"  # builtin (offline) | files (local .txt/.jsonl) | hf (datasets, e.g. PG19)
    )
    path: str | None = None  # .txt file or folder of them, for kind=files
    dataset: str | None = None  # kind=hf: Hub id (e.g. deepmind/pg19) or a save_to_disk folder
    split: str = "train"
    column: str = "text"
    max_docs: int | None = None


@dataclass
class BabilongStage(CurriculumStage):
    """A curriculum stage with its own story sizes (easier stories first)."""

    min_facts: int | None = None  # story size for this stage (None = task.min_facts)
    max_facts: int | None = None  # (None = task.max_facts)
    facts_before_last_segment: bool | None = None  # None = task.facts_before_last_segment


@dataclass
class BabilongTaskConfig(TaskConfig):
    """The BABILong training task: bAbI facts hidden in background text."""

    type: str = "babilong"
    name: str = "babilong_qa1"
    tasks: list[str] = field(default_factory=lambda: ["qa1"])
    source: str = "generated"  # generated (offline generator) | babi (bAbI .txt files) | babilong
    path: str | None = None  # babi: folder of .txt files; babilong: Hub id or local copy
    babilong_length: str = "0k"  # source=babilong: the pre-built length split, e.g. 0k, 4k
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    position: list[float] = field(default_factory=lambda: [0.0, 1.0])  # where facts may sit
    facts_before_last_segment: bool = False  # facts end before the question's segment
    min_facts: int | None = None  # fewest facts per story (generated: drawn; babi: filtered)
    max_facts: int | None = None  # most facts per story (generated: drawn; babi: filtered)
    scoring: str = "babilong"  # babilong (BABILong's published rule) | strict (rmt's corrections)
    # Training-only extra labels (validation is unchanged): question_subject labels the
    # question's last word (qa1: the person) with the answer; fact_subject labels each fact's
    # final token with the fact's first word (its subject). A dense binding signal.
    aux_labels: list[str] = field(default_factory=list)
    curriculum: list[BabilongStage] = field(default_factory=lambda: [BabilongStage(segments=[2])])
