"""Typed config schemas (registered in Hydra's ConfigStore on import) and their validation."""

from rmt.config.schema import TrainConfig, typed, validate
from rmt.errors import ConfigError

__all__ = ["ConfigError", "TrainConfig", "typed", "validate"]
