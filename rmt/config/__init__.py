"""Typed config schemas (registered in Hydra's ConfigStore on import) and their validation."""

from rmt.config.schema import ConfigError, TrainConfig, validate

__all__ = ["ConfigError", "TrainConfig", "validate"]
