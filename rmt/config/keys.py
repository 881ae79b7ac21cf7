"""Keys a schema does not know, including those Hydra's ``+key=value`` added.

Hydra refuses ``memory.num_token=5`` (no such field) at compose time, but ``+memory.num_token=5``
adds the key past the schema, so a typo would train with the default and store the stray key in
config.yaml. Walking the composed config against its dataclass schemas catches both forms.
"""

from __future__ import annotations

import dataclasses
import difflib

from omegaconf import DictConfig, OmegaConf

from rmt.errors import ConfigError


def unknown_keys(node: DictConfig, prefix: str = "") -> list[tuple[str, list[str]]]:
    """``(dotted key, known sibling keys)`` for every key of a dataclass node not in its schema."""
    found = []
    schema = OmegaConf.get_type(node)
    known = (
        [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    )
    for key in node.keys():
        if known is not None and key not in known and not (key == "hydra" and not prefix):
            found.append((f"{prefix}{key}", known))
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not (child._is_missing() or child._is_none()):
            found.extend(unknown_keys(child, f"{prefix}{key}."))
    return found


def check_known_keys(cfg: DictConfig, command: str) -> None:
    """Refuse the first key outside the schema, naming it and the likely intended key."""
    found = unknown_keys(cfg)
    if not found:
        return
    key, known = found[0]
    parent, _, name = key.rpartition(".")
    where = f"{parent}." if parent else ""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"Did you mean {where}{close[0]}=...? " if close else ""
    raise ConfigError(
        f"unknown key {key} ({command} has no such setting; +{key}=... cannot add one). "
        f"{hint}Use one of the keys of {parent or 'the root config'}: {', '.join(known)}."
    )
