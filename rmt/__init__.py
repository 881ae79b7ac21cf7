"""rmt: Recurrent Memory Transformer toolkit for Hugging Face models (causal LMs and encoders)."""

from rmt.modeling import RMTConfig, RMTForCausalLM, RMTForSequenceClassification

__all__ = ["RMTConfig", "RMTForCausalLM", "RMTForSequenceClassification"]
__version__ = "0.1.0"
