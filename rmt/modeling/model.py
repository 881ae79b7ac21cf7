"""`RMTForCausalLM`: a Recurrent Memory Transformer around an unchanged Hugging Face causal LM.

Each segment is one backbone call on `inputs_embeds = [read memory ; segment ; write memory]`. The
last-layer hidden states at the write positions become the read memory of the next segment; the first
read memory is a learned parameter. Positions restart at 0 on every segment (for learned absolute
positions and RoPE alike), so the backbone only ever sees `segment_size + 2 * num_mem_tokens`
positions, whatever the input length.

Inside a batch, samples are unpadded, segmented on their own, and aligned on their last segment (a
shorter sample joins later, reading the initial memory). A partial segment is right-padded *before*
its write memory (`[mem ; seg ; pad ; mem]`) with explicit position ids, so padding never changes a
sample's result and every query row has at least one visible key.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers import initialization as hf_init
from transformers.utils import ModelOutput

from rmt.modeling.config import RMTConfig
from rmt.modeling.segmentation import batch_schedule


@dataclass
class RMTOutput(ModelOutput):
    """Output of `RMTForCausalLM.forward`.

    loss: mean cross-entropy over all labelled tokens of all segments and samples.
    logits: [B, L, V] aligned with `input_ids`, only when asked for (zeros at padding).
    sample_loss: [B] mean cross-entropy per sample (nan for a sample without labels).
    num_label_tokens: [B] number of labelled tokens per sample.
    memory: [B, M, H] memory written by the last segment.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    sample_loss: torch.Tensor | None = None
    num_label_tokens: torch.Tensor | None = None
    memory: torch.Tensor | None = None


