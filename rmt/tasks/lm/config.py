"""The schema of ``task`` for language modelling (``task.type=lm``), owned by this package.

Registered in Hydra's ConfigStore as ``task/base_lm`` by :mod:`rmt.config.schema`, so
``rmt/conf/task/lm.yaml`` extends it and a typo fails at compose time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rmt.tasks.base import CurriculumStage, TaskConfig
from rmt.tasks.text import TextSourceConfig


@dataclass
class BuiltinDocsConfig:
    """Shape of the offline documents of ``source.kind=builtin`` (see ``text.builtin_documents``)."""

    num_docs: int = 400  # documents in all (about 10% each go to validation and test)
    sentences: int = 60  # sentences per document (about 12 tokens each)
    topic_size: int = 12  # nouns in a document's own lexicon: the repetition memory can carry


@dataclass
class LmTaskConfig(TaskConfig):
    """Next-token prediction on windows of ``n * segment.size`` tokens cut from documents."""

    type: str = "lm"
    name: str = "lm"
    source: TextSourceConfig = field(default_factory=TextSourceConfig)
    builtin: BuiltinDocsConfig = field(default_factory=BuiltinDocsConfig)
    valid_samples: int = 64  # validation windows, at the stage's longest input
    curriculum: list[CurriculumStage] = field(
        default_factory=lambda: [
            CurriculumStage(segments=[1, 2], steps=200),
            CurriculumStage(segments=[1, 2, 3, 4]),
        ]  # fmt: skip
    )
