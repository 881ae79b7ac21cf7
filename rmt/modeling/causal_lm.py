"""`RMTForCausalLM`: the causal-LM head over the recurrent core (`rmt.modeling.core`).

The core reads the input segment by segment; this head picks the hidden states it needs from each
segment (every token for logits, or labelled positions only), runs the LM head on them, and sums
the loss with labels shifted across segment boundaries, so the loss equals that of one long causal
LM pass. Generation hands `[memory ; last segment]` to the backbone's own `generate`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

from rmt.modeling.core import RMTPreTrainedModel, SegmentPlan, gather_segments, to_device


@dataclass
class RMTOutput(ModelOutput):
    """Output of `RMTForCausalLM.forward`.

    loss: mean cross-entropy over all labelled tokens of all segments and samples.
    logits: [B, L, V] aligned with `input_ids`, only when asked for (zeros at padding).
    sample_loss: [B] mean cross-entropy per sample (nan for a sample without labels).
    num_label_tokens: [B] number of labelled tokens per sample.
    token_loss: [B, L] cross-entropy of each labelled prediction (no gradient), in each sample's
        unpadded token order: ``token_loss[b, t]`` is the loss of sample b's t-th real token
        predicting the next one; 0 where nothing is predicted. For loss by position or segment.
    memory: the memory state written by the last segment ([B, M, H] for memory tokens); None
        when the mechanism carries nothing (zero memory tokens).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    sample_loss: torch.Tensor | None = None
    num_label_tokens: torch.Tensor | None = None
    token_loss: torch.Tensor | None = None
    memory: torch.Tensor | None = None


def shifted_targets(labels: torch.Tensor, plan: SegmentPlan) -> torch.Tensor:
    """[B, Lmax] target of each sample's t-th real token: the label of its next real token
    (HF's shift, done per sample after unpadding, so it also crosses segment boundaries); -100
    for its last token. A segment's last token predicts the first token of the next segment."""
    if labels.dim() == 1:
        labels = labels.unsqueeze(0)
    packed = plan.pack(labels, -100)  # padding is -100, so a sample's last token gets no target
    shifted = torch.cat([packed[:, 1:], packed.new_full((packed.shape[0], 1), -100)], dim=1)
    return shifted


class _LossAndLogits:
    """Collects, step by step, the LM head's logits and the per-sample cross-entropy.

    Which hidden states a step wants is decided on the host from a copy of the label mask taken
    once per forward, so the segment loop never waits for the device; every step's bookkeeping
    is a few vectorised ops whatever the batch size (no per-sample slices or copies).
    """

    def __init__(self, head, targets, plan: SegmentPlan, want_logits: bool) -> None:
        self.head, self.targets, self.want_logits = head, targets, want_logits
        bsz, device = len(plan.lengths), plan.input_ids.device
        self.device = device
        self.loss_sum = torch.zeros(bsz, device=device, dtype=torch.float32)
        self.counts = torch.zeros(bsz, device=device, dtype=torch.long)
        self.token_loss = torch.zeros(
            (bsz, plan.input_ids.shape[-1]), device=device, dtype=torch.float32
        )
        self.parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # owner, pos, logits
        self.labelled = None if targets is None or want_logits else (targets != -100).cpu()
        self.tgt = self.owner = self.pos = None
        self.whole_steps = True  # every step read every sample at the same columns, all wanted

    def wanted(self, active, seg_mask):
        """Hidden states (and the LM head) only where needed: every token, or labelled ones only."""
        if self.targets is not None:
            self.tgt, _ = gather_segments(self.targets, active, -100)
        samples, starts, ends = (torch.tensor(v) for v in zip(*active, strict=True))
        self.whole_steps &= bool(
            len(active) == self.counts.shape[0] and (starts == starts[0]).all()
            and (ends == ends[0]).all()
        )  # fmt: skip
        if self.want_logits:
            want = torch.arange(seg_mask.shape[1])[None] < (ends - starts)[:, None]
        elif self.labelled is not None:
            want, _ = gather_segments(self.labelled, active, False)
        else:
            want = torch.zeros(seg_mask.shape, dtype=torch.bool)
        rows, cols = want.nonzero(as_tuple=True)
        index = torch.stack([rows, cols, samples[rows], starts[rows] + cols])
        index = to_device(index, self.device)
        self.owner, self.pos = index[2], index[3]
        return index[0], index[1]

    def add(self, active, rows, cols, hidden):
        logits = self.head(hidden)
        if self.want_logits:
            self.parts.append((self.owner, self.pos, logits))
        if self.tgt is None:
            return
        step_targets = self.tgt[rows, cols]
        ce = F.cross_entropy(logits.float(), step_targets, reduction="none")  # 0 where -100
        self.loss_sum = self.loss_sum.index_add(0, self.owner, ce)
        self.counts = self.counts.index_add(0, self.owner, (step_targets != -100).long())
        self.token_loss[self.owner, self.pos] = ce.detach()

    def full_logits(self, plan: SegmentPlan) -> torch.Tensor:
        """[B, L, V] logits in the columns of `input_ids` (zeros at padding): one concatenation
        when every step read the whole batch without padding, else one scatter."""
        vocab, bsz, width = self.head.weight.shape[0], len(plan.lengths), plan.input_ids.shape[1]
        dtype = torch.float32 if self.head.weight.dtype == torch.float16 else self.head.weight.dtype
        if self.parts and self.whole_steps and plan.columns is None:  # (sample, column) order
            parts = [logits.view(bsz, -1, vocab) for _, _, logits in self.parts]
            return torch.cat(parts, dim=1).to(dtype)
        full = plan.input_ids.new_zeros((bsz, width, vocab), dtype=dtype)
        if not self.parts:
            return full
        owner, pos, logits = (torch.cat(part) for part in zip(*self.parts, strict=True))
        cols = pos if plan.columns is None else plan.columns[owner, pos]
        full[owner, cols] = logits.to(dtype)
        return full


