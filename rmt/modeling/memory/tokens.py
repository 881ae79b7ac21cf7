"""`TokenMemory`: the Recurrent Memory Transformer's memory, M vectors carried between segments.

Decoders (causal attention): each segment is one backbone call on
`[read memory ; segment ; pad ; write memory]`, and the last-layer hidden states at the write
positions become the read memory of the next segment. A partial segment is padded *before* the
write memory, with position ids that skip the padding, so padding never changes a sample's result,
and every query row has at least one visible key.

Encoders (bidirectional attention): `[memory ; segment ; pad]`. The memory positions already see
the whole segment, so their outputs are the next memory (read and written in place): M fewer
positions per call, and padding only at the end, where it cannot shift the relative positions
that DeBERTa-style encoders use.

The first read memory is the learned `tokens` parameter in both layouts.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import initialization as hf_init

from rmt.modeling.adapters import is_causal
from rmt.modeling.memory.base import MemoryMechanism, SegmentInputs
from rmt.modeling.padding import left_align


def _write_block(config) -> bool:
    """Memory option `write_block`; by default a separate write block only for causal backbones."""
    option = (config.memory_options or {}).get("write_block")
    return is_causal(config.backbone_config) if option is None else bool(option)


class TokenMemory(MemoryMechanism):
    """State: [B, M, H] memory vectors; `tokens` [M, H] is the learned initial memory."""

    def __init__(
        self,
        *,
        hidden_size: int,
        num_tokens: int,
        write_block: bool = True,  # False: memory read and written in place (encoders)
        init_std: float | None = None,  # std of `tokens` (None: the backbone's, see init_weights)
        dtype=None,
        device=None,
    ) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.write_block = write_block
        self.init_std = init_std
        # Zero tokens: an empty parameter, kept so checkpoints keep one layout; it gets no
        # gradient, so it does not ask for one (DDP would otherwise wait for it).
        self.tokens = nn.Parameter(
            torch.empty(num_tokens, hidden_size, dtype=dtype, device=device),
            requires_grad=num_tokens > 0,
        )

    @classmethod
    def from_config(cls, config, *, hidden_size: int, dtype=None, device=None) -> TokenMemory:
        options = {**(config.memory_options or {}), "write_block": _write_block(config),
                   "init_std": getattr(config, "memory_init_std", None)}  # fmt: skip
        return cls(
            hidden_size=hidden_size, num_tokens=config.num_mem_tokens, dtype=dtype, device=device,
            **options,
        )  # fmt: skip

    @classmethod
    def extra_positions(cls, config) -> int:
        # read memory before the segment (and write memory after it, for decoders)
        return (2 if _write_block(config) else 1) * config.num_mem_tokens

    @property
    def enabled(self) -> bool:
        return self.num_tokens > 0

    def init_weights(self, std: float) -> None:
        hf_init.normal_(self.tokens, mean=0.0, std=std if self.init_std is None else self.init_std)

    def summary(self) -> dict:
        return {"num_mem_tokens": self.num_tokens}

    def init_state(self, batch_size: int) -> torch.Tensor:
        return self.tokens.unsqueeze(0).expand(batch_size, -1, -1)

    def wrap(self, state: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor) -> SegmentInputs:
        memory = state.to(embeds.dtype)
        ones = mask.new_ones(mask.shape[0], self.num_tokens)
        write = [memory] if self.write_block else []
        x = torch.cat([memory, embeds, *write], dim=1)
        full_mask = torch.cat([ones, mask, *([ones] if self.write_block else [])], dim=1)
        return SegmentInputs.build(x, full_mask, offset=self.num_tokens)

    def update(self, state, outputs, inputs: SegmentInputs) -> torch.Tensor:
        hidden = outputs.last_hidden_state
        start = hidden.shape[1] - self.num_tokens if self.write_block else 0
        return hidden[:, start : start + self.num_tokens]

    def prepare_generation(self, state, embeds, mask):
        """`[read memory ; last segment]` per sample, left-padded; no write memory (nothing reads it)."""
        prompt = torch.cat([state.to(embeds.dtype), embeds], dim=1)  # real entries first per row
        ones = mask.new_ones(mask.shape[0], self.num_tokens)
        return left_align(prompt, torch.cat([ones, mask], dim=1))
