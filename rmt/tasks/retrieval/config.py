"""The schema of ``task`` for associative retrieval (``task.type=retrieval``).

Registered in Hydra's ConfigStore as ``task/base_retrieval`` by :mod:`rmt.config.schema`, so
``rmt/conf/task/retrieval.yaml`` extends it and a typo fails at compose time. The rules that
tie keys together (pairs vs key symbols, pairs vs segments) are in
:meth:`rmt.tasks.retrieval.task.RetrievalTask.check_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rmt.tasks.base import CurriculumStage, TaskConfig


@dataclass
class RetrievalStage(CurriculumStage):
    """A curriculum stage with its own number of pairs (fewer pairs first)."""

    num_pairs: int | None = None  # pairs per sample in this stage (None = task.num_pairs)


@dataclass
class RetrievalTaskConfig(TaskConfig):
    """N distinct key->value pairs ``k v ;`` in the leading segments, ``? k`` in the last one.

    A sample with n segments writes its pairs ``pairs_per_segment`` at a time into the first
    segments (the rest is filler), so it needs ``n >= ceil(N / pairs_per_segment) + 1``.
    """

    type: str = "retrieval"
    name: str = "retrieval"
    num_pairs: int = 8  # N: pairs stored per sample
    pairs_per_segment: int = 4  # pairs written into one segment (3 tokens each)
    key_vocab: int = 64  # K: key symbols (N distinct keys are drawn from them)
    value_vocab: int = 64  # V: value symbols (drawn with replacement)
    # training aids (rmt.tasks.retrieval.sample): pairs follow each batch's segment count
    # ((segments - 1) x pairs_per_segment, at most N), and this fraction of training samples asks
    # for the key of a given value instead (validation and rmt-eval ask forward only)
    vary_pairs: bool = False
    reverse_queries: float = 0.0
    curriculum: list[RetrievalStage] = field(default_factory=lambda: [RetrievalStage(segments=[3])])
