"""Optional LoRA adapters on the backbone through `peft` (`pip install -e .[peft]`).

The LoRA settings are stored in `RMTConfig.lora`, and `RMTPreTrainedModel.__init__` re-applies them, so a
checkpoint trained with adapters reloads with `from_pretrained` alone.
"""

from __future__ import annotations


def _require_peft():
    try:
        import peft  # lazy: optional dependency (the peft extra), needed only for LoRA
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA needs the optional extra: pip install -e '.[peft]'") from err
    return peft


def wrap_backbone_with_lora(backbone, *, r=8, alpha=16, dropout=0.0, target_modules=None):
    """Inject LoRA adapters into `backbone` in place and freeze its other weights.

    Injection (rather than a `PeftModel` wrapper) keeps the backbone's module paths, so tied weights,
    `save_pretrained` and `from_pretrained` keep working on the RMT model unchanged.
    """
    peft = _require_peft()
    cfg = peft.LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout,
        target_modules=list(target_modules) if target_modules else None,
    )  # fmt: skip
    if cfg.target_modules is None:
        # peft's defaults per architecture (q/v projections, GPT-2's c_attn, NeoX's query_key_value)
        from peft.utils.constants import (  # lazy: optional dependency (peft extra)
            TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults,
        )

        model_type = backbone.config.model_type
        if model_type not in defaults:
            raise ValueError(
                f"no default LoRA target modules for {model_type!r}; set lora.target_modules"
            )
        cfg.target_modules = set(defaults[model_type])
    backbone = peft.inject_adapter_in_model(cfg, backbone)
    for name, param in backbone.named_parameters():
        param.requires_grad_("lora_" in name)
    return backbone


def apply_lora(model, *, r=8, alpha=16, dropout=0.0, target_modules=None):
    """Add LoRA adapters to an RMT model in place; the memory stays trainable."""
    if model.config.lora:
        raise ValueError("this model already has LoRA adapters (config.lora is set)")
    settings = {"r": r, "alpha": alpha, "dropout": dropout,
                "target_modules": list(target_modules) if target_modules else None}  # fmt: skip
    model.backbone = wrap_backbone_with_lora(model.backbone, **settings)
    model.config.lora = settings
    return model
