"""`TokenMemory`: the Recurrent Memory Transformer's memory, M vectors carried between segments.

Each segment is one backbone call on `[read memory ; segment ; pad ; write memory]`. The last-layer
hidden states at the write positions become the read memory of the next segment; the first read
memory is the learned `tokens` parameter. A partial segment is padded *before* the write memory,
with position ids that skip the padding, so padding never changes a sample's result, and every
query row has at least one visible key.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import initialization as hf_init

from rmt.modeling.memory.base import MemoryMechanism, SegmentInputs
from rmt.modeling.padding import left_pad


class TokenMemory(MemoryMechanism):
    """State: [B, M, H] memory vectors; `tokens` [M, H] is the learned initial memory."""

    def __init__(self, *, hidden_size: int, num_tokens: int, dtype=None, device=None) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        # Zero tokens: an empty parameter, kept so checkpoints keep one layout; it gets no
        # gradient, so it does not ask for one (DDP would otherwise wait for it).
        self.tokens = nn.Parameter(
            torch.empty(num_tokens, hidden_size, dtype=dtype, device=device),
            requires_grad=num_tokens > 0,
        )

    @classmethod
    def from_config(cls, config, *, hidden_size: int, dtype=None, device=None) -> TokenMemory:
        return cls(
            hidden_size=hidden_size, num_tokens=config.num_mem_tokens, dtype=dtype, device=device,
            **(config.memory_options or {}),
        )  # fmt: skip

    @classmethod
    def extra_positions(cls, config) -> int:
        return 2 * config.num_mem_tokens  # read memory before the segment, write memory after it

    @property
    def enabled(self) -> bool:
        return self.num_tokens > 0

    def init_weights(self, std: float) -> None:
        hf_init.normal_(self.tokens, mean=0.0, std=std)

    def summary(self) -> dict:
        return {"num_mem_tokens": self.num_tokens}

    def init_state(self, batch_size: int) -> torch.Tensor:
        return self.tokens.unsqueeze(0).expand(batch_size, -1, -1)

    def wrap(self, state: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor) -> SegmentInputs:
        memory = state.to(embeds.dtype)
        ones = mask.new_ones(mask.shape[0], self.num_tokens)
        x = torch.cat([memory, embeds, memory], dim=1)
        full_mask = torch.cat([ones, mask, ones], dim=1)
        return SegmentInputs.build(x, full_mask, offset=self.num_tokens)

    def update(self, state, outputs, inputs: SegmentInputs) -> torch.Tensor:
        hidden = outputs.last_hidden_state
        return hidden[:, hidden.shape[1] - self.num_tokens :]

    def prepare_generation(self, state, embeds, mask):
        """`[read memory ; last segment]` per sample; no write memory (nothing reads it)."""
        rows = [
            torch.cat([state[i].to(embeds.dtype), embeds[i, : int(n)]], dim=0)
            for i, n in enumerate(mask.sum(1).tolist())
        ]
        return left_pad(rows)
