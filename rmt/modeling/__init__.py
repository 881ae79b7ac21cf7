"""The Recurrent Memory Transformer model.

config (RMTConfig), core (the recurrent segment loop), memory/ (memory mechanisms), adapters
(backbone families), causal_lm (the causal-LM head), seq_cls (the classification head), factory
(config -> model for train/eval), segmentation, backbones, lora.
"""

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from rmt.modeling.causal_lm import RMTForCausalLM, RMTOutput
from rmt.modeling.config import RMTConfig
from rmt.modeling.core import RMTPreTrainedModel
from rmt.modeling.seq_cls import RMTClassifierOutput, RMTForSequenceClassification

AutoConfig.register("rmt", RMTConfig, exist_ok=True)
AutoModelForCausalLM.register(RMTConfig, RMTForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(RMTConfig, RMTForSequenceClassification, exist_ok=True)

__all__ = ["RMTClassifierOutput", "RMTConfig", "RMTForCausalLM", "RMTForSequenceClassification",
           "RMTOutput", "RMTPreTrainedModel"]  # fmt: skip
