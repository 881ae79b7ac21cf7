"""rmt: Recurrent Memory Transformer toolkit for Hugging Face causal language models."""

from rmt.modeling import RMTConfig, RMTForCausalLM

__all__ = ["RMTConfig", "RMTForCausalLM"]
__version__ = "0.1.0"
