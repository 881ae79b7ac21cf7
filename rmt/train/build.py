"""Config -> the objects a run is made of: tokenizer, model, task, optimizer, accelerator.

Instantiation only, no training logic: pure functions of the (typed) config, so a checkpoint's
``config.yaml`` rebuilds exactly what was trained. Model code never sees Hydra; it gets plain
keyword arguments from here. Model construction and the "does it have memory" question each go
through :mod:`rmt.modeling.factory` (:func:`build_model` here only maps the config onto it).
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from hydra.utils import instantiate
from omegaconf import DictConfig

from rmt.config.schema import memory_kwargs
from rmt.modeling.backbones import (
    ENCODER_FAMILIES,
    load_backbone,
    tiny_backbone_config,
    tiny_encoder_config,
)
from rmt.modeling.factory import backbone_auto_class
from rmt.modeling.factory import build_model as build_rmt
from rmt.tasks.babilong.tokenizer import load_tokenizer
from rmt.tasks.base import Task, build_task, task_class
from rmt.train import trackers


def build_tokenizer(cfg: DictConfig):
    """The task's offline tokenizer for tiny backbones, else the pretrained one."""
    name = cfg.backbone.tokenizer or cfg.backbone.pretrained
    if name is None:
        return task_class(cfg.task.type).offline_tokenizer(cfg.task)
    return load_tokenizer(name)


def rmt_kwargs(cfg: DictConfig) -> dict:
    """RMT model settings (``RMTConfig`` fields) from the memory/segment/bptt groups."""
    return {
        **memory_kwargs(cfg.memory),
        "segment_size": cfg.segment.size,
        "segment_alignment": cfg.segment.alignment,
        "bptt_depth": cfg.bptt.depth,
        "segment_checkpointing": cfg.segment.checkpointing,
        "checkpointing_budget": cfg.segment.checkpointing_budget,
    }


def build_model(cfg: DictConfig, tokenizer, *, head: str | None = None, **head_kwargs):
    """A tiny random backbone (``backbone.pretrained=null``) or a pretrained one, wrapped in RMT.

    ``head`` is a name in ``rmt.modeling.factory.HEADS`` (default: the one the task trains, with
    the fields the task's ``model_kwargs`` gives, e.g. a classifier's labels); ``head_kwargs``
    are further ``RMTConfig`` fields.
    """
    if head is None:
        head = task_class(cfg.task.type).head
        head_kwargs = {**task_class(cfg.task.type).model_kwargs(cfg), **head_kwargs}
    bb = cfg.backbone
    kwargs = {**rmt_kwargs(cfg), **head_kwargs}
    if bb.pretrained is None:
        sizes = dict(
            vocab_size=len(tokenizer), hidden_size=bb.hidden_size, num_layers=bb.num_layers,
            num_heads=bb.num_heads, intermediate_size=bb.intermediate_size,
            max_positions=tiny_positions(cfg), dropout=bb.dropout,
        )  # fmt: skip
        if bb.family in ENCODER_FAMILIES:
            backbone_config = tiny_encoder_config(
                bb.family, pad_token_id=tokenizer.pad_token_id, **sizes
            )
        else:
            backbone_config = tiny_backbone_config(
                bb.family, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, **sizes,
            )  # fmt: skip
        return build_rmt(backbone_config=backbone_config, head=head, **kwargs)
    dtype = getattr(torch, bb.dtype) if bb.dtype else None
    backbone = load_backbone(bb.pretrained, dtype=dtype, auto_class=backbone_auto_class(head))
    if len(tokenizer) > backbone.get_input_embeddings().weight.shape[0]:
        backbone.resize_token_embeddings(len(tokenizer))
    return build_rmt(backbone=backbone, head=head, **kwargs)


def tiny_positions(cfg: DictConfig) -> int:
    """Position limit of a random backbone: ``backbone.max_positions``, or (null) exactly what a
    segment with its memory needs, so any ``segment.size`` and ``memory.num_tokens`` fit."""
    bb = cfg.backbone
    return bb.max_positions or cfg.segment.size + 2 * cfg.memory.num_tokens


def task_for(cfg: DictConfig, tokenizer) -> Task:
    """The run's task (``task.type`` picks the registered class)."""
    return build_task(cfg.task, tokenizer=tokenizer, segment_size=cfg.segment.size,
                      seed=cfg.trainer.seed)  # fmt: skip


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only; biases and norm weights (1-D) are not decayed."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise ValueError(
            "the model has no trainable parameter: with memory.freeze_backbone=true give "
            "memory.num_tokens > 0 or enable memory.lora."
        )
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``optim._target_`` (AdamW by default) over the trainable parameters."""
    opt = cfg.optim
    factory = instantiate(
        {"_target_": opt._target_, "lr": opt.lr, "betas": tuple(opt.betas), "eps": opt.eps},
        _partial_=True,
    )
    return factory(param_groups(model, opt.weight_decay))


def resolve_precision(mode: str) -> str:
    """``auto`` -> bf16 on GPUs that support it, else full precision (CPU autocast is slow)."""
    if mode != "auto":
        return mode
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def make_accelerator(cfg: DictConfig) -> Accelerator:
    has_device = torch.cuda.is_available() or (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    )
    return Accelerator(
        cpu=not has_device,  # `accelerate launch --multi_gpu` on a CPU machine: gloo processes
        mixed_precision=resolve_precision(cfg.trainer.mixed_precision),
        gradient_accumulation_steps=cfg.trainer.grad_accum,
        **trackers.accelerator_kwargs(cfg),  # trainer.log_with (none by default)
    )
