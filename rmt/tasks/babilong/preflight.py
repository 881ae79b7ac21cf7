"""Checks that run before training, for every source: the samples fit their segments, and no
answer reads as ``<unk>``.

Each stage of the curriculum draws segment counts per batch; a sample whose facts overflow
its segments would silently grow the batch (the haystack builder returns the bare facts) or
crash on the first batch. So, before any step, the largest samples of each stage are built at
every segment count the stage allows: generated stories of the stage's most facts, the bAbI
stories with the most text among those ``min_facts``/``max_facts`` keep, and the longest
pre-built rows. A failure names the keys to change, with the largest ``max_facts`` that fits
when the stories come from files.
"""

from __future__ import annotations

from collections.abc import Sequence

from rmt.errors import ConfigError
from rmt.tasks.babilong.babi import BabiSample
from rmt.tasks.babilong.dataset import BabilongDataset
from rmt.tasks.babilong.generators import fact_range
from rmt.tasks.babilong.sources import within_facts
from rmt.tasks.babilong.tokenizer import unknown_words

PREFLIGHT_SAMPLES = 64  # largest samples built per stage and task
FIX = "Lower task.max_facts (or the stage's max_facts), raise segment.size, or use more segments."


def overflow(dataset, total: int) -> str | None:
    """Why some item of ``dataset`` does not fit ``total`` tokens, or None when all fit."""
    try:
        for index in range(len(dataset)):
            got = len(dataset[(index, total)]["input_ids"])
            if got > total:  # the builder returns bare facts when they overflow
                return f"the sample needs {got} > {total} tokens"
    except ValueError as err:  # facts cannot end before the question's segment
        return str(err)
    return None


def check_generated(task, i: int, stage, name: str) -> None:
    """Stories of the stage's largest size for ``name`` fit every segment count."""
    try:
        _, most = fact_range(name, *task.facts(stage))
    except ValueError as err:
        raise ConfigError(f"task.min_facts/max_facts for {name}: {err}") from err
    worst = _dataset(
        task, stage, name, num_samples=PREFLIGHT_SAMPLES, min_facts=most, max_facts=most
    )
    for n in sorted(set(stage.segments)):
        why = overflow(worst, n * task.segment_size)
        if why:
            raise ConfigError(
                f"task.curriculum[{i}] with {n} segment(s) of segment.size={task.segment_size}: "
                f"{name} stories of {most} facts do not fit ({why}). {FIX}"
            )


def check_stories(task, i: int, stage, name: str, stories: Sequence[BabiSample]) -> None:
    """The bAbI stories of ``name`` kept by the stage's bounds exist and fit every segment
    count; otherwise name the largest ``max_facts`` that fits."""
    low, high = task.facts(stage)
    kept = within_facts([s for s in stories if s.task == name], low, high)
    if not kept:
        raise ConfigError(_none_kept(task, i, stage, name, stories))
    for n in sorted(set(stage.segments)):
        total = n * task.segment_size
        why = overflow(_largest(task, stage, name, kept), total)
        if why:
            fits = _largest_fitting(task, stage, name, kept, total)
            hint = f"task.max_facts={fits} fits" if fits else "no story size fits"
            raise ConfigError(
                f"task.curriculum[{i}] with {n} segment(s) of segment.size={task.segment_size}: "
                f"{name} stories of task.path (up to {max(len(s.facts) for s in kept)} facts) "
                f"do not fit ({why}); {hint}. {FIX}"
            )


def _none_kept(task, i: int, stage, name: str, stories: Sequence[BabiSample]) -> str:
    """Why the stage keeps no story, with the bound to change (the stage's own key, if set)."""
    low, high = task.facts(stage)
    sizes = sorted(len(s.facts) for s in stories if s.task == name)
    if not sizes:
        return f"task.path={task.cfg.path} has no {name} story; give the files of task.tasks."
    keys = {
        bound: f"task.curriculum.{i}.{bound}" if getattr(stage, bound) is not None else
        f"task.{bound}" for bound in ("min_facts", "max_facts")
    }  # fmt: skip
    fix = (
        f"set {keys['max_facts']}={sizes[0]} or more"
        if high is not None and high < sizes[0]
        else f"set {keys['min_facts']}={sizes[-1]} or less"
    )
    return (
        f"task.curriculum[{i}]: min_facts/max_facts={low}/{high} keep none of the {len(sizes)} "
        f"{name} stories in task.path={task.cfg.path} (they have {sizes[0]} to {sizes[-1]} "
        f"facts); {fix}."
    )


def check_rows(i: int, stage, dataset, segment_size: int) -> None:
    """Pre-built rows bring their own length: the longest must not need more segments than
    the stage allows."""
    longest = max((len(dataset[index]["input_ids"]) for index in range(len(dataset))), default=0)
    needed = -(-longest // segment_size)
    if needed > max(stage.segments):
        raise ConfigError(
            f"task.curriculum[{i}] allows at most {max(stage.segments)} segment(s) of "
            f"segment.size={segment_size}, but the longest pre-built row has {longest} tokens "
            f"({needed} segments); set the stage's segments to [{needed}], raise segment.size, "
            "or use a shorter task.babilong_length."
        )


def check_answers(tokenizer, answers: dict[str, set[str]]) -> None:
    """No answer of any task contains a word the tokenizer reads as ``<unk>``."""
    for name, texts in answers.items():
        unknown = sorted(unknown_words(texts, tokenizer))
        if unknown:
            raise ConfigError(
                f"{name} answers contain words the tokenizer reads as <unk>: {unknown[:10]}; "
                "the model could never write them. Use a tokenizer that covers them (leave "
                "backbone.tokenizer unset with a tiny backbone: the offline tokenizer is built "
                "from the run's bAbI data)."
            )


def _dataset(task, stage, name, *, num_samples: int, min_facts=None, max_facts=None, samples=None):
    cfg = task.cfg
    return BabilongDataset(
        name, split="validation", num_samples=num_samples, tokenizer=task.tokenizer,
        builder=task.builder, seed=task.seed, position=tuple(cfg.position),
        facts_end_from_end=task.facts_end(stage), min_facts=min_facts, max_facts=max_facts,
        samples=samples, with_answer=task.with_answer,
    )  # fmt: skip


def _largest(task, stage, name: str, stories: Sequence[BabiSample], count: int = PREFLIGHT_SAMPLES
             ) -> BabilongDataset:  # fmt: skip
    """The ``count`` stories with the most text (characters track tokens closely in bAbI)."""
    worst = sorted(stories, key=lambda s: sum(map(len, s.facts)) + len(s.question), reverse=True)
    worst = worst[:count]
    return _dataset(task, stage, name, num_samples=len(worst), samples=worst)


def _largest_fitting(
    task, stage, name: str, stories: Sequence[BabiSample], total: int
) -> int | None:
    """The largest story size such that every kept story up to it fits ``total`` tokens."""
    best = None
    for size in sorted({len(s.facts) for s in stories}):
        upto = [s for s in stories if len(s.facts) == size]
        if overflow(_largest(task, stage, name, upto, count=4), total):
            return best
        best = size
    return best
