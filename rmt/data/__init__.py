"""The public import path of BABILong's data functions (``from rmt.data import generate_sample``).

The code lives in :mod:`rmt.tasks.babilong`; this module only re-exports it for users and
notebooks that import from ``rmt.data``.
"""

from rmt.tasks.babilong.babi import BabiFormatError, BabiSample, read_babi
from rmt.tasks.babilong.background import Background, BackgroundError, make_background
from rmt.tasks.babilong.dataset import BabilongDataset, BabilongTextDataset, collate
from rmt.tasks.babilong.format import ANSWER_MARKER, format_example
from rmt.tasks.babilong.generators import generate_sample
from rmt.tasks.babilong.haystack import Haystack, HaystackBuilder, parse_length
from rmt.tasks.babilong.published import BabilongLoadError, load_babilong
from rmt.tasks.babilong.scoring import TASK_LABELS, compare_answers, exact_match
from rmt.tasks.babilong.tokenizer import build_tokenizer, load_tokenizer

__all__ = [
    "ANSWER_MARKER",
    "TASK_LABELS",
    "BabiFormatError",
    "BabiSample",
    "Background",
    "BackgroundError",
    "BabilongDataset",
    "BabilongLoadError",
    "BabilongTextDataset",
    "Haystack",
    "HaystackBuilder",
    "build_tokenizer",
    "collate",
    "compare_answers",
    "exact_match",
    "format_example",
    "generate_sample",
    "load_babilong",
    "load_tokenizer",
    "make_background",
    "parse_length",
    "read_babi",
]
