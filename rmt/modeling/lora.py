"""Optional LoRA adapters on the backbone through `peft` (`pip install -e .[peft]`).

The LoRA settings are stored in `RMTConfig.lora`, and `RMTForCausalLM.__init__` re-applies them, so a
checkpoint trained with adapters reloads with `from_pretrained` alone.
"""

from __future__ import annotations


def _require_peft():
    try:
        import peft
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA needs the optional extra: pip install -e '.[peft]'") from err
    return peft


def wrap_backbone_with_lora(backbone, *, r=8, alpha=16, dropout=0.0, target_modules=None):
    """Return `backbone` wrapped by peft with LoRA adapters (base weights frozen by peft)."""
    peft = _require_peft()
    cfg = peft.LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout,
        target_modules=list(target_modules) if target_modules else None, task_type="CAUSAL_LM",
    )  # fmt: skip
    return peft.get_peft_model(backbone, cfg)


def apply_lora(model, *, r=8, alpha=16, dropout=0.0, target_modules=None):
    """Add LoRA adapters to an `RMTForCausalLM` in place; the memory stays trainable."""
    if model.config.lora:
        raise ValueError("this model already has LoRA adapters (config.lora is set)")
    settings = {"r": r, "alpha": alpha, "dropout": dropout,
                "target_modules": list(target_modules) if target_modules else None}  # fmt: skip
    model.backbone = wrap_backbone_with_lora(model.backbone, **settings)
    model.config.lora = settings
    return model
