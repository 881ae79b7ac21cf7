"""The recurrent core shared by every RMT head: one segment loop around an unchanged HF backbone.

`RMTPreTrainedModel` owns what every memory mechanism and every head share: the backbone, the
memory mechanism (`self.memory`, picked by `config.memory_type`), segmentation, the per-sample
schedule, the truncated-BPTT cut, segment checkpointing, and the prompt for generation. The
mechanism only says what a segment's backbone call looks like and what state it leaves
(`rmt.modeling.memory.base`); a head (`causal_lm.py`) only says what to do with the hidden states
of each segment (`StepReader`). `forward` and `read_memory` run the same loop, `_run`.

Inside a batch, samples are unpadded, segmented on their own, and aligned on their last segment: a
shorter sample joins later and reads the initial state, so a sample's result does not depend on
what else is in its batch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.utils.checkpoint import checkpoint
from transformers import AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel

from rmt.modeling import checkpointing
from rmt.modeling.adapters import base_model, decoder_mlps, position_offset
from rmt.modeling.checkpointing import MLPRecompute, Recompute, activation_dtype
from rmt.modeling.config import RMTConfig
from rmt.modeling.memory import MemoryMechanism, build_memory
from rmt.modeling.memory.base import State
from rmt.modeling.segmentation import batch_schedule

# Checkpoints written before memory mechanisms existed (rmt 0.1.0) stored the memory tokens as
# the top-level parameter `memory`; today it is `memory.tokens`.
LEGACY_KEY_MAPPING = {"^memory$": "memory.tokens"}


@dataclass
class SegmentPlan:
    """How a batch is read: each sample's own tokens, where they sit, and the steps.

    packed: [B, Lmax] each sample's tokens without padding, left-justified (`input_ids` itself
    when there is no padding); lengths: tokens per sample; columns: [B, Lmax] column in
    `input_ids` of each packed token, or None when there is no padding (the column is the index);
    schedule: per step, `(sample, start, end)` of each active sample. Segments are gathered from
    `packed` with one indexing op per step (`gather_segments`), never sample by sample.
    """

    input_ids: torch.Tensor
    packed: torch.Tensor
    lengths: list[int]
    columns: torch.Tensor | None
    schedule: list[list[tuple[int, int, int]]]

    @property
    def ids(self) -> list[torch.Tensor]:
        """Each sample's tokens without padding (views of `packed`)."""
        return [row[:n] for row, n in zip(self.packed, self.lengths, strict=True)]

    def pack(self, values: torch.Tensor, pad) -> torch.Tensor:
        """[B, L] values aligned with `input_ids` -> [B, Lmax] in each sample's unpadded order."""
        if self.columns is None:
            return values
        return values.gather(1, self.columns).masked_fill(~self.valid(), pad)

    def valid(self) -> torch.Tensor:
        """[B, Lmax] True where `packed` holds a real token."""
        width = self.packed.shape[1]
        lengths = to_device(torch.tensor(self.lengths), self.packed.device)
        return torch.arange(width, device=self.packed.device) < lengths[:, None]


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host-built tensor (indices the schedule decided) on `device` without a host sync: from
    pinned memory, asynchronously, on CUDA (`torch.tensor(list, device="cuda")` waits for the
    device to finish everything queued before it); itself on the CPU."""
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def active_rows(active, device: torch.device) -> torch.Tensor:
    """[A] batch rows of a step's active samples `(sample, start, end)`, on `device`."""
    return to_device(torch.tensor([b for b, _, _ in active]), device)


def gather_segments(packed: torch.Tensor, active, pad) -> tuple[torch.Tensor, torch.Tensor]:
    """`(values [A, W], mask [A, W])` of the active samples' segments `(sample, start, end)`,
    right-padded with `pad`: a view when every sample of the batch reads the same columns (the
    equal-length batches training uses), else one gather whose indices reach the device in one
    asynchronous copy; no per-sample copies and no host sync either way."""
    samples, starts, ends = zip(*active, strict=True)
    width = max(e - s for _, s, e in active)
    if len(set(starts)) == 1 and len(set(ends)) == 1:
        s, e = starts[0], ends[0]
        whole = samples == tuple(range(packed.shape[0]))
        values = packed[:, s:e] if whole else packed[active_rows(active, packed.device), s:e]
        return values, torch.ones(values.shape[:2], dtype=torch.long, device=packed.device)
    sizes = [e - s for _, s, e in active]
    rows, first, sizes = to_device(torch.tensor([samples, starts, sizes]), packed.device)
    offset = torch.arange(width, device=packed.device)[None]
    mask = offset < sizes[:, None]
    cols = (first[:, None] + offset).clamp(max=packed.shape[1] - 1)
    return packed[rows[:, None], cols].masked_fill(~mask, pad), mask.long()