class RMTForCausalLM(PreTrainedModel):
    config_class = RMTConfig
    base_model_prefix = "rmt"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, config: RMTConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        if backbone is None:
            backbone = AutoModelForCausalLM.from_config(config.backbone_config)
        else:
            # Weights of a given (possibly pretrained) backbone must survive post_init's initialisation.
            for module in backbone.modules():
                module._is_hf_initialized = True
        self.backbone = backbone
        emb = backbone.get_input_embeddings().weight
        hidden = emb.shape[1]
        self.memory = nn.Parameter(
            torch.empty(config.num_mem_tokens, hidden, dtype=emb.dtype, device=emb.device)
        )
        self.post_init()
        if config.lora:
            from rmt.modeling.lora import wrap_backbone_with_lora

            self.backbone = wrap_backbone_with_lora(self.backbone, **config.lora)
        if config.freeze_backbone:
            self.freeze_backbone()

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_backbone(cls, model: PreTrainedModel, **rmt_kwargs) -> RMTForCausalLM:
        """Wrap an existing causal LM (its weights are kept) with memory, e.g. `num_mem_tokens=10`."""
        config = RMTConfig(backbone_config=model.config, **rmt_kwargs)
        return cls(config, backbone=model)

    def _init_weights(self, module):
        if module is self:
            std = getattr(self.config.backbone_config, "initializer_range", 0.02)
            hf_init.normal_(self.memory, mean=0.0, std=std)

    def freeze_backbone(self) -> None:
        """Train only the memory (and LoRA adapters): the backbone's own weights get no gradient."""
        for name, param in self.backbone.named_parameters():
            if "lora_" not in name:
                param.requires_grad_(False)

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def get_output_embeddings(self):
        return self.backbone.get_output_embeddings()

    def _use_checkpointing(self, n_steps: int) -> bool:
        mode = self.config.segment_checkpointing
        if not torch.is_grad_enabled() or n_steps < 2:
            return False
        if mode == "auto":
            return n_steps >= self.config.checkpointing_min_segments
        return bool(mode)

    # ------------------------------------------------------------------ one segment
    def _run_segment(
        self,
        memory: torch.Tensor,  # [A, M, H] read memory
        seg_ids: torch.Tensor,  # [A, Ls] right-padded segment tokens
        seg_mask: torch.Tensor,  # [A, Ls] 1 for real tokens
        rows: torch.Tensor,  # [K] row of each hidden state to return
        cols: torch.Tensor,  # [K] column (within the segment) of each hidden state to return
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run `[mem ; seg ; pad ; mem]` through the backbone; return (new memory, selected hidden states)."""
        lm = self.backbone
        emb = lm.get_input_embeddings()(seg_ids)
        m = self.config.num_mem_tokens
        memory = memory.to(emb.dtype)
        a = seg_ids.shape[0]
        ones = seg_mask.new_ones(a, m)
        x = torch.cat([memory, emb, memory], dim=1)
        mask = torch.cat([ones, seg_mask, ones], dim=1)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = lm.base_model(
            inputs_embeds=x, attention_mask=mask, position_ids=positions, use_cache=False
        ).last_hidden_state
        new_memory = hidden[:, hidden.shape[1] - m :]
        return new_memory, hidden[rows, cols + m]

    def _prepare(self, input_ids, attention_mask):
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
            attention_mask = None if attention_mask is None else attention_mask.unsqueeze(0)
        if attention_mask is None:
            # No padding: views and slices instead of a mask, index lists and gathered copies, which
            # cost ~24 bytes per input token (24 MB of peak memory for a 1M-token prompt).
            full = slice(0, input_ids.shape[1])
            positions = [full] * input_ids.shape[0]
            ids = list(input_ids.unbind(0))
        else:
            valid = attention_mask.bool()
            positions = [row.nonzero().squeeze(1) for row in valid]
            ids = [input_ids[b, p] for b, p in enumerate(positions)]
        empty = [b for b, t in enumerate(ids) if t.numel() == 0]
        if empty:
            raise ValueError(f"samples {empty} have no tokens (attention_mask is all zeros)")
        return input_ids, ids, positions

    def _memory_schedule(self, ids):
        lengths = [t.numel() for t in ids]
        schedule = batch_schedule(lengths, self.config.segment_size, self.config.segment_alignment)
        return schedule, [self.memory] * len(ids)

    def _read_memory(self, mems, active, step, n_steps):
        mem_in = torch.stack([mems[b] for b, _, _ in active])
        depth = self.config.bptt_depth
        if depth != -1 and step < n_steps - depth:
            mem_in = mem_in.detach()  # truncated BPTT: no gradient through older memory transitions
        return mem_in

    @staticmethod
    def _pad_segments(ids, active, pad_id):
        segs = [ids[b][s:e] for b, s, e in active]
        width = max(s.numel() for s in segs)
        seg_ids = segs[0].new_full((len(segs), width), pad_id)
        seg_mask = segs[0].new_zeros((len(segs), width))
        for i, s in enumerate(segs):
            seg_ids[i, : s.numel()] = s
            seg_mask[i, : s.numel()] = 1
        return seg_ids, seg_mask

    # ------------------------------------------------------------------ forward
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
        input_ids, ids, positions = self._prepare(input_ids, attention_mask)
        bsz, device = len(ids), input_ids.device
        want_logits = (labels is None) if return_logits is None else return_logits
        targets = None
        if labels is not None:
            if labels.dim() == 1:
                labels = labels.unsqueeze(0)
            targets = []
            for b, pos in enumerate(positions):
                lab = labels[b, pos]
                targets.append(torch.cat([lab[1:], lab.new_full((1,), -100)]))

        schedule, mems = self._memory_schedule(ids)
        n_steps = len(schedule)
        use_ckpt = self._use_checkpointing(n_steps)
        head = self.get_output_embeddings()
        loss_sum = torch.zeros(bsz, device=device, dtype=torch.float32)
        counts = torch.zeros(bsz, device=device, dtype=torch.long)
        logit_parts: list[list[torch.Tensor]] = [[] for _ in range(bsz)]

        for step, active in enumerate(schedule):
            mem_in = self._read_memory(mems, active, step, n_steps)
            seg_ids, seg_mask = self._pad_segments(ids, active, 0)
            tgt = None
            if targets is not None:
                tgt = torch.full_like(seg_ids, -100)
                for i, (b, s, e) in enumerate(active):
                    tgt[i, : e - s] = targets[b][s:e]
            # Hidden states (and the LM head) only where needed: every token, or labelled ones only.
            rows, cols = (seg_mask if want_logits else tgt != -100).nonzero(as_tuple=True)
            # The last segment is never checkpointed: its backward runs right after its forward, so
            # keeping its activations costs no more peak memory than recomputing them would.
            if use_ckpt and step < n_steps - 1:
                new_mem, sel = checkpoint(
                    self._run_segment, mem_in, seg_ids, seg_mask, rows, cols, use_reentrant=False
                )
            else:
                new_mem, sel = self._run_segment(mem_in, seg_ids, seg_mask, rows, cols)
            for i, (b, _, _) in enumerate(active):
                mems[b] = new_mem[i]
            if sel.shape[0] == 0:
                continue
            logits = head(sel)
            if want_logits:
                for i, (b, _, _) in enumerate(active):
                    logit_parts[b].append(logits[rows == i])
            if tgt is not None:
                step_targets = tgt[rows, cols]
                keep = step_targets != -100
                if keep.any():
                    owner = torch.tensor([b for b, _, _ in active], device=device)[rows[keep]]
                    ce = F.cross_entropy(logits[keep].float(), step_targets[keep], reduction="none")
                    loss_sum = loss_sum.index_add(0, owner, ce)
                    counts = counts.index_add(0, owner, torch.ones_like(owner))

        out = RMTOutput(memory=torch.stack(mems) if self.config.num_mem_tokens else None)
        if targets is not None:
            out.loss = loss_sum.sum() / counts.sum().clamp(min=1)
            out.sample_loss = loss_sum / counts.where(counts > 0, torch.zeros_like(counts)).float()
            out.num_label_tokens = counts
        if want_logits:
            vocab = head.weight.shape[0]
            full = input_ids.new_zeros((bsz, input_ids.shape[1], vocab), dtype=head.weight.dtype)
            full = full.float() if full.dtype == torch.float16 else full
            for b, pos in enumerate(positions):
                full[b, pos] = torch.cat(logit_parts[b]).to(full.dtype)
            out.logits = full
        return out

    # ------------------------------------------------------------------ generation
    def read_memory(self, input_ids, attention_mask=None):
        """Process all but the last segment of each sample; return (per-sample memories, ids, schedule)."""
        input_ids, ids, _ = self._prepare(input_ids, attention_mask)
        schedule, mems = self._memory_schedule(ids)
        n_steps = len(schedule)
        for step, active in enumerate(schedule[:-1]):
            mem_in = self._read_memory(mems, active, step, n_steps)
            seg_ids, seg_mask = self._pad_segments(ids, active, 0)
            empty = seg_ids.new_zeros(0)
            new_mem, _ = self._run_segment(mem_in, seg_ids, seg_mask, empty, empty)
            for i, (b, _, _) in enumerate(active):
                mems[b] = new_mem[i]
        return mems, ids, schedule[-1]

    def prepare_final_segment(self, input_ids, attention_mask=None):
        """Left-padded `inputs_embeds = [memory ; last segment]` and its mask, ready for HF generate."""
        mems, ids, last = self.read_memory(input_ids, attention_mask)
        emb_layer = self.get_input_embeddings()
        rows = []
        for b, s, e in last:
            seg_emb = emb_layer(ids[b][s:e])
            rows.append(torch.cat([mems[b].to(seg_emb.dtype), seg_emb], dim=0))
        width = max(r.shape[0] for r in rows)
        x = rows[0].new_zeros((len(rows), width, rows[0].shape[1]))
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=x.device)
        for i, r in enumerate(rows):
            x[i, width - r.shape[0] :] = r
            mask[i, width - r.shape[0] :] = 1
        return x, mask

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, **generate_kwargs) -> torch.Tensor:
        """Generate after the prompt, reading it through memory; returns only the new tokens [B, T].

        All but the last segment of the prompt write memory; the last segment gets the read memory and
        no write memory, and the backbone's own `generate` (greedy, sampling, beams, ...) continues it.
        """
        x, mask = self.prepare_final_segment(input_ids, attention_mask)
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
        return lm.generate(inputs_embeds=x, attention_mask=mask, **generate_kwargs)
