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
    positions: "learned" (absolute position embeddings, a hard limit) or "rotary" (RoPE).
    is_causal: decoder (causal attention) or encoder (bidirectional, e.g. BERT).
    """

    layers: str
    positions: str
    is_causal: bool = True


ADAPTERS: dict[str, BackboneAdapter] = {
    "gpt2": BackboneAdapter(layers="h", positions="learned"),
    "gpt_neox": BackboneAdapter(layers="layers", positions="rotary"),
    "llama": BackboneAdapter(layers="layers", positions="rotary"),
    "qwen2": BackboneAdapter(layers="layers", positions="rotary"),
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


def base_model(backbone: PreTrainedModel) -> nn.Module:
    """The backbone without its head: returns hidden states (works for every HF model)."""
    return backbone.base_model


def decoder_layers(backbone: PreTrainedModel) -> nn.ModuleList:
    """The backbone's transformer blocks, in order (e.g. to hook a per-layer memory into them)."""
    module = base_model(backbone)
    for name in adapter_for(backbone.config).layers.split("."):
        module = getattr(module, name)
    return module