class RMTForCausalLM(RMTPreTrainedModel):
    """A Recurrent Memory Transformer around an unchanged Hugging Face causal LM."""

    def get_output_embeddings(self):
        return self.backbone.get_output_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_logits: bool | None = None,
        **unused,
    ) -> RMTOutput:
        """Read the whole input segment by segment.

        Args:
            input_ids: [B, L] token ids, padded anywhere (left or right) as marked by `attention_mask`.
            labels: [B, L] with -100 where no loss is wanted; shifted inside (HF convention), also
                across segment boundaries, so the loss equals that of one long causal LM pass.
            return_logits: return [B, L, V] logits; defaults to True only when `labels` is None. With
                labels and no logits, the LM head runs only at labelled positions.
        """
        plan = self.make_plan(input_ids, attention_mask)
        want_logits = (labels is None) if return_logits is None else return_logits
        targets = None if labels is None else shifted_targets(labels, plan)
        reader = _LossAndLogits(self.get_output_embeddings(), targets, plan, want_logits)
        state = self._run(plan, reader)
        out = RMTOutput(memory=state if self.memory.enabled else None)
        if targets is not None:
            counts = reader.counts
            out.loss = reader.loss_sum.sum() / counts.sum().clamp(min=1)
            out.sample_loss = (
                reader.loss_sum / counts.where(counts > 0, torch.zeros_like(counts)).float()
            )
            out.num_label_tokens = counts
            out.token_loss = reader.token_loss
        if want_logits:
            out.logits = reader.full_logits(plan)
        return out

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, **generate_kwargs) -> torch.Tensor:
        """Generate after the prompt, reading it through memory; returns only the new tokens [B, T].

        All but the last segment of the prompt write memory; the last segment gets the read memory and
        no write memory, and the backbone's own `generate` (greedy, sampling, beams, ...) continues it.
        """
        x, mask, state = self._prompt_inputs(input_ids, attention_mask)
        lm = self.backbone
        limit = self.config.max_backbone_positions()
        new = generate_kwargs.get("max_new_tokens") or getattr(
            lm.generation_config, "max_new_tokens", None
        )
        # `mask` is left-padded to its longest row: its width is that row's length (no host sync)
        if limit is not None and new is not None and mask.shape[1] + new > limit:
            warnings.warn(
                f"last segment + memory + max_new_tokens = {mask.shape[1] + new} exceeds the "
                f"backbone's {limit} positions; use a smaller segment_size or fewer new tokens",
                stacklevel=2,
            )
        if (
            generate_kwargs.get("pad_token_id") is None
            and lm.generation_config.pad_token_id is None
        ):
            eos = lm.generation_config.eos_token_id
            generate_kwargs["pad_token_id"] = eos[0] if isinstance(eos, list) else (eos or 0)
        with self.memory.reading(state):
            return lm.generate(inputs_embeds=x, attention_mask=mask, **generate_kwargs)
