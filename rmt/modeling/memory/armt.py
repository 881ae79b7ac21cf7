"""`AssociativeMemory`: the Associative Recurrent Memory Transformer's memory (ARMT; Rodkin et al.,
2024, arXiv 2407.04841), written for rmt's memory-mechanism interface.

Memory tokens work exactly as in `TokenMemory` (read before the segment, written after it). On top,
every carrying layer l holds an associative matrix A_l [F, H] and a normaliser z_l [F], per sample
(stored together as one [F, H + 1] matrix, z_l its last column, so a read is one matrix product):

- read: the input h of layer l (every token) gets A_l^T f(W_q h) / (z_l^T f(W_q h) + eps) added,
  where f is DPFP with `nu` (the paper normalises f(q) to unit length first; that changes only
  where eps sits, so it is left out). An empty memory (A = 0) reads exactly 0, so the first segment
  is RMT's segment bit for bit;
- write, after the segment: each write-memory token's output h of layer l gives a key k = f(W_k h),
  a value v = W_v h and a gate beta = sigmoid(W_b h). With correction (the delta rule) z_l grows only
  by the part of k that is new, z_l += clip(1 - z_l^T k, 0, 1) k, and the stored value is v minus what
  A_l already returns for k, scaled to the new denominator: A_l += k (beta (max(z_l^T k, 1) v -
  A_l^T k))^T, so that reading k right after returns v exactly (beta = 1) and a pair written twice is
  stored once (keys have unit length). (The paper's code subtracts the normalised read instead, which leaves a residue when
  other keys overlap k.) Without correction, A_l += k (beta v)^T and z_l += k (linear attention).

Two options change where the memory meets the layer (both off in the paper; the capacity recipe
turns both on, README "Capacity, head to head"):

- `normalize_inputs`: W_q, W_k, W_v and the gate read RMS-normalised states (as every projection of
  a pre-norm transformer does) instead of the raw residual stream, whose scale drifts with training
  (write-token states of norm 30-60 against token embeddings of norm 1 in the earlier recipe's
  runs, and write gates saturated at about 1e-15);
- `read_into="output"`: the read is computed from the layer's input as before but added to the
  layer's output, so the layer itself (its attention, and the write tokens' states that become the
  next keys) sees the segment without it. With the read added to the input, a blend of stored
  values drowned the next pair's key token: its key was linearly decodable from the write tokens
  partly in the first segment (14-94%) and at chance from the second on (6-12%).

With `memory_tokens_read=False` only the segment's tokens read A_l: the memory tokens (read and
write) get nothing added, so the write tokens' keys and values come from the segment alone, not
from what is already stored. (Tried in the capacity sweep: with associative memory in every layer it
moved a short N=2 run off its 50% plateau, but in the sweep's recipe it did not beat the default and
answered only the first pair; README, "Capacity, head to head".)

W_v starts at zero, as in the paper's code: a fresh model computes exactly what RMT computes with the
same weights, and training moves away from it. The associative state is part of the mechanism's state
(a dict of batch-first tensors), so the core's BPTT cut, checkpointing, per-sample scheduling and
generation apply to it unchanged. The reads and writes run in forward hooks on the backbone's
decoder layers (found through `adapters.decoder_layers`), active only inside `reading(state)`; the
backbone called on its own (e.g. the no-memory baseline) is never changed.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as hf_init

from rmt.modeling.adapters import decoder_layers
from rmt.modeling.memory.base import SegmentInputs
from rmt.modeling.memory.tokens import TokenMemory
from rmt.modeling.padding import left_align

FEATURE_MAPS = ("dpfp",)
READ_INTO = ("input", "output")
EPS = 1e-5  # in the read's denominator: an empty memory (z = 0) reads 0, not 0/0


def dpfp(x: torch.Tensor, nu: int) -> torch.Tensor:
    """Deterministic parameter-free projection (Schlag et al., 2021): [..., d] -> [..., 2*nu*d],
    non-negative, so that z^T f(q) > 0 wherever a stored key overlaps the query.

    With r = [relu(x), relu(-x)] (length 2d), the features are r_i * r_{i-j} (indices mod 2d) for
    j = 1..nu: windows of r extended by its last nu entries, taken as views, times r.
    """
    r = torch.cat([x, -x], dim=-1).relu()
    width = r.shape[-1]
    rolls = torch.cat([r[..., width - nu :], r], dim=-1).unfold(-1, width, 1)[..., :nu, :]
    return (rolls * r.unsqueeze(-2)).flatten(-2)


def features(x: torch.Tensor, nu: int) -> torch.Tensor:
    """Unit-length DPFP features (keys): a stored key read back with itself has weight exactly 1."""
    return F.normalize(dpfp(x, nu), dim=-1)


def associative_read(memory: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """What `memory` [B, F, H + 1] = [A | z] returns for features `phi` [B, T, F]: [B, T, H]."""
    out = phi @ memory
    return out[..., :-1] / (out[..., -1:] + EPS)


def associative_write(memory, k, v, beta, *, correction: bool) -> torch.Tensor:
    """`memory` [..., F, H + 1] = [A | z] after writing keys `k` [..., M, F] (unit length), values
    `v` [..., M, H] with gates `beta` [..., M, 1], all M at once against the memory before the write.

    With correction, z grows by gamma k, gamma = clip(1 - z^T k, 0, 1), so the read's denominator
    for k becomes d = max(z^T k, 1); the value stored is d v - A^T k, so that reading k afterwards
    returns exactly v (beta = 1) and writing the same pair again stores nothing.
    """
    if correction:
        old = k @ memory  # [B, M, H + 1]: A^T k and z^T k (how much of k z already holds)
        overlap = old[..., -1:]
        gamma = (1 - overlap).clamp(0, 1)
        v = overlap.clamp(min=1) * v - old[..., :-1]  # subtract what A already returns for k
    else:
        gamma = torch.ones_like(beta)
    return memory + k.transpose(-1, -2) @ torch.cat([beta * v, gamma], dim=-1)


class _Session:
    """The associative state read during one backbone call, and the write-memory outputs it leaves."""

    def __init__(self, memories: tuple[torch.Tensor, ...], no_read: torch.Tensor | None) -> None:
        self.memories = memories  # per carrying layer, [B, F, H + 1]
        self.no_read = no_read  # [B, T] True at the positions that do not read; None: all read
        # init_state's memories are one zero expanded (all strides 0): they read exactly 0, so
        # their read is skipped (the first segment of every batch costs what RMT's does)
        self.empty = [all(st == 0 for st in m.stride()) for m in memories]
        self.written: list[torch.Tensor | None] = [None] * len(memories)
        self.pending: list[torch.Tensor | None] = [None] * len(memories)  # read_into="output"


class AssociativeMemory(TokenMemory):
    """State: {"tokens": [B, M, H], "associative": ([B, F, H + 1], ...)}, one [A | z] per carrying
    layer, F = 2 * nu * key_dim features."""

    def __init__(
        self,
        *,
        hidden_size: int,
        num_tokens: int,
        num_layers: int,
        key_dim: int = 64,  # query/key projection size before the feature map
        feature_map: str = "dpfp",
        nu: int = 3,  # DPFP's number of rolls (3 in the paper)
        layers: list[int] | None = None,  # decoder layers that carry associative memory; None = all
        correction: bool = True,  # delta rule: write only what the memory does not return yet
        carry_tokens: bool = True,  # False: fresh learned memory tokens every segment (paper's code)
        memory_tokens_read: bool = True,  # False: only the segment's tokens read the matrices
        normalize_inputs: bool = False,  # projections read RMS-normalised states
        read_into: str = "input",  # "output": the read is added after the layer, not before
        init_std: float | None = None,  # of the memory tokens, as for TokenMemory
        dtype=None,
        device=None,
    ) -> None:
        options = {"key_dim": key_dim, "feature_map": feature_map, "nu": nu, "layers": layers,
                   "correction": correction, "carry_tokens": carry_tokens,
                   "memory_tokens_read": memory_tokens_read, "normalize_inputs": normalize_inputs,
                   "read_into": read_into}  # fmt: skip
        self.check_options(options, num_layers=num_layers)
        if num_tokens < 1:
            raise ValueError(
                "ARMT writes its associative memory from the memory tokens; use num_mem_tokens >= 1 "
                "(memory.num_tokens)."
            )
        super().__init__(hidden_size=hidden_size, num_tokens=num_tokens, init_std=init_std,
                         dtype=dtype, device=device)  # fmt: skip
        self.key_dim, self.feature_map, self.nu, self.correction = (
            key_dim,
            feature_map,
            nu,
            correction,
        )
        self.carry_tokens, self.memory_tokens_read = carry_tokens, memory_tokens_read
        self.normalize_inputs, self.read_into = normalize_inputs, read_into
        self._no_read: torch.Tensor | None = None  # set by wrap / prepare_generation, see _Session
        self.layer_ids = list(range(num_layers)) if layers is None else list(layers)
        self.num_features = 2 * nu * key_dim
        # The learned projections of the carrying layers, stacked [n, ...] so that the writes of
        # all layers are one batch of products (the reads run layer by layer, in the hooks).
        n, kw = len(self.layer_ids), {"dtype": dtype, "device": device}
        self.query = nn.Parameter(torch.empty(n, hidden_size, key_dim, **kw))
        self.key = nn.Parameter(torch.empty(n, hidden_size, key_dim, **kw))
        self.value = nn.Parameter(torch.empty(n, hidden_size, hidden_size, **kw))
        self.gate = nn.Parameter(torch.empty(n, hidden_size, 1, **kw))  # beta: how much is written
        self.gate_bias = nn.Parameter(torch.empty(n, 1, 1, **kw))
        for weight in (self.query, self.key, self.value, self.gate, self.gate_bias):
            weight.requires_grad_(n > 0)  # no carrying layer: nothing for DDP to wait for
        self._session: _Session | None = None

    @classmethod
    def from_config(cls, config, *, hidden_size: int, dtype=None, device=None):
        return cls(
            hidden_size=hidden_size, num_tokens=config.num_mem_tokens,
            num_layers=config.backbone_config.num_hidden_layers, dtype=dtype, device=device,
            init_std=getattr(config, "memory_init_std", None), **(config.memory_options or {}),
        )  # fmt: skip

    @classmethod
    def check_options(cls, options: dict, *, num_layers: int | None, prefix: str = "") -> None:
        known = {"key_dim", "feature_map", "nu", "layers", "correction", "carry_tokens",
                 "memory_tokens_read", "normalize_inputs", "read_into"}  # fmt: skip
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"{prefix}{unknown[0]}: not an ARMT option; use {', '.join(sorted(known))}."
            )
        for key in ("key_dim", "nu"):
            value = options.get(key, 1)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{prefix}{key}={value!r} must be an integer >= 1.")
        if options.get("feature_map", "dpfp") not in FEATURE_MAPS:
            raise ValueError(
                f"{prefix}feature_map={options['feature_map']!r} is not known; use one of "
                f"{', '.join(FEATURE_MAPS)}."
            )
        if options.get("read_into", "input") not in READ_INTO:
            raise ValueError(
                f"{prefix}read_into={options['read_into']!r} is not known; use input (the read "
                "is added to the layer's input, as in the paper) or output (after the layer)."
            )
        layers = options.get("layers")
        if layers is not None:
            if len(set(layers)) != len(layers) or any(i < 0 for i in layers):
                raise ValueError(
                    f"{prefix}layers={list(layers)} must be distinct layer indices >= 0 (null = all)."
                )
            if num_layers is not None and any(i >= num_layers for i in layers):
                raise ValueError(
                    f"{prefix}layers={list(layers)}: the backbone has {num_layers} layers "
                    f"(indices 0..{num_layers - 1})."
                )

    def init_weights(self, std: float) -> None:
        super().init_weights(std)
        for weight in (self.query, self.key, self.gate):
            hf_init.normal_(weight, mean=0.0, std=std)
        hf_init.zeros_(self.gate_bias)
        hf_init.zeros_(self.value)  # a fresh model reads 0: RMT's output exactly

    def summary(self) -> dict:
        return {
            **super().summary(), "key_dim": self.key_dim, "feature_map": self.feature_map,
            "nu": self.nu, "memory_layers": self.layer_ids, "correction": self.correction,
            "carry_tokens": self.carry_tokens, "memory_tokens_read": self.memory_tokens_read,
            "normalize_inputs": self.normalize_inputs, "read_into": self.read_into,
        }  # fmt: skip

    # ------------------------------------------------------------------ hooks into the layers
    def attach(self, backbone) -> None:
        layers = decoder_layers(backbone)
        for slot, index in enumerate(self.layer_ids):
            layers[index].register_forward_pre_hook(
                functools.partial(self._read_hook, slot), with_kwargs=True
            )
            layers[index].register_forward_hook(functools.partial(self._write_hook, slot))

    @contextlib.contextmanager
    def reading(self, state):
        self._session = _Session(state["associative"], self._no_read)
        try:
            yield
        finally:
            self._session, self._no_read = None, None

    def _read_hook(self, slot: int, layer, args, kwargs):
        if self._session is None or self._session.empty[slot]:
            return None  # the backbone called on its own, or nothing to read
        hidden = args[0] if args else kwargs["hidden_states"]
        memory = self._session.memories[slot]
        if memory.shape[0] != hidden.shape[0]:  # generate's beam search repeats each sample
            memory = memory.repeat_interleave(hidden.shape[0] // memory.shape[0], 0)
        phi = self.query_features(hidden, slot)
        read = associative_read(memory.to(phi.dtype), phi).to(hidden.dtype)
        no_read = self._session.no_read
        if no_read is not None and hidden.shape[1] >= no_read.shape[1]:  # not a cached step
            no_read = no_read.repeat_interleave(hidden.shape[0] // no_read.shape[0], 0)
            width = no_read.shape[1]
            read[:, :width] = read[:, :width].masked_fill(no_read[..., None], 0)
        if self.read_into == "output":  # added to the layer's output by _write_hook
            self._session.pending[slot] = read
            return None
        hidden = hidden + read
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def _write_hook(self, slot: int, layer, args, output):
        if self._session is None:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        self._session.written[slot] = hidden[:, hidden.shape[1] - self.num_tokens :]
        read, self._session.pending[slot] = self._session.pending[slot], None
        if read is None:
            return None
        hidden = hidden + read  # read_into="output": the writes above are the layer's own
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    def projection_inputs(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the projections read: the states, RMS-normalised with `normalize_inputs`."""
        if not self.normalize_inputs:
            return hidden
        return F.rms_norm(hidden, hidden.shape[-1:], eps=1e-6)

    def query_features(self, hidden: torch.Tensor, slot: int) -> torch.Tensor:
        """DPFP features of the queries of carrying layer `slot` for its inputs `hidden`."""
        return dpfp(self.projection_inputs(hidden) @ self.query[slot], self.nu)

    def write_projections(self, states: torch.Tensor, slot: int | None = None):
        """Keys (unit-length features), values and gates beta of write-memory `states`:
        [B, n, M, H] for every carrying layer at once (`slot=None`), or [B, M, H] for one."""
        index = slice(None) if slot is None else slot
        states = self.projection_inputs(states)
        keys = features(states @ self.key[index], self.nu)
        gates = torch.sigmoid(states @ self.gate[index] + self.gate_bias[index])
        return keys, states @ self.value[index], gates

    # ------------------------------------------------------------------ the recurrence
    def init_state(self, batch_size: int) -> dict:
        tokens = super().init_state(batch_size)
        shape = (batch_size, self.num_features, tokens.shape[-1] + 1)
        empty = tokens.new_zeros(()).expand(shape)  # see _Session.empty
        return {"tokens": tokens, "associative": (empty,) * len(self.layer_ids)}

    def wrap(self, state, embeds, mask) -> SegmentInputs:
        inputs = super().wrap(state["tokens"], embeds, mask)
        if not self.memory_tokens_read:  # the read block first, the write block (if any) last
            no_read = torch.ones_like(inputs.attention_mask, dtype=torch.bool)
            no_read[:, self.num_tokens : self.num_tokens + mask.shape[1]] = False
            self._no_read = no_read
        return inputs

    def update(self, state, outputs, inputs: SegmentInputs) -> dict:
        # carry_tokens=False: the learned first memory again, only A_l carries (no token update)
        tokens = (
            super().update(state["tokens"], outputs, inputs)
            if self.carry_tokens
            else state["tokens"]
        )
        if not self.layer_ids:
            return {"tokens": tokens, "associative": ()}
        # [B, n, M, H]: the write-memory outputs of every carrying layer
        k, v, beta = self.write_projections(torch.stack(self._session.written, 1))
        memory = torch.stack(state["associative"], 1).to(k.dtype)  # [B, n, F, H + 1]
        memory = associative_write(memory, k, v, beta, correction=self.correction)
        return {"tokens": tokens, "associative": memory.unbind(1)}

    def prepare_generation(self, state, embeds, mask):
        prompt, prompt_mask = super().prepare_generation(state["tokens"], embeds, mask)
        if not self.memory_tokens_read:  # the read block, left-aligned as the prompt is
            first = mask.new_ones(mask.shape[0], self.num_tokens)
            flags = torch.cat([first, torch.zeros_like(mask)], 1).bool()
            self._no_read = left_align(flags, torch.cat([first, mask], 1))[0]
        return prompt, prompt_mask
