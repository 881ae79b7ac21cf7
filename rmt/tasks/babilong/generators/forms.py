"""Sentence forms: a sentence with its names, places and things replaced by their kind.

``"Mary got the milk there."`` -> ``"{P} got the {O} there."``. Comparing the forms of
generated stories with those of real bAbI files (scripts/babi_compare.py, the generator
tests) shows a missing way of saying something regardless of who or what it is about.
"""

from __future__ import annotations

import re

from rmt.tasks.babilong.generators import common, reasoning, spatial

KINDS = {
    "P": common.PEOPLE + common.QA5_PEOPLE + common.QA10_PEOPLE + reasoning.FEAR_NAMES
    + reasoning.INDUCTION_NAMES + reasoning.AGENTS,
    "L": common.ROOMS + common.QA10_ROOMS,
    "O": common.OBJECTS + ("pajamas",),
    "D": tuple(common.DIRECTIONS),
    "N": common.NUMBERS,
    "S": spatial.SHAPES,
    "C": spatial.CONTAINERS,
    "A": tuple(reasoning.SPECIES) + tuple(reasoning.SPECIES.values()) + reasoning.ANIMALS,
    "K": reasoning.COLORS,
    "M": tuple(reasoning.MOTIVES),
}  # fmt: skip
_KIND_OF = {w.lower(): k for k, words in KINDS.items() for w in words}
_KIND_OF.update({p.lower(): "A" for p in ("mice", "wolves", "cats")})
_PATTERN = re.compile(
    r"\b(" + "|".join(sorted(map(re.escape, _KIND_OF), key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)


def sentence_form(sentence: str) -> str:
    """``sentence`` with every known name or thing replaced by ``{kind}``."""
    return _PATTERN.sub(lambda m: "{" + _KIND_OF[m.group(1).lower()] + "}", sentence.strip())
