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

from rmt.modeling.core import RMTPreTrainedModel, SegmentPlan


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


def shifted_targets(labels: torch.Tensor, plan: SegmentPlan) -> list[torch.Tensor]:
    """Each sample's labels, unpadded and shifted by one (HF convention) over the whole sample, so a
    segment's last token predicts the first token of the next segment."""
    if labels.dim() == 1:
        labels = labels.unsqueeze(0)
    targets = []
    for b, pos in enumerate(plan.columns):
        lab = labels[b, pos]
        targets.append(torch.cat([lab[1:], lab.new_full((1,), -100)]))
    return targets


class _LossAndLogits:
    """Collects, step by step, the LM head's logits and the per-sample cross-entropy."""

    def __init__(self, head, targets, shape: tuple[int, int], want_logits: bool, device) -> None:
        self.head, self.targets, self.want_logits = head, targets, want_logits
        bsz = shape[0]
        self.loss_sum = torch.zeros(bsz, device=device, dtype=torch.float32)
        self.counts = torch.zeros(bsz, device=device, dtype=torch.long)
        self.token_loss = torch.zeros(shape, device=device, dtype=torch.float32)
        self.logit_parts: list[list[torch.Tensor]] = [[] for _ in range(bsz)]
        self.tgt = None

    def wanted(self, active, seg_mask):
        """Hidden states (and the LM head) only where needed: every token, or labelled ones only."""
        if self.targets is not None:
            self.tgt = torch.full_like(seg_mask, -100)
            for i, (b, s, e) in enumerate(active):
                self.tgt[i, : e - s] = self.targets[b][s:e]
        return (seg_mask if self.want_logits else self.tgt != -100).nonzero(as_tuple=True)

    def add(self, active, rows, cols, hidden):
        logits = self.head(hidden)
        if self.want_logits:
            for i, (b, _, _) in enumerate(active):
                self.logit_parts[b].append(logits[rows == i])
        if self.tgt is None:
            return
        step_targets = self.tgt[rows, cols]
        keep = step_targets != -100
        if keep.any():
            owner = torch.tensor([b for b, _, _ in active], device=logits.device)[rows[keep]]
            ce = F.cross_entropy(logits[keep].float(), step_targets[keep], reduction="none")
            self.loss_sum = self.loss_sum.index_add(0, owner, ce)
            self.counts = self.counts.index_add(0, owner, torch.ones_like(owner))
            starts = torch.tensor([s for _, s, _ in active], device=logits.device)[rows[keep]]
            self.token_loss[owner, starts + cols[keep]] = ce.detach()

    def full_logits(self, plan: SegmentPlan) -> torch.Tensor:
        """[B, L, V] logits in the columns of `input_ids` (zeros at padding)."""
        vocab = self.head.weight.shape[0]
        ids = plan.input_ids
        full = ids.new_zeros((len(plan.ids), ids.shape[1], vocab), dtype=self.head.weight.dtype)
        full = full.float() if full.dtype == torch.float16 else full
        for b, pos in enumerate(plan.columns):
            full[b, pos] = torch.cat(self.logit_parts[b]).to(full.dtype)
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
        shape = (len(plan.ids), plan.input_ids.shape[-1])
        reader = _LossAndLogits(
            self.get_output_embeddings(), targets, shape, want_logits, input_ids.device
        )
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
        if limit is not None and new is not None and mask.sum(1).max().item() + new > limit:
            warnings.warn(
                f"last segment + memory + max_new_tokens = {int(mask.sum(1).max()) + new} exceeds the "
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
