"""Config -> tokenizer, model and data: the glue shared by ``rmt-train`` and ``rmt-eval``.

Pure functions of the (typed) config, so a checkpoint's ``config.yaml`` rebuilds exactly what
was trained. Model code never sees Hydra; it gets plain keyword arguments from here.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

FRESH_CHUNK_BATCHES = 1000  # fresh-sample mode: batches per "epoch" of newly generated stories
PREFLIGHT_SAMPLES = 64  # largest-story samples built per stage before training


# ------------------------------------------------------------------------------- model side
def build_tokenizer(cfg: DictConfig):
    """The offline word-level tokenizer for tiny backbones, else the pretrained one."""
    from rmt.data.tokenizer import build_tokenizer as offline_tokenizer
    from rmt.data.tokenizer import load_tokenizer

    name = cfg.backbone.tokenizer or cfg.backbone.pretrained
    return offline_tokenizer() if name is None else load_tokenizer(name)


def rmt_kwargs(cfg: DictConfig) -> dict:
    """RMT model settings (``RMTConfig`` fields) from the memory/segment/bptt groups."""
    lora = cfg.memory.lora
    return {
        "num_mem_tokens": cfg.memory.num_tokens,
        "segment_size": cfg.segment.size,
        "segment_alignment": cfg.segment.alignment,
        "bptt_depth": cfg.bptt.depth,
        "segment_checkpointing": cfg.segment.checkpointing,
        "freeze_backbone": cfg.memory.freeze_backbone,
        "lora": (
            {
                "r": lora.r,
                "alpha": lora.alpha,
                "dropout": lora.dropout,
                "target_modules": list(lora.target_modules) if lora.target_modules else None,
            }
            if lora.enabled
            else None
        ),
    }


def build_model(cfg: DictConfig, tokenizer):
    """A tiny random backbone (``backbone.pretrained=null``) or a pretrained one, wrapped in RMT."""
    from rmt.modeling.backbones import load_backbone, tiny_backbone_config
    from rmt.modeling.factory import build_model as build_rmt

    bb = cfg.backbone
    if bb.pretrained is None:
        backbone_config = tiny_backbone_config(
            bb.family,
            vocab_size=len(tokenizer),
            hidden_size=bb.hidden_size,
            num_layers=bb.num_layers,
            num_heads=bb.num_heads,
            intermediate_size=bb.intermediate_size,
            max_positions=bb.max_positions,
            dropout=bb.dropout,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
        return build_rmt(backbone_config=backbone_config, **rmt_kwargs(cfg))
    dtype = getattr(torch, bb.dtype) if bb.dtype else None
    backbone = load_backbone(bb.pretrained, dtype=dtype)
    if len(tokenizer) > backbone.get_input_embeddings().weight.shape[0]:
        backbone.resize_token_embeddings(len(tokenizer))
    return build_rmt(backbone=backbone, **rmt_kwargs(cfg))


# -------------------------------------------------------------------------------- data side
class _IndexOnly(Dataset):
    """Pre-built samples have their own length: drop the sampler's requested length."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.dataset[key[0] if isinstance(key, tuple) else key]


def _babi_files(folder: Path, task: str, split: str) -> list[Path]:
    suffix = {"train": "train", "validation": "test"}[split]
    files = sorted(folder.glob(f"{task}_*_{suffix}.txt"))
    if not files:
        raise FileNotFoundError(
            f"task.path={str(folder)!r} has no {task}_*_{suffix}.txt file; give the folder "
            "of the bAbI files (e.g. tasks_1-20_v1-2/en-10k)."
        )
    return files


