"""`RMTConfig`: the backbone's config plus the recurrent-memory settings, saved as one config.json.

The backbone config is nested (not flattened) so that any Hugging Face model (a causal LM, or an
encoder for classification) can be wrapped and rebuilt from `config.json` alone, and so
`from_pretrained` needs no extra arguments.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig

from rmt.modeling.adapters import has_mlps, position_offset
from rmt.modeling.checkpointing import SETTINGS
from rmt.modeling.memory import mechanism_class

ALIGNMENTS = ("left", "right", "center")
CLASSIFIER_INPUTS = ("memory", "first_token")
MEMORY_POOLINGS = ("mean", "first")


def position_budget_error(
    *, segment_size: int, extra: int, limit: int | None,
    segment_key: str = "segment_size", extra_key: str = "2*num_mem_tokens", hint: str = "",
) -> str | None:  # fmt: skip
    """The one position-limit rule (`segment_size + extra <= limit`), for the model config and
    the run config alike; returns the message naming the fix, or None when the segment fits.

    `extra` are the positions the memory mechanism adds to each backbone call.
    """
    need = segment_size + extra
    if limit is None or need <= limit:
        return None
    fixes = "use fewer memory tokens"  # the memory alone may fill the limit: no segment fits
    if limit - extra >= 1:
        fixes = f"lower {segment_key} to {limit - extra} or {fixes}"
    return (
        f"{segment_key}={segment_size} + {extra_key}={extra} = {need} exceeds the backbone's "
        f"position limit of {limit} positions; {fixes}{hint}."
    )


class RMTConfig(PreTrainedConfig):
    """Configuration of a Recurrent Memory Transformer around a Hugging Face model.

    Args:
        backbone_config: config of the wrapped causal LM or encoder (a `PreTrainedConfig` or its dict
            with `model_type`).
        num_mem_tokens: number of memory tokens M. 0 turns memory off (plain segment-wise model).
        segment_size: maximum number of input tokens per segment S. Each backbone call sees S + 2M
            positions (a decoder: read and write memory), or S + M (an encoder: memory read and
            written in place).
        segment_alignment: where the partial segment goes: "left" (segments start at the first token, the
            last one is partial), "right" (the first one is partial, the last one full) or "center" (all
            segments have nearly equal sizes).
        bptt_depth: number of memory transitions the gradient flows back through, counted from the last
            segment; -1 keeps full backpropagation through time.
        segment_checkpointing: what to recompute in backward instead of keeping its activations
            (`rmt.modeling.checkpointing`): true every segment but the last, false nothing, "mlp"
            every decoder layer's MLP, "partial" the fewest earliest segments for the activations
            of the rest to fit `checkpointing_budget` of the free memory, "auto" (the default)
            nothing when the whole chain fits that budget, else the cheapest of these that fits.
        checkpointing_budget: fraction (0 < b <= 1) of the free device memory (RAM on CPU) the kept
            activations may use under "auto" and "partial".
        freeze_backbone: train only the memory (and LoRA adapters, if any): backbone weights get no gradient.
        memory_type: the memory mechanism, a name registered in `rmt.modeling.memory.MECHANISMS`
            ("tokens": RMT's memory tokens; "armt": memory tokens plus per-layer associative memory).
        memory_options: extra keyword arguments of that mechanism (none for "tokens"; for "armt":
            key_dim, feature_map, nu, layers, correction, see `rmt.modeling.memory.armt`).
        memory_init_std: std of the learned first memory (None: the backbone's initializer_range).
            Later memories are normalised last-layer outputs (per-dimension scale about 1); 1.0
            puts the first memory at that scale. On qa1 a model trained on 2 segments with the
            small init failed at 3, and learned 3-4 with 1.0 (README, Results).
        lora: optional dict of LoRA settings (`r`, `alpha`, `dropout`, `target_modules`) applied to the
            backbone when the model is built, so checkpoints with adapters reload with no extra arguments.
        classifier_input: what `RMTForSequenceClassification` classifies: "memory" (the memory
            after the last segment) or "first_token" (the last segment's first token).
        memory_pooling: with classifier_input="memory", "mean" of the memory tokens or the "first" one.
        classifier_dropout: dropout before the classification layer.
    """

    model_type = "rmt"

    backbone_config: dict | PreTrainedConfig | None = None
    num_mem_tokens: int = 10
    segment_size: int = 128
    segment_alignment: str = "left"
    bptt_depth: int = -1
    segment_checkpointing: bool | str = "auto"
    checkpointing_budget: float = 0.5
    freeze_backbone: bool = False
    lora: dict | None = None
    memory_type: str = "tokens"
    memory_options: dict | None = None
    memory_init_std: float | None = None
    classifier_input: str = "memory"
    memory_pooling: str = "mean"
    classifier_dropout: float = 0.0

    def __post_init__(self, **kwargs: Any) -> None:
        # Before the memory budget, `auto` checkpointing was decided by segment count, and configs
        # saved then (rmt 0.1.0's included) carry that threshold. Dropped so it is not saved again.
        kwargs.pop("checkpointing_min_segments", None)
        if isinstance(self.backbone_config, dict):
            bb = dict(self.backbone_config)
            model_type = bb.pop("model_type", None)
            if model_type is None:
                raise ValueError(
                    "RMTConfig.backbone_config: the dict has no 'model_type'; give a PreTrainedConfig or "
                    "a dict saved by config.to_dict() (it includes model_type)."
                )
            bb.pop("transformers_version", None)
            self.backbone_config = AutoConfig.for_model(model_type, **bb)
        super().__post_init__(**kwargs)
        if self.backbone_config is not None:
            self.validate_rmt()

    def max_backbone_positions(self) -> int | None:
        """Position limit of the backbone (None when its config does not declare one), less the
        position ids a family reserves (RoBERTa's start after the padding index)."""
        limit = getattr(self.backbone_config, "max_position_embeddings", None)
        return None if limit is None else limit - position_offset(self.backbone_config)

    def _validate_checkpointing(self) -> None:
        """A known setting (True/False are matched as bools: 1 and 0 are refused), and "mlp" only
        for a family whose MLPs rmt can recompute."""
        mode = self.segment_checkpointing
        if not any(mode is v if isinstance(v, bool) else mode == v for v in SETTINGS):
            raise ValueError(
                f"segment_checkpointing={mode!r}: use true, false, 'auto', 'partial' or 'mlp'."
            )
        if mode == "mlp" and not has_mlps(self.backbone_config.model_type):
            raise ValueError(
                f"segment_checkpointing='mlp': the {self.backbone_config.model_type} backbone has no "
                "single MLP module per layer that rmt knows; use 'auto', 'partial' or true."
            )

    def validate_rmt(self) -> None:
        """Fail early, naming the field and the fix, instead of failing deep inside a forward pass."""
        if not isinstance(self.num_mem_tokens, int) or self.num_mem_tokens < 0:
            raise ValueError(
                f"num_mem_tokens={self.num_mem_tokens!r}: must be an integer >= 0 (0 disables memory)."
            )
        if not isinstance(self.segment_size, int) or self.segment_size < 1:
            raise ValueError(f"segment_size={self.segment_size!r}: must be an integer >= 1.")
        if self.segment_alignment not in ALIGNMENTS:
            raise ValueError(
                f"segment_alignment={self.segment_alignment!r}: unknown; use one of {', '.join(ALIGNMENTS)}."
            )
        if not isinstance(self.bptt_depth, int) or self.bptt_depth < -1 or self.bptt_depth == 0:
            raise ValueError(
                f"bptt_depth={self.bptt_depth!r}: use -1 for full backpropagation through time or "
                "k >= 1 to keep the last k memory transitions."
            )
        self._validate_checkpointing()
        std = self.memory_init_std
        if std is not None and (
            isinstance(std, bool) or not isinstance(std, (int, float)) or std <= 0
        ):
            raise ValueError(
                f"memory_init_std={std!r}: use a positive number (1.0, the scale of the backbone's "
                "normalised outputs) or None (the backbone's initializer_range)."
            )
        budget = self.checkpointing_budget
        if (
            isinstance(budget, bool)
            or not isinstance(budget, (int, float))
            or not (0 < budget <= 1)
        ):
            raise ValueError(
                f"checkpointing_budget={self.checkpointing_budget!r}: use a fraction of the free "
                "memory, 0 < budget <= 1 (e.g. 0.5)."
            )
        for key, choices in (
            ("classifier_input", CLASSIFIER_INPUTS),
            ("memory_pooling", MEMORY_POOLINGS),
        ):
            if getattr(self, key) not in choices:
                raise ValueError(
                    f"{key}={getattr(self, key)!r}: unknown; use one of {', '.join(choices)}."
                )
        mechanism = mechanism_class(self.memory_type)
        mechanism.check_options(
            self.memory_options or {},
            num_layers=getattr(self.backbone_config, "num_hidden_layers", None),
            prefix="memory_options.",
        )
        error = position_budget_error(
            segment_size=self.segment_size,
            extra=mechanism.extra_positions(self),
            limit=self.max_backbone_positions(),
            extra_key="memory positions",
        )
        if error:
            raise ValueError(error)
