"""The Recurrent Memory Transformer model: config, wrapper, segmentation, backbones."""

from transformers import AutoConfig, AutoModelForCausalLM

from rmt.modeling.config import RMTConfig
from rmt.modeling.model import RMTForCausalLM, RMTOutput

AutoConfig.register("rmt", RMTConfig, exist_ok=True)
AutoModelForCausalLM.register(RMTConfig, RMTForCausalLM, exist_ok=True)

__all__ = ["RMTConfig", "RMTForCausalLM", "RMTOutput"]