class TaskData:
    """Builds the train/validation loaders of the configured task for any curriculum stage.

    Data order is a pure function of (seed, stage, epoch, batch index): fresh-sample mode
    generates new stories for every chunk of batches, a fixed training set is reshuffled every
    epoch. Loaders get their own generator so they never draw from the global RNG.
    """

    def __init__(self, cfg: DictConfig, tokenizer) -> None:
        from rmt.data.babilong import HaystackBuilder
        from rmt.data.background import make_background
        from rmt.data.dataset import collate

        self.cfg, self.tokenizer = cfg, tokenizer
        task = cfg.task
        self.collate = functools.partial(collate, pad_id=tokenizer.pad_token_id)
        self.facts_end = cfg.segment.size if task.facts_before_last_segment else None
        bg = task.background
        self.builder = None
        if task.source != "hub":
            background = make_background(
                kind=bg.kind,
                path=bg.path,
                dataset=bg.dataset,
                split=bg.split,
                column=bg.column,
                max_docs=bg.max_docs,
                seed=cfg.trainer.seed,
            )
            self.builder = HaystackBuilder(tokenizer, background)
        self._fixed: dict[str, list] = {}

    # ------------------------------------------------------------------ datasets
    def _samples(self, split: str):
        """bAbI samples of a local copy (source=local), or None for the generator."""
        task = self.cfg.task
        if task.source != "local":
            return None
        if split not in self._fixed:
            from rmt.data.babi import read_babi

            samples = []
            for name in task.tasks:
                for path in _babi_files(Path(task.path), name, split):
                    samples += read_babi(path, task=name)
            self._fixed[split] = samples
        return self._fixed[split]

    def _hub_rows(self, split: str) -> Dataset:
        """Pre-built BABILong rows; the first valid_samples rows per task are held out."""
        from torch.utils.data import ConcatDataset

        from rmt.data.dataset import BabilongTextDataset
        from rmt.data.hub import load_babilong

        task = self.cfg.task
        parts = []
        for name in task.tasks:
            rows = load_babilong(task.path, length=task.babilong_length, task=name)
            n_valid = min(task.valid_samples, len(rows) // 2)
            keep = range(n_valid) if split == "validation" else range(n_valid, len(rows))
            parts.append(BabilongTextDataset(rows.select(keep), self.tokenizer, name))
        return _IndexOnly(ConcatDataset(parts))

    def dataset(self, split: str, *, seed: int, num_samples: int | None, stage: int = -1):
        """A BabilongDataset of ``split`` (train/validation) with the stage's story sizes."""
        from rmt.data.dataset import BabilongDataset

        task = self.cfg.task
        if task.source == "hub":
            return self._hub_rows(split)
        stage_cfg = task.curriculum[stage]
        samples = self._samples(split)
        if samples is not None:
            num_samples = min(num_samples or len(samples), len(samples))
        return BabilongDataset(
            list(task.tasks),
            split=split,
            num_samples=num_samples,
            tokenizer=self.tokenizer,
            builder=self.builder,
            total_length=self.cfg.segment.size,  # replaced per batch by the sampler
            seed=seed,
            position=tuple(task.position),
            facts_end_from_end=self.facts_end,
            min_facts=_first(stage_cfg.min_facts, task.min_facts),
            max_facts=_first(stage_cfg.max_facts, task.max_facts),
            samples=samples,
        )

    def preflight(self) -> None:
        """Fail before training when the longest generated stories cannot fit their segments.

        Builds, for every stage and segment count, a few samples with the largest number of
        facts the stage allows, so a config whose facts overflow the room before the question
        (or before the last segment) stops now, naming the keys to change.
        """
        from rmt.config.schema import ConfigError
        from rmt.data.dataset import BabilongDataset
        from rmt.data.generator import fact_range

        task = self.cfg.task
        if task.source != "generated":
            return
        for i, stage in enumerate(task.curriculum):
            lo_cfg = _first(stage.min_facts, task.min_facts)
            hi_cfg = _first(stage.max_facts, task.max_facts)
            for name in task.tasks:
                try:
                    _, most = fact_range(name, lo_cfg, hi_cfg)
                except ValueError as err:
                    raise ConfigError(f"task.min_facts/max_facts for {name}: {err}") from err
                worst = BabilongDataset(
                    name, split="validation", num_samples=PREFLIGHT_SAMPLES, tokenizer=self.tokenizer,
                    builder=self.builder, total_length=self.cfg.segment.size,
                    seed=self.cfg.trainer.seed, position=tuple(task.position),
                    facts_end_from_end=self.facts_end, min_facts=most, max_facts=most,
                )  # fmt: skip
                for n in sorted(set(stage.segments)):
                    total = n * self.cfg.segment.size
                    try:
                        for index in range(len(worst)):
                            got = len(worst[(index, total)]["input_ids"])
                            if got > total:  # the builder returns bare facts when they overflow
                                raise ValueError(f"the sample needs {got} > {total} tokens")
                    except ValueError as err:
                        raise ConfigError(
                            f"task.curriculum[{i}] with {n} segment(s) of segment.size="
                            f"{self.cfg.segment.size}: {name} stories of {most} facts do not fit "
                            f"({err}). Lower task.max_facts (or the stage's max_facts), raise "
                            "segment.size, or use more segments."
                        ) from err

    # ------------------------------------------------------------------ loaders
    def train_loader(self, stage: int, *, epoch: int, batch_size: int) -> DataLoader:
        """Training batches of ``stage``: segment counts drawn per batch by the curriculum."""
        from rmt.data.dataset import CurriculumBatchSampler
        from rmt.data.generator import stable_int

        cfg, task = self.cfg, self.cfg.task
        stage_cfg = task.curriculum[stage]
        fresh = task.train_samples is None and task.source == "generated"
        if fresh:  # new stories in every chunk: the seed changes, the sampler makes one pass
            seed = stable_int("train-chunk", cfg.trainer.seed, stage, epoch) >> 1
            num_samples = batch_size * FRESH_CHUNK_BATCHES
        else:
            seed, num_samples = cfg.trainer.seed, task.train_samples
        dataset = self.dataset("train", seed=seed, num_samples=num_samples, stage=stage)
        sampler = CurriculumBatchSampler(
            len(dataset),
            batch_size,
            list(stage_cfg.segments),
            cfg.segment.size,
            max_ratio=stage_cfg.max_ratio,
            seed=stable_int("train-order", cfg.trainer.seed, stage) >> 1,
            drop_last=True,
        )
        sampler.set_epoch(epoch)
        return self._loader(dataset, batch_sampler=sampler)

    def valid_loader(self, stage: int, *, batch_size: int) -> DataLoader:
        """The validation set at the stage's longest input (its own stories, fixed)."""
        cfg, task = self.cfg, self.cfg.task
        stage_cfg = task.curriculum[stage]
        dataset = self.dataset(
            "validation", seed=cfg.trainer.seed, num_samples=task.valid_samples, stage=stage
        )
        total = max(stage_cfg.segments) * cfg.segment.size
        sampler = _FixedLengthBatches(len(dataset), batch_size, total)
        return self._loader(dataset, batch_sampler=sampler)

    def _loader(self, dataset: Dataset, *, batch_sampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=self.collate,
            num_workers=self.cfg.trainer.num_workers,
            generator=torch.Generator().manual_seed(self.cfg.trainer.seed),
        )


class _FixedLengthBatches:
    """Validation batches in index order, every sample at the same total length."""

    def __init__(self, num_samples: int, batch_size: int, total_length: int) -> None:
        self.num_samples, self.batch_size, self.total_length = num_samples, batch_size, total_length

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def __iter__(self):
        for start in range(0, self.num_samples, self.batch_size):
            stop = min(start + self.batch_size, self.num_samples)
            yield [(i, self.total_length) for i in range(start, stop)]


def _first(*values):
    return next((v for v in values if v is not None), None)