class StepReader(Protocol):
    """What a head reads from each segment's backbone call."""

    def wanted(self, active, seg_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, columns within the segment) of the hidden states wanted from this step."""

    def add(self, active, rows: torch.Tensor, cols: torch.Tensor, hidden: torch.Tensor) -> None:
        """Receives those hidden states [K, H] (called only when K > 0)."""


class CompiledOrEager:
    """`torch.compile(fn)`, falling back to `fn` itself (with one warning) when torch.compile is
    missing or compiling fails, at wrap time or at the first calls (compilation is lazy)."""

    def __init__(self, fn, options: dict) -> None:
        self.eager, self.compiled = fn, None
        try:
            self.compiled = torch.compile(fn, **options)
        except Exception as err:  # noqa: BLE001  (any failure means: run eagerly)
            self._give_up(err)

    def _give_up(self, err: Exception) -> None:
        self.compiled = None
        warnings.warn(f"torch.compile of the segment step failed, running eagerly: "
                      f"{type(err).__name__}: {str(err).splitlines()[0][:200]}", stacklevel=3)  # fmt: skip

    def __call__(self, *args):
        if self.compiled is not None:
            # Contiguous inputs: a segment sliced from a batch keeps the batch's row stride, and a
            # graph is specialised on strides, so every input width would compile again.
            args = tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)
            try:
                return self.compiled(*args)
            except Exception as err:  # noqa: BLE001
                self._give_up(err)
        return self.eager(*args)


def _is_legacy_checkpoint(path) -> bool:
    """A checkpoint whose config.json predates `memory_type` (and names the memory `memory`)."""
    try:
        raw, _ = PreTrainedConfig.get_config_dict(path)
    except (OSError, ValueError):
        return False  # let from_pretrained report the problem itself
    return raw.get("model_type") == RMTConfig.model_type and "memory_type" not in raw


class RMTPreTrainedModel(PreTrainedModel):
    config_class = RMTConfig
    base_model_prefix = "rmt"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    backbone_auto_class = AutoModelForCausalLM  # builds the backbone from `config.backbone_config`
    _segment_step = None  # `compile_segments` sets a compiled `_run_segment` (with eager fallback)

    def __init__(self, config: RMTConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        if backbone is None:
            backbone = self.backbone_auto_class.from_config(config.backbone_config)
        else:
            # Weights of a given (possibly pretrained) backbone must survive post_init's initialisation.
            for module in backbone.modules():
                module._is_hf_initialized = True
        self.backbone = backbone
        self._position_offset = position_offset(config.backbone_config)
        emb = backbone.get_input_embeddings().weight
        self.memory: MemoryMechanism = build_memory(
            config, emb.shape[1], dtype=emb.dtype, device=emb.device
        )
        self._build_head(emb.shape[1], dtype=emb.dtype, device=emb.device)
        self.memory.attach(backbone)
        mlps = decoder_mlps(backbone)  # None for families without one MLP module per block
        self._mlp_recompute = None if mlps is None else MLPRecompute(mlps)
        self.post_init()
        if config.lora:
            from rmt.modeling.lora import wrap_backbone_with_lora  # lazy: LoRA path only

            self.backbone = wrap_backbone_with_lora(self.backbone, **config.lora)
        if config.freeze_backbone:
            self.freeze_backbone()

    # ------------------------------------------------------------------ construction and loading
    @classmethod
    def from_backbone(cls, model: PreTrainedModel, **rmt_kwargs) -> RMTPreTrainedModel:
        """Wrap an existing backbone (its weights are kept) with memory, e.g. `num_mem_tokens=10`."""
        config = RMTConfig(backbone_config=model.config, **rmt_kwargs)
        return cls(config, backbone=model)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, which also reads checkpoints of rmt 0.1.0."""
        if "key_mapping" in kwargs or not _is_legacy_checkpoint(pretrained_model_name_or_path):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        loaded = super().from_pretrained(
            pretrained_model_name_or_path, *args, key_mapping=LEGACY_KEY_MAPPING, **kwargs
        )
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True
        model._weight_conversions = None  # save_pretrained writes today's names, not the old ones
        return loaded

    def _build_head(self, hidden_size: int, *, dtype, device) -> None:
        """A head's own modules, created before `post_init` so they are initialised (or loaded)
        like every other weight; heads that reuse the backbone's (the LM head) add nothing."""

    def _init_weights(self, module):
        if isinstance(module, MemoryMechanism):
            module.init_weights(getattr(self.config.backbone_config, "initializer_range", 0.02))

    def freeze_backbone(self) -> None:
        """Train only the memory (and LoRA adapters): the backbone's own weights get no gradient."""
        for name, param in self.backbone.named_parameters():
            if "lora_" not in name:
                param.requires_grad_(False)

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def compile_segments(self, **options) -> None:
        """Run each segment's backbone call through `torch.compile` (`dynamic=False` unless
        `options` say otherwise: training's equal-length segments replay one compiled graph).
        Where compiling is unavailable or fails, one warning and the eager path, so a run never
        depends on it. Not saved with the model: a runtime choice (`trainer.compile`)."""
        self._segment_step = CompiledOrEager(self._run_segment, {"dynamic": False, **options})

    def _recompute(self, plan: SegmentPlan) -> Recompute:
        """What to recompute in backward (`rmt.modeling.checkpointing`): `true` every segment but
        the last, `"mlp"` every layer's MLP, `"partial"` the fewest earliest segments for the rest
        to fit `checkpointing_budget` of the free memory, `"auto"` the cheapest of these that fits."""
        mode, n = self.config.segment_checkpointing, len(plan.schedule)
        if not torch.is_grad_enabled() or n < 2 or mode is False:
            return Recompute()
        if mode is True:
            return Recompute("full", n - 1)
        if mode == "mlp":
            return Recompute("mlp")
        step_bytes, mlp_share = self._activation_estimate(plan)
        free = checkpointing.free_memory(plan.input_ids.device)
        allowed = self.config.checkpointing_budget * free
        if mode == "partial":
            return checkpointing.partial(step_bytes, allowed)
        return checkpointing.choose(step_bytes, allowed, mlp_share=mlp_share)

    def _activation_estimate(self, plan: SegmentPlan) -> tuple[list[int], float | None]:
        """Bytes of activations each step of `plan` keeps for backward without recomputation, and
        the share of them the "mlp" scheme drops (None when it is not available)."""
        extra = self.memory.extra_positions(self.config)
        bb = self.config.backbone_config
        dtype = activation_dtype(plan.input_ids.device, self.get_input_embeddings().weight.dtype)
        per_token = checkpointing.bytes_per_token(bb, dtype.itemsize)
        step_bytes = [sum(e - s + extra for _, s, e in step) * per_token for step in plan.schedule]
        if self._mlp_recompute is None:
            return step_bytes, None
        kept = checkpointing.bytes_per_token(bb, dtype.itemsize, mlp=False)
        return step_bytes, 1 - kept / per_token

    # ------------------------------------------------------------------ segmentation
    def make_plan(self, input_ids, attention_mask=None) -> SegmentPlan:
        """Unpad every sample, cut it into segments, and align the batch on its last segments."""
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
            attention_mask = None if attention_mask is None else attention_mask.unsqueeze(0)
        bsz, width = input_ids.shape
        if attention_mask is None:
            # No padding: views and slices instead of a mask, index lists and gathered copies, which
            # cost ~24 bytes per input token (24 MB of peak memory for a 1M-token prompt).
            lengths, packed, columns = [width] * bsz, input_ids, None
        else:
            valid = attention_mask.bool()
            lengths = valid.sum(1).tolist()  # the one host sync of a forward: the schedule needs it
            empty = [b for b, n in enumerate(lengths) if n == 0]
            if empty:
                raise ValueError(f"samples {empty} have no tokens (attention_mask is all zeros)")
            if min(lengths) == width:  # a mask with no padding (training batches): as above
                packed, columns = input_ids, None
            else:  # stable sort puts each row's real columns first, in order: one op, no loop
                order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices
                columns = order[:, : max(lengths)]
                packed = input_ids.gather(1, columns)
        schedule = batch_schedule(lengths, self.config.segment_size, self.config.segment_alignment)
        plan = SegmentPlan(input_ids, packed, lengths, columns, schedule)
        if columns is not None:
            plan.packed = packed.masked_fill(~plan.valid(), 0)
        return plan

    # ------------------------------------------------------------------ the recurrence
    def _run_segment(
        self,
        state: State,  # the state the active samples read
        seg_ids: torch.Tensor,  # [A, Ls] right-padded segment tokens
        seg_mask: torch.Tensor,  # [A, Ls] 1 for real tokens
        rows: torch.Tensor,  # [K] row of each hidden state to return
        cols: torch.Tensor,  # [K] column (within the segment) of each hidden state to return
    ) -> tuple[State, torch.Tensor]:
        """One backbone call on the wrapped segment; returns (new state, selected hidden states)."""
        embeds = self.get_input_embeddings()(seg_ids)
        inputs = self.memory.wrap(state, embeds, seg_mask)
        with self.memory.reading(state):
            outputs = base_model(self.backbone)(
                inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                position_ids=inputs.position_ids + self._position_offset, use_cache=False,
                **self.memory.backbone_kwargs(),
            )  # fmt: skip
            new_state = self.memory.update(state, outputs, inputs)
        return new_state, outputs.last_hidden_state[rows, cols + inputs.offset]

    def _run(self, plan: SegmentPlan, reader: StepReader | None = None, *, stop=None) -> State:
        """Run `plan.schedule[:stop]`; returns the state of every sample after its last step run.

        The BPTT cut and checkpointing count steps in the whole schedule, so stopping early (for
        generation) changes nothing before the stop.
        """
        n_steps, bsz = len(plan.schedule), len(plan.lengths)
        depth = self.config.bptt_depth
        recompute = self._recompute(plan)
        if self._mlp_recompute is not None:  # left as set after the loop: numerically harmless
            self._mlp_recompute.active = recompute.mlp
        state = self.memory.init_state(bsz)
        for step, active in enumerate(plan.schedule[:stop]):
            seg_ids, seg_mask = gather_segments(plan.packed, active, 0)
            # Steps with every sample (all steps of an unpadded batch) need no select/merge.
            rows = None if len(active) == bsz else active_rows(active, seg_ids.device)
            state_in = state if rows is None else self.memory.select(state, rows)
            if depth != -1 and step < n_steps - depth:
                state_in = self.memory.detach(state_in)  # truncated BPTT: older transitions cut
            empty = seg_ids.new_zeros(0)
            h_rows, h_cols = (empty, empty) if reader is None else reader.wanted(active, seg_mask)
            run_segment = self._segment_step or self._run_segment
            if step < recompute.segments:  # never the last (see rmt.modeling.checkpointing)
                new_state, hidden = checkpoint(
                    run_segment, state_in, seg_ids, seg_mask, h_rows, h_cols, use_reentrant=False
                )
            else:
                new_state, hidden = run_segment(state_in, seg_ids, seg_mask, h_rows, h_cols)
            state = new_state if rows is None else self.memory.merge(state, rows, new_state)
            if reader is not None and hidden.shape[0]:
                reader.add(active, h_rows, h_cols, hidden)
        return state

    # ------------------------------------------------------------------ generation
    def read_memory(self, input_ids, attention_mask=None) -> State:
        """The state each sample's last segment reads (where generation starts)."""
        return self._read_memory(self.make_plan(input_ids, attention_mask))

    def _read_memory(self, plan: SegmentPlan) -> State:
        return self._run(plan, stop=-1)  # the same loop as forward, stopped before the last step

    def _prompt_inputs(self, input_ids, attention_mask=None):
        """Left-padded `(inputs_embeds, attention_mask)` of the last segment read with memory,
        ready for the backbone's `generate` (run inside `self.memory.reading(state)`), and `state`."""
        plan = self.make_plan(input_ids, attention_mask)
        state = self._read_memory(plan)
        seg_ids, seg_mask = gather_segments(plan.packed, plan.schedule[-1], 0)
        embeds = self.get_input_embeddings()(seg_ids)
        return (*self.memory.prepare_generation(state, embeds, seg_mask), state)
