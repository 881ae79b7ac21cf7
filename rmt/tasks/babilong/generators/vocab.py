"""Every word the generators can write, so the offline tokenizer never needs ``<unk>``.

Built from the same constants the task modules draw from, plus the fixed words of their
sentence templates; tests generate stories of every task and check nothing falls outside.
"""

from __future__ import annotations

from rmt.tasks.babilong.generators import common, locations, reasoning, spatial

_TEMPLATE_WORDS = (
    "The the there to is in not no longer either or of What Where Who How many objects "
    "carrying was before did give received gave Is yes maybe nothing and they Does fit fits "
    "inside bigger than do you go from afraid are a color will Why get"
)


def vocabulary() -> set[str]:
    """Every word and punctuation mark a generated story, question or answer can contain."""
    words = common.vocabulary() | set(_TEMPLATE_WORDS.split())
    phrases = (
        locations.COREF_OPENERS + tuple(locations.PRONOUN.values()) + locations.TIMES
        + spatial.SHAPES + tuple(spatial.POSITIONS) + spatial.CONTAINERS
        + tuple(spatial.SHORT.values())
        + reasoning.FEAR_NAMES + tuple(reasoning.SPECIES) + tuple(reasoning.SPECIES.values())
        + reasoning.INDUCTION_NAMES + reasoning.ANIMALS + reasoning.COLORS + reasoning.AGENTS
        + tuple(reasoning.MOTIVES)
        + tuple(w for pair in reasoning.MOTIVES.values() for w in pair)
    )  # fmt: skip
    for phrase in phrases:
        words |= set(phrase.split())
    # sentence starts ("This morning ...") and lower-cased names in questions ("emily")
    return words | {w[:1].upper() + w[1:] for w in words} | {w.lower() for w in words}
