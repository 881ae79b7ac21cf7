"""What rmt knows about each backbone family, in one place.

The core only needs a backbone's base model (hidden states, no LM head) and its input embeddings,
which every Hugging Face model exposes. A memory mechanism that hooks into layers, or a head that
must know whether attention is causal or how positions are encoded, asks here, never by an
`if model_type == ...` of its own. A new family is one entry in `ADAPTERS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel


@dataclass(frozen=True)
class BackboneAdapter:
    """How one backbone family is built.

    layers: attribute path, from the base model, of the `nn.ModuleList` of transformer blocks.
    positions: "learned" (absolute position embeddings, a hard limit), "rotary" (RoPE) or
        "relative" (DeBERTa: attention biases from token distances, no position ids).
    is_causal: decoder (causal attention) or encoder (bidirectional, e.g. BERT).
    positions_after_padding_idx: position ids start at `pad_token_id + 1`, not 0 (RoBERTa's
        embedding table reserves the rows up to the padding index).
    pooler: attribute of the base model's own pooler (BERT's [CLS] dense layer), which rmt's
        heads never use; its weights are frozen so that DDP does not wait for their gradients.
    mlp: attribute, on each block, of its MLP as one module called on the hidden states (what
        the "mlp" recomputation scheme checkpoints); None where the family splits it (BERT's
        `intermediate` and `output`) or it is not tested.
    """

    layers: str
    positions: str
    is_causal: bool = True
    positions_after_padding_idx: bool = False
    pooler: str | None = None
    mlp: str | None = None


ADAPTERS: dict[str, BackboneAdapter] = {
    "gpt2": BackboneAdapter(layers="h", positions="learned", mlp="mlp"),
    "gpt_neox": BackboneAdapter(layers="layers", positions="rotary", mlp="mlp"),
    "llama": BackboneAdapter(layers="layers", positions="rotary", mlp="mlp"),
    "qwen2": BackboneAdapter(layers="layers", positions="rotary", mlp="mlp"),
    # Encoders: bidirectional attention (the memory is read and written in place).
    "bert": BackboneAdapter(
        layers="encoder.layer", positions="learned", is_causal=False, pooler="pooler"
    ),
    "roberta": BackboneAdapter(
        layers="encoder.layer",
        positions="learned",
        is_causal=False,
        positions_after_padding_idx=True,
        pooler="pooler",
    ),
    "deberta-v2": BackboneAdapter(layers="encoder.layer", positions="relative", is_causal=False),
    "modernbert": BackboneAdapter(layers="layers", positions="rotary", is_causal=False),
}


def adapter_for(config: PreTrainedConfig) -> BackboneAdapter:
    """The adapter of a backbone config's family; the error lists the known families."""
    try:
        return ADAPTERS[config.model_type]
    except KeyError:
        raise ValueError(
            f"backbone model_type={config.model_type!r} has no adapter in rmt.modeling.adapters "
            f"(known: {', '.join(sorted(ADAPTERS))}); add one entry to ADAPTERS."
        ) from None


def is_causal(config: PreTrainedConfig | None) -> bool:
    """Whether the backbone attends causally; families without an adapter count as decoders (the
    layout rmt used for every backbone before encoders, which is also correct for an encoder).
    No config (the run-config schema sizing a decoder task's memory) also means a decoder."""
    adapter = None if config is None else ADAPTERS.get(config.model_type)
    return True if adapter is None else adapter.is_causal


def position_offset(config: PreTrainedConfig | None) -> int:
    """The position id of a segment's first input (0, or `pad_token_id + 1` for RoBERTa)."""
    adapter = None if config is None else ADAPTERS.get(config.model_type)
    if adapter is None or not adapter.positions_after_padding_idx:
        return 0
    return config.pad_token_id + 1


def unused_pooler(backbone: PreTrainedModel) -> nn.Module | None:
    """The base model's own pooler, which no rmt head reads (None when it has none)."""
    adapter = ADAPTERS.get(backbone.config.model_type)
    name = None if adapter is None else adapter.pooler
    return None if name is None else getattr(base_model(backbone), name, None)


def base_model(backbone: PreTrainedModel) -> nn.Module:
    """The backbone without its head: returns hidden states (works for every HF model)."""
    return backbone.base_model


def decoder_layers(backbone: PreTrainedModel) -> nn.ModuleList:
    """The backbone's transformer blocks, in order (e.g. to hook a per-layer memory into them)."""
    module = base_model(backbone)
    for name in adapter_for(backbone.config).layers.split("."):
        module = getattr(module, name)
    return module


def decoder_mlps(backbone: PreTrainedModel) -> list[nn.Module] | None:
    """Each block's MLP, in order; None when the family's adapter names none (see `mlp`)."""
    adapter = ADAPTERS.get(backbone.config.model_type)
    if adapter is None or adapter.mlp is None:
        return None
    return [getattr(layer, adapter.mlp) for layer in decoder_layers(backbone)]


def has_mlps(model_type: str) -> bool:
    """Whether the family's MLPs can be recomputed on their own (the "mlp" scheme)."""
    adapter = ADAPTERS.get(model_type)
    return adapter is not None and adapter.mlp is not None
