"""The error every layer raises for a config that cannot work.

It lives at the bottom of the package (nothing here imports rmt) so that task packages, the
schemas and the runner can all raise it without importing each other; ``rmt.config`` re-exports
it. Checkpoint problems have their own type, :class:`rmt.run.CheckpointError`.
"""


class ConfigError(ValueError):
    """A config value or combination that cannot work; the message names the key and the fix."""
