"""The one boundary between configuration and model: train/ and eval/ build, load and inspect
models here, and never name a head class or a mechanism's settings themselves.
"""

from __future__ import annotations

from transformers import PreTrainedConfig, PreTrainedModel

from rmt.modeling.causal_lm import RMTForCausalLM
from rmt.modeling.config import RMTConfig
from rmt.modeling.core import RMTPreTrainedModel
from rmt.modeling.seq_cls import RMTForSequenceClassification

MODEL_TYPE = RMTConfig.model_type  # `model_type` in the config.json of every rmt checkpoint

# Heads by the name a run asks for and by the class name saved in config.json's `architectures`.
HEADS: dict[str, type[RMTPreTrainedModel]] = {
    "causal_lm": RMTForCausalLM,
    "seq_cls": RMTForSequenceClassification,
}


def _head(name: str) -> type[RMTPreTrainedModel]:
    by_class = {cls.__name__: cls for cls in HEADS.values()}
    if name in HEADS or name in by_class:
        return HEADS.get(name) or by_class[name]
    raise ValueError(f"unknown model head {name!r}; use one of {', '.join(HEADS)}")


def backbone_auto_class(head: str = "causal_lm"):
    """The `transformers` Auto class that loads a backbone for `head` (AutoModel for encoders)."""
    return _head(head).backbone_auto_class


def build_model(
    *,
    backbone: PreTrainedModel | None = None,
    backbone_config: PreTrainedConfig | None = None,
    head: str = "causal_lm",
    **rmt_kwargs,
) -> RMTPreTrainedModel:
    """An RMT model with the given head: around `backbone` (weights kept), or a random backbone
    built from `backbone_config`. `rmt_kwargs` are `RMTConfig` fields (num_mem_tokens, ...)."""
    if (backbone is None) == (backbone_config is None):
        raise ValueError("build_model: give exactly one of backbone= or backbone_config=")
    cls = _head(head)
    if backbone is not None:
        return cls.from_backbone(backbone, **rmt_kwargs)
    return cls(RMTConfig(backbone_config=backbone_config, **rmt_kwargs))


def load_model(path, **kwargs) -> RMTPreTrainedModel:
    """Load a saved RMT model (also rmt 0.1.0 checkpoints) with the head its config.json names."""
    config = RMTConfig.from_pretrained(path)
    name = (config.architectures or ["RMTForCausalLM"])[0]
    return _head(name).from_pretrained(path, **kwargs)


def has_memory(model) -> bool:
    """Whether the model carries anything from one segment to the next."""
    return model.memory.enabled


def memory_summary(model) -> dict:
    """The memory's settings for result files: its type and the mechanism's own facts."""
    return {"memory_type": model.config.memory_type, **model.memory.summary()}
