"""bAbI / BABILong data: reader, offline generator, backgrounds, haystacks, formatting, scoring.

See docs/architecture.md ("Data") for the contract between these modules and the trainer.
"""

from rmt.data.babi import BabiFormatError, BabiSample, read_babi
from rmt.data.babilong import Haystack, HaystackBuilder, parse_length
from rmt.data.background import Background, BackgroundError, make_background
from rmt.data.dataset import BabilongDataset, BabilongTextDataset, CurriculumBatchSampler, collate
from rmt.data.format import ANSWER_MARKER, format_example
from rmt.data.generator import generate_sample
from rmt.data.hub import BabilongLoadError, load_babilong
from rmt.data.scoring import TASK_LABELS, compare_answers, exact_match
from rmt.data.tokenizer import build_tokenizer, load_tokenizer

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
    "CurriculumBatchSampler",
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
