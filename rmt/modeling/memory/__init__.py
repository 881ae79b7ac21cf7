"""Memory mechanisms behind one interface (`base.MemoryMechanism`), picked by `RMTConfig.memory_type`.

A new mechanism is one file in this package and one line in `MECHANISMS`.
"""

from __future__ import annotations

from rmt.modeling.memory.armt import AssociativeMemory
from rmt.modeling.memory.base import MemoryMechanism, SegmentInputs
from rmt.modeling.memory.tokens import TokenMemory

MECHANISMS: dict[str, type[MemoryMechanism]] = {
    "tokens": TokenMemory,  # RMT: memory tokens read before and written after each segment
    "armt": AssociativeMemory,  # ARMT: memory tokens + per-layer associative matrices (delta rule)
}


def mechanism_class(memory_type: str) -> type[MemoryMechanism]:
    """The registered class of `memory_type`; the error lists what is registered."""
    try:
        return MECHANISMS[memory_type]
    except KeyError:
        raise ValueError(
            f"memory_type={memory_type!r} is not a registered memory mechanism; use one of "
            f"{', '.join(sorted(MECHANISMS))} (or register yours in rmt.modeling.memory.MECHANISMS)."
        ) from None


def build_memory(config, hidden_size: int, *, dtype=None, device=None) -> MemoryMechanism:
    """The memory mechanism an `RMTConfig` asks for."""
    return mechanism_class(config.memory_type).from_config(
        config, hidden_size=hidden_size, dtype=dtype, device=device
    )


__all__ = ["MECHANISMS", "AssociativeMemory", "MemoryMechanism", "SegmentInputs", "TokenMemory", "build_memory",
           "mechanism_class"]  # fmt: skip
