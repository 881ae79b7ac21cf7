"""Documents -> token streams per split -> windows of any length, and loss by segment index.

Documents go to splits whole (about 10% validation, 10% test, at least one each, by a hash
rank, so the split of a document never depends on the others' order). A split's documents are
tokenized once and concatenated, each followed by eos, into one stream. A window of ``length``
tokens starts at the beginning of a piece of a document (documents longer than the window are
cut into ``length``-token pieces) and, when the document ends first, reads on into the next
ones (the stream wraps around), so every window has exactly ``length`` tokens. Which piece
window ``i`` reads is a hash of (seed, split, i): data is a pure function of those, as the
curriculum's resume contract needs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from rmt.errors import ConfigError
from rmt.modeling.segmentation import segment_bounds
from rmt.tasks.base import stable_int, tokenizer_key
from rmt.tasks.text import TextSourceError, builtin_documents, read_dataset, read_files

SPLITS = ("train", "validation", "test")
HELD_OUT = 0.1  # fraction of documents for validation, and again for test


def read_documents(source: DictConfig, builtin: DictConfig, seed: int) -> list[str]:
    """The documents of ``task.source`` (``task.builtin`` shapes the offline ones)."""
    if source.kind == "builtin":
        return list(
            builtin_documents(seed, builtin.num_docs, builtin.sentences, builtin.topic_size)
        )
    if source.kind == "files":
        return read_files(source.path, source.max_docs)
    return read_dataset(source.dataset, source.split, source.column, source.max_docs)


def split_documents(docs: Sequence[str]) -> dict[str, list[int]]:
    """Indices of the documents of each split; ConfigError when there are fewer than three."""
    if len(docs) < len(SPLITS):
        raise ConfigError(
            f"task.source gives {len(docs)} document(s); task=lm needs at least 3 (train, "
            "validation and test each get whole documents). Give more files (one document per "
            ".txt file) or rows, or raise task.source.max_docs."
        )
    order = sorted(range(len(docs)), key=lambda i: stable_int("lm-split", docs[i][:4096], i))
    held = max(1, int(len(docs) * HELD_OUT))
    return {
        "validation": sorted(order[:held]),
        "test": sorted(order[held : 2 * held]),
        "train": sorted(order[2 * held :]),
    }


@dataclass
class TokenStream:
    """A split's documents as one token array; ``starts``/``ends`` bound each document."""

    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    def window(self, key: int, length: int) -> np.ndarray:
        """``length`` tokens from the start of a piece of document ``key % docs`` (wrapping)."""
        doc = key % len(self.starts)
        pieces = max(1, math.ceil((self.ends[doc] - self.starts[doc]) / length))
        start = self.starts[doc] + (key // len(self.starts)) % pieces * length
        return np.take(self.ids, np.arange(start, start + length), mode="wrap")


def build_streams(docs: Sequence[str], tokenizer) -> dict[str, TokenStream]:
    """Tokenize every split once (eos after each document)."""
    eos = tokenizer.eos_token_id
    streams = {}
    for split, idx in split_documents(docs).items():
        encoded = tokenizer([docs[i] for i in idx], add_special_tokens=False)["input_ids"]
        pieces = [np.asarray([*ids, eos], dtype=np.int64) for ids in encoded]
        lengths = np.array([len(p) for p in pieces])
        ends = np.cumsum(lengths)
        streams[split] = TokenStream(np.concatenate(pieces), ends - lengths, ends)
    return streams


_STREAMS: dict[tuple, dict[str, TokenStream]] = {}  # (tokenizer, source, seed) -> streams


def shared_streams(tokenizer, cfg: DictConfig, seed: int) -> dict[str, TokenStream]:
    """The token streams of a task config, built once per process (at most two kept)."""
    source = OmegaConf.to_container(cfg.source, resolve=True)
    builtin = OmegaConf.to_container(cfg.builtin, resolve=True)
    key = (tokenizer_key(tokenizer), json.dumps([source, builtin], sort_keys=True), seed)
    if key not in _STREAMS:
        try:
            docs = read_documents(cfg.source, cfg.builtin, seed)
        except TextSourceError as err:
            raise ConfigError(f"task.source: {err}") from err
        if len(_STREAMS) >= 2:
            _STREAMS.pop(next(iter(_STREAMS)))
        _STREAMS[key] = build_streams(docs, tokenizer)
    return _STREAMS[key]


class LmWindows(Dataset):
    """``num_samples`` windows of a stream, indexed by ``(index, length)``."""

    def __init__(self, stream: TokenStream, *, split: str, num_samples: int, seed: int) -> None:
        self.stream, self.split, self.num_samples, self.seed = stream, split, num_samples, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, length = key
        ids = self.stream.window(stable_int("lm-window", self.seed, self.split, index), length)
        return {"input_ids": ids.tolist()}


def collate(items: Sequence[dict], pad_id: int) -> dict:
    """Right-padded ``input_ids``/``attention_mask``; ``labels`` = the tokens (-100 at pads)."""
    width = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, it in enumerate(items):
        row = torch.as_tensor(it["input_ids"], dtype=torch.long)
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def segment_losses(token_loss: torch.Tensor, labels: torch.Tensor, *, segment_size: int,
                   alignment: str = "left") -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Loss sums and predicted-token counts by segment index, ``[B, n_segments]`` each.

    A prediction belongs to the segment of the token that makes it (the backbone call that
    computes it): position t of a sample predicts token t+1. Batches are right-padded
    (``collate``), so a sample's position t is column t. Segment k is counted from the start of
    each sample; the columns of a sample with fewer segments stay 0.
    """
    predicts = torch.zeros_like(labels, dtype=torch.bool)
    predicts[:, :-1] = labels[:, 1:] != -100
    lengths = (labels != -100).sum(1).tolist()
    n_seg = math.ceil(labels.shape[1] / segment_size)
    index = torch.zeros_like(labels)
    for b, length in enumerate(lengths):
        for k, (start, end) in enumerate(segment_bounds(max(length, 1), segment_size, alignment)):
            index[b, start:end] = k
    sums = torch.zeros((labels.shape[0], n_seg), dtype=torch.float32, device=labels.device)
    counts = torch.zeros_like(sums)
    weight = predicts.float()
    sums.scatter_add_(1, index, token_loss.float() * weight)
    counts.scatter_add_(1, index, weight)
    return sums, counts


def perplexity_metrics(loss_sum: torch.Tensor, tokens: torch.Tensor) -> dict[str, float]:
    """``loss``/``perplexity`` over all predicted tokens, and ``loss_seg<k>``/``perplexity_seg<k>``
    by segment index (token-weighted: the segment values average back to the overall one)."""
    total, count = loss_sum.sum().item(), tokens.sum().item()
    loss = total / max(count, 1)
    metrics = {"loss": loss, "perplexity": math.exp(loss), "tokens": int(count)}
    for k, (s, n) in enumerate(zip(loss_sum.sum(0).tolist(), tokens.sum(0).tolist(), strict=True)):
        if n > 0:
            metrics[f"loss_seg{k}"] = s / n
            metrics[f"perplexity_seg{k}"] = math.exp(s / n)
    return metrics
