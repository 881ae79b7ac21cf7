"""What the training loop does differently when Accelerate shards the model (FSDP2, DeepSpeed).

The engine is chosen outside rmt, by ``accelerate launch`` (``--use_fsdp --fsdp_version 2`` or
``--use_deepspeed --zero_stage 2``); the :class:`~rmt.train.trainer.Trainer` stays engine-agnostic and calls these four
functions at the places where a sharded model needs other code than DDP:

- :func:`shard` makes the whole model one FSDP2 unit before the optimizer is built. RMT runs the
  backbone once per segment, and ranks hold batches with different numbers of segments; a unit
  per layer (or Accelerate's own split of the embeddings and the LM head) would gather weights
  once per call, so ranks would run different collectives and hang. One unit gathers once per
  step, whatever the segment count;
- :func:`check_engine` refuses set-ups that would hang or are not supported, before any compute;
- :func:`full_weights` makes every parameter whole for validation, because generation runs the
  segment loop and ``backbone.generate`` directly (not the root ``forward`` FSDP hooks into), and
  ranks generate for different lengths, which per-forward collectives could not follow;
- :func:`consolidated_state_dict` gathers the full weights for ``best/`` (on every rank; the
  main process then writes one ``save_pretrained`` folder, loadable without Accelerate);
- :func:`load_weights` puts a full state dict (the previous curriculum stage's best) back into
  sharded parameters; :func:`reset_optimizer` starts the stage's optimizer afresh.

``last/`` needs nothing here: ``accelerator.save_state`` writes the engine's own sharded state
(FSDP: ``torch.distributed.checkpoint`` folders; DeepSpeed: ZeRO partitions) and
``load_state`` reads it back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from accelerate.utils import DistributedType

from rmt.errors import ConfigError


def _engine(accelerator) -> str:
    """``fsdp``, ``deepspeed`` or ``ddp`` (plain data parallel or one process)."""
    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return "fsdp"
    if kind == DistributedType.DEEPSPEED:
        return "deepspeed"
    return "ddp"


def check_engine(accelerator, batch_size: int) -> None:
    """Refuse engine settings rmt cannot train with (the message names the fix); complete the
    DeepSpeed config with the per-process micro-batch size ``batch_size``."""
    engine = _engine(accelerator)
    if engine == "fsdp":
        plugin = accelerator.state.fsdp_plugin
        if plugin.fsdp_version != 2:
            raise ConfigError(
                f"FSDP version {plugin.fsdp_version}: rmt supports FSDP2 only; launch with "
                "`accelerate launch --use_fsdp --fsdp_version 2 ...`."
            )
        if plugin.auto_wrap_policy is not None:
            raise ConfigError(
                "FSDP auto-wrap splits the backbone into units that gather their weights on "
                "every call, and RMT calls each layer once per segment, a number that differs "
                "between ranks (hang). Launch with `--fsdp_auto_wrap_policy NO_WRAP`: rmt "
                "shards the whole model as one unit, gathered once per step."
            )
    if engine == "deepspeed":
        plugin = accelerator.state.deepspeed_plugin
        # rmt prepares model and optimizer before its data loaders, so DeepSpeed cannot read
        # the micro-batch size from a loader: give it trainer.batch_size
        ds = plugin.deepspeed_config
        if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            ds["train_micro_batch_size_per_gpu"] = batch_size
        stage = plugin.zero_stage
        if stage == 3:
            raise ConfigError(
                "DeepSpeed ZeRO-3 gathers weights per layer call, which the per-segment loop "
                "cannot keep in step across ranks; use --zero_stage 2 (or FSDP2 with NO_WRAP)."
            )


def shard(accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: shard the model as one unit (Accelerate's ``prepare`` then leaves it as it is)."""
    if _engine(accelerator) != "fsdp":
        return model
    from torch.distributed.fsdp import (  # lazy: FSDP runs only, seconds to import
        MixedPrecisionPolicy,
        fully_shard,
    )

    plugin = accelerator.state.fsdp_plugin
    return fully_shard(
        model,
        reshard_after_forward=plugin.reshard_after_forward,
        mp_policy=plugin.mixed_precision_policy or MixedPrecisionPolicy(),
        offload_policy=plugin.cpu_offload,
    )


@contextmanager
def full_weights(accelerator, model) -> Iterator[None]:
    """Whole (unsharded) parameters inside the block, on every rank; sharded again after.

    FSDP2 only; DDP and ZeRO-2 keep whole parameters on every rank already. The root unit is
    kept unsharded through its own forward calls, so forward and generation can alternate.
    """
    if _engine(accelerator) != "fsdp":
        yield
        return
    reshard = accelerator.state.fsdp_plugin.reshard_after_forward
    model.set_reshard_after_forward(False)
    model.unshard()
    try:
        yield
    finally:
        model.reshard()
        model.set_reshard_after_forward(reshard)


def consolidated_state_dict(accelerator, model) -> dict[str, torch.Tensor] | None:
    """Full weights for ``save_pretrained``: call on every rank (a collective when sharded).

    ``None`` when the unwrapped model's own ``state_dict`` is already whole (DDP, one process).
    """
    if _engine(accelerator) == "ddp":
        return None
    weights = accelerator.get_state_dict(model)
    # gathered copies no longer share storage: drop the tied duplicates (GPT-2's lm_head), as
    # save_pretrained does for the model's own state dict
    seen, tied = set(), set()
    for name, param in accelerator.unwrap_model(model).named_parameters(remove_duplicate=False):
        if id(param) in seen:
            tied.add(name)
        seen.add(id(param))
    return {k: v for k, v in weights.items() if k not in tied}


def load_weights(accelerator, model, weights: dict[str, Any]) -> None:
    """Load a full state dict (e.g. ``from_pretrained(best).state_dict()``) on every rank."""
    if _engine(accelerator) != "fsdp":
        accelerator.unwrap_model(model).load_state_dict(weights)
        return
    from torch.distributed.tensor import distribute_tensor  # lazy: FSDP runs only, slow import

    # in place: the optimizer holds these very parameter objects (a load that assigns new ones,
    # as torch's set_model_state_dict does for full state dicts, leaves it updating stale copies)
    with torch.no_grad():
        for name, shard_ in model.state_dict().items():
            full = weights[name].to(shard_.dtype)
            if hasattr(shard_, "device_mesh"):  # every rank holds the full tensor: no scatter
                full = distribute_tensor(full, shard_.device_mesh, shard_.placements,
                                         src_data_rank=None)  # fmt: skip
            shard_.copy_(full)


def reset_optimizer(optimizer) -> None:
    """Fresh optimizer moments (a new curriculum stage), for every engine.

    The state is zeroed in place, not cleared: torch's sharded optimizer ``state_dict`` (FSDP's
    ``save_state``) fills an empty state with one fake step, which would make the stage's first
    real step Adam's second. Zeroed moments and step count are exactly a fresh AdamW (and SGD).
    """
    inner = getattr(optimizer, "optimizer", optimizer)
    for state in inner.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                value.zero_()
