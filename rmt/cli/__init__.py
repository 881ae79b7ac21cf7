"""Console entrypoints (``rmt-train``, ``rmt-eval``, ``rmt-report``)."""

from __future__ import annotations

import os

from transformers.utils import logging as hf_logging


def quiet_library_bars() -> None:
    """Turn off the progress bars of transformers ("Loading weights", "Writing model shards")
    and datasets ("Generating train split"): they break rmt's own training and evaluation bars
    in the middle of a line, and an error must stay one line on stderr. rmt's bars remain."""
    hf_logging.disable_progress_bar()
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # read when datasets loads
