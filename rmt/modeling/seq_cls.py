"""`RMTForSequenceClassification`: a classification head over the recurrent core (`core.py`).

The core reads a long input segment by segment with memory (an encoder reads and writes its memory
tokens in place, with bidirectional attention inside each segment). This head classifies either
the memory after the last segment (`classifier_input="memory"`: what the model kept of the whole
input) or the last segment's first token (`"first_token"`: a [CLS]-style token that reads the
memory), through one dropout + linear layer. The loss follows Hugging Face's `problem_type` rules
(regression, single- or multi-label), as `AutoModelForSequenceClassification` heads do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as hf_init
from transformers.utils import ModelOutput

from rmt.modeling.adapters import base_model, unused_pooler
from rmt.modeling.config import RMTConfig
from rmt.modeling.core import RMTPreTrainedModel


@dataclass
class RMTClassifierOutput(ModelOutput):
    """Output of `RMTForSequenceClassification.forward`.

    loss: the classification loss (when labels are given).
    logits: [B, num_labels].
    memory: the memory state written by the last segment; None when the mechanism carries nothing.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    memory: torch.Tensor | None = None


class _FirstTokens:
    """A `StepReader` that keeps the hidden state of the first token of each sample's last segment."""

    def __init__(self, lengths: list[int], hidden_size: int, like: torch.Tensor) -> None:
        self.lengths = lengths
        self.first = like.new_zeros((len(lengths), hidden_size))

    def wanted(self, active, seg_mask):
        rows = [i for i, (b, _, e) in enumerate(active) if e == self.lengths[b]]
        rows = torch.tensor(rows, dtype=torch.long, device=seg_mask.device)
        return rows, torch.zeros_like(rows)

    def add(self, active, rows, cols, hidden):
        owners = torch.tensor([active[i][0] for i in rows.tolist()], device=hidden.device)
        self.first = self.first.to(hidden.dtype).index_copy(0, owners, hidden)


class RMTForSequenceClassification(RMTPreTrainedModel):
    """A Recurrent Memory Transformer around a Hugging Face encoder (or decoder), for classification.

    The backbone is the base model (`AutoModel`, no task head; its own pooler, if any, is
    frozen and unused); `config.num_labels` classes.
    """

    backbone_auto_class = AutoModel

    def __init__(self, config: RMTConfig, backbone: PreTrainedModel | None = None):
        if config.classifier_input == "memory" and config.num_mem_tokens == 0:
            raise ValueError(
                "classifier_input='memory' needs memory: num_mem_tokens=0 leaves nothing to classify; "
                "use classifier_input='first_token' or num_mem_tokens >= 1."
            )
        super().__init__(config, backbone)
        pooler = unused_pooler(self.backbone)
        if pooler is not None:
            pooler.requires_grad_(False)  # never read: DDP must not wait for its gradients
        if config.classifier_input == "memory":
            probe = self.memory.init_state(1)
            if not (isinstance(probe, torch.Tensor) and probe.dim() == 3):
                raise ValueError(
                    f"classifier_input='memory' needs memory tokens [B, M, H]; memory_type="
                    f"{config.memory_type!r} keeps another state; use classifier_input='first_token'."
                )

    def _build_head(self, hidden_size: int, *, dtype, device) -> None:
        self.dropout = nn.Dropout(self.config.classifier_dropout)
        self.classifier = nn.Linear(hidden_size, self.config.num_labels, dtype=dtype, device=device)

    @classmethod
    def from_backbone(cls, model: PreTrainedModel, **rmt_kwargs) -> RMTForSequenceClassification:
        """Wrap an encoder (its weights are kept), e.g. `AutoModel.from_pretrained(...)`; a model
        with a task head is wrapped without it (its base model)."""
        return super().from_backbone(base_model(model), **rmt_kwargs)

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self.classifier:
            std = getattr(self.config.backbone_config, "initializer_range", 0.02)
            hf_init.normal_(module.weight, mean=0.0, std=std)
            hf_init.zeros_(module.bias)

    def _features(self, state, reader: _FirstTokens | None) -> torch.Tensor:
        """[B, H]: the pooled final memory, or the last segment's first token."""
        if reader is not None:
            return reader.first
        if self.config.memory_pooling == "first":
            return state[:, 0]
        return state.mean(1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **unused,
    ) -> RMTClassifierOutput:
        """Read the whole input segment by segment and classify it.

        Args:
            input_ids: [B, L] token ids, padded anywhere (left or right) as marked by `attention_mask`.
            labels: [B] class ids (or [B, num_labels] floats for multi-label, [B] floats for
                regression), as for `AutoModelForSequenceClassification`.
        """
        plan = self.make_plan(input_ids, attention_mask)
        reader = None
        if self.config.classifier_input == "first_token":
            lengths = plan.lengths
            reader = _FirstTokens(lengths, self.classifier.in_features, self.classifier.weight)
        state = self._run(plan, reader)
        logits = self.classifier(self.dropout(self._features(state, reader)))
        out = RMTClassifierOutput(logits=logits, memory=state if self.memory.enabled else None)
        if labels is not None:
            out.loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return out
