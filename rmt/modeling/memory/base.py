"""The memory-mechanism interface: what the recurrent core asks of a memory, and nothing more.

The core (`rmt.modeling.core`) owns segmentation, the per-sample schedule, the BPTT cut, segment
checkpointing and generation. A mechanism owns only the memory itself: its initial state, how a
segment's inputs are wrapped around that state, how the backbone's outputs become the next state,
and how generation is primed. The state can be any nest (tensor, tuple, list, dict) of tensors whose
first dimension is the batch: memory tokens, per-layer matrices, or both.

A new mechanism is one file next to this one plus one line in `MECHANISMS` (`memory/__init__.py`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

State = Any  # a tensor, or a tuple/list/dict nest of tensors, batch first


def map_state(fn, state: State) -> State:
    """Apply `fn` to every tensor of a state nest (None stays None)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(fn, v) for v in state)
    raise TypeError(
        f"memory state holds a {type(state).__name__}; use tensors in tuples/lists/dicts"
    )


def _zip_state(fn, full: State, part: State) -> State:
    if isinstance(full, torch.Tensor):
        return fn(full, part)
    if isinstance(full, dict):
        return {k: _zip_state(fn, full[k], part[k]) for k in full}
    return type(full)(_zip_state(fn, f, p) for f, p in zip(full, part, strict=True))


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that restart at 0 and skip padding: the `i`-th visible input gets `i`."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class SegmentInputs:
    """One backbone call: what the mechanism made of a segment, and where the segment's tokens sit.

    inputs_embeds: [A, T, H]; attention_mask: [A, T] (1 = visible); position_ids: [A, T];
    offset: column in `inputs_embeds` of the segment's first token (its tokens follow contiguously).
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    offset: int = 0

    @classmethod
    def build(cls, inputs_embeds, attention_mask, offset: int = 0) -> SegmentInputs:
        """Positions from the mask, so padding inside the call never shifts later inputs."""
        return cls(inputs_embeds, attention_mask, positions_from_mask(attention_mask), offset)


class MemoryMechanism(nn.Module):
    """Base class of memory mechanisms; subclasses implement `init_state`, `wrap`, `update` and
    `prepare_generation`, and override the rest only when their state is not batch-first tensors.
    """

    @classmethod
    def from_config(cls, config, *, hidden_size: int, dtype=None, device=None) -> MemoryMechanism:
        """Build from an `RMTConfig`; by default `config.memory_options` are the constructor's kwargs."""
        return cls(hidden_size=hidden_size, **(config.memory_options or {}))

    @classmethod
    def check_options(cls, options: dict, *, num_layers: int | None, prefix: str = "") -> None:
        """Raise ValueError naming the option (`prefix` + name) and the fix when `options` (the
        mechanism's `memory_options`) cannot work; `num_layers` of the backbone when known."""

    @classmethod
    def extra_positions(cls, config) -> int:
        """Positions each backbone call uses beyond the segment's tokens (for the position budget)."""
        return 0

    @property
    def enabled(self) -> bool:
        """False when the mechanism carries nothing between segments (e.g. zero memory tokens)."""
        return True

    def init_weights(self, std: float) -> None:
        """Initialise learned parameters (through `transformers.initialization`, so loading skips them)."""

    def attach(self, backbone) -> None:
        """Called once with the backbone the mechanism serves (e.g. to hook into its layers)."""

    def reading(self, state: State) -> contextlib.AbstractContextManager:
        """Context around each backbone call of the core (segments and generation): a mechanism
        that acts inside the layers reads `state` there; `update` is called inside it too."""
        return contextlib.nullcontext()

    def backbone_kwargs(self) -> dict:
        """Extra keyword arguments for every backbone call (e.g. {"output_hidden_states": True})."""
        return {}

    def summary(self) -> dict:
        """A few JSON-able facts for result files (e.g. {"num_mem_tokens": 10})."""
        return {}

    # ------------------------------------------------------------------ the recurrence
    def init_state(self, batch_size: int) -> State:
        """The state the first segment of every sample reads."""
        raise NotImplementedError

    def wrap(self, state: State, embeds: torch.Tensor, mask: torch.Tensor) -> SegmentInputs:
        """Inputs of one backbone call from the read state and the segment's right-padded
        `embeds` [A, Ls, H] and `mask` [A, Ls]."""
        raise NotImplementedError

    def update(self, state: State, outputs, inputs: SegmentInputs) -> State:
        """The state written by this segment, from the backbone's `outputs` on `inputs`."""
        raise NotImplementedError

    def prepare_generation(
        self, state: State, embeds: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(inputs_embeds, attention_mask)`, left-padded, for the backbone's `generate` on the last
        segment (right-padded `embeds`/`mask`) read with `state`."""
        raise NotImplementedError

    # ------------------------------------------------------------------ per-sample scheduling
    def select(self, state: State, rows: torch.Tensor) -> State:
        """The state of the samples `rows` (a shorter sample joins the schedule later)."""
        return map_state(lambda t: t.index_select(0, rows), state)

    def merge(self, state: State, rows: torch.Tensor, part: State) -> State:
        """`state` with the samples `rows` replaced by `part` (out of place: autograd sees it)."""

        def put(full, new):
            dtype = torch.promote_types(full.dtype, new.dtype)
            return full.to(dtype).index_copy(0, rows, new.to(dtype))

        return _zip_state(put, state, part)

    def detach(self, state: State) -> State:
        """Cut the gradient through `state` (truncated BPTT)."""
        return map_state(torch.Tensor.detach, state)
