"""Evaluation samples for one (task, length) cell, built lazily from the configured source.

``generated`` samples come from :class:`rmt.data.dataset.BabilongDataset` on the ``test``
split (stories never seen in training or validation), seeded so that two evaluations, and
two checkpoints in one evaluation, score the same stories with the facts at the same places.
Sample ``i`` is the same story at every length, so a row of the heatmap follows the same
questions as the haystack grows. ``local``/``hub`` samples are the published BABILong rows
(``RMT-team/babilong`` or a local copy), formatted exactly like training data.

Items are yielded one at a time and never cached here: a 1M-token prompt exists only while
its batch is being scored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from rmt.eval.evaluate import EvalItem

DEFAULT_HUB_ID = "RMT-team/babilong"


def item_factory(
    data_cfg: DictConfig,
    *,
    tokenizer,
    background: DictConfig | dict | None,
    position: list[float],
    samples: int,
    seed: int,
    background_seed: int = 0,
) -> Callable[[str, str, int], Iterator[EvalItem]]:
    """A ``(task, length_label, length_tokens) -> items`` function for :func:`evaluate_model`."""
    source = data_cfg.source
    if source == "generated":
        builder = _haystack_builder(tokenizer, background, background_seed)

        def generated(task: str, label: str, tokens: int) -> Iterator[EvalItem]:
            from rmt.data.dataset import BabilongDataset

            dataset = BabilongDataset(
                task,
                split=data_cfg.split,
                num_samples=samples,
                tokenizer=tokenizer,
                builder=builder,
                length=tokens,
                seed=seed,
                position=tuple(position),
            )
            for index in range(len(dataset)):
                yield _item(dataset[index], index)

        return generated

    if source in ("local", "hub"):
        name = data_cfg.path or DEFAULT_HUB_ID

        def published(task: str, label: str, tokens: int) -> Iterator[EvalItem]:
            from rmt.data.dataset import BabilongTextDataset
            from rmt.data.hub import load_babilong

            rows = load_babilong(name, length=label, task=task)
            if len(rows) < samples:
                # fewer published rows than asked: score them all, the table shows n
                count = len(rows)
            else:
                count = samples
            if hasattr(rows, "select"):
                rows = rows.select(range(count))
            else:
                rows = rows[:count]
            dataset = BabilongTextDataset(rows, tokenizer, task)
            for index in range(len(dataset)):
                yield _item(dataset[index], index)

        return published

    raise ValueError(f"data.source={source!r}: unknown; use generated, local or hub.")


def _item(example: dict, index: int) -> EvalItem:
    # one int64 tensor (8 bytes a token) instead of a Python list (about 36): at 1M tokens the
    # prompt is the only thing in evaluation whose size follows the input
    prompt = torch.tensor(example["input_ids"][: example["prompt_length"]], dtype=torch.long)
    return EvalItem(
        task=example["task"],
        index=index,
        prompt_ids=prompt,
        target=example["target"],
        question=example["question"],
    )


_BUILDERS: dict[tuple, object] = {}  # (tokenizer, background, seed) -> HaystackBuilder


def _haystack_builder(tokenizer, background, seed: int):
    """Tokenize the background once per tokenizer; it is shared by every cell.

    ``seed`` picks the builtin background text; the trainer uses its ``trainer.seed``, so the
    default evaluation hides facts in the same kind of text the model was trained on. Builders
    are cached for the process: comparing checkpoints that share a tokenizer (the usual case)
    tokenizes the background once.
    """
    import json

    from rmt.data.babilong import HaystackBuilder
    from rmt.data.background import make_background

    if background is None:
        bg_kwargs: dict = {"kind": "builtin"}
    elif isinstance(background, DictConfig):
        bg_kwargs = OmegaConf.to_container(background, resolve=True)
    else:
        bg_kwargs = dict(background)
    key = (_tokenizer_key(tokenizer), json.dumps(bg_kwargs, sort_keys=True), seed)
    if key not in _BUILDERS:
        if len(_BUILDERS) >= 2:
            _BUILDERS.pop(next(iter(_BUILDERS)))
        _BUILDERS[key] = HaystackBuilder(tokenizer, make_background(**bg_kwargs, seed=seed))
    return _BUILDERS[key]


def _tokenizer_key(tokenizer) -> str:
    """Identity of a tokenizer's vocabulary and rules (two loads of one tokenizer are equal)."""
    import hashlib

    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha1(text.encode()).hexdigest()
