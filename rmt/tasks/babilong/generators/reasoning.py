"""qa15, qa16, qa20: deduction (species fear), induction (species colour) and motivations."""

from __future__ import annotations

import random

from rmt.tasks.babilong.generators.common import MOVE_VERBS, PICK_VERBS, Story

FEAR_NAMES = ("Emily", "Gertrude", "Jessica", "Winona")
SPECIES = {"cat": "Cats", "mouse": "Mice", "sheep": "Sheep", "wolf": "Wolves"}
INDUCTION_NAMES = ("Bernhard", "Brian", "Greg", "Julius", "Lily")
ANIMALS = ("frog", "lion", "rhino", "swan")
COLORS = ("gray", "green", "white", "yellow")
AGENTS = ("Antoine", "Jason", "Sumit", "Yann")
# state -> (where one goes, what one gets there)
MOTIVES = {"hungry": ("kitchen", "apple"), "thirsty": ("kitchen", "milk"),
           "tired": ("bedroom", "pajamas"), "bored": ("garden", "football")}  # fmt: skip


def _qa15(rng: random.Random) -> Story:
    """Each species fears another (wolves more often, as in bAbI); who fears what?"""
    facts: list[tuple[str, tuple]] = []
    fears = {}
    for animal, plural in SPECIES.items():
        others = [a for a in SPECIES if a != animal]
        feared = rng.choices(others, weights=[2.0 if a == "wolf" else 1.0 for a in others])[0]
        fears[animal] = feared
        facts.append((f"{plural} are afraid of {SPECIES[feared].lower()}.", ("rule", animal)))
    kind = {name: rng.choice(sorted(SPECIES)) for name in FEAR_NAMES}
    facts += [(f"{name} is a {kind[name]}.", ("is", name)) for name in FEAR_NAMES]
    rng.shuffle(facts)
    story = Story([text for text, _ in facts])
    where = {key: i for i, (_, key) in enumerate(facts)}
    for name in rng.sample(FEAR_NAMES, len(FEAR_NAMES)):
        support = (where[("is", name)], where[("rule", kind[name])])
        story.ask((f"What is {name.lower()} afraid of?", fears[kind[name]], support))
    return story


def _qa16(rng: random.Random) -> Story | None:
    """Four people with a species and a colour, a fifth with a species: guess its colour."""
    color = {animal: rng.choice(COLORS) for animal in ANIMALS}
    *known, target = rng.sample(INDUCTION_NAMES, len(INDUCTION_NAMES))
    kind = {name: rng.choice(ANIMALS) for name in known}
    kind[target] = rng.choice(sorted(set(kind.values())))
    queue = {name: [(f"{name} is a {kind[name]}.", "is")] for name in INDUCTION_NAMES}
    for name in known:
        queue[name].append((f"{name} is {color[kind[name]]}.", "color"))
    story, where = Story(), {}
    while any(queue.values()):  # interleave people, each one's species before its colour
        name = rng.choice([n for n in INDUCTION_NAMES if queue[n]])
        text, key = queue[name].pop(0)
        where[(name, key)] = story.add(text)
    witnesses = [n for n in known if kind[n] == kind[target]]
    witness = max(witnesses, key=lambda n: where[(n, "color")])
    support = (where[(target, "is")], where[(witness, "is")], where[(witness, "color")])
    if len(story.facts) - 1 - max(support) > 6:  # bAbI asks within six facts of the clue
        return None
    story.ask((f"What color is {target}?", color[kind[target]], support))
    return story


def _qa20(rng: random.Random) -> Story:
    """People get hungry, thirsty, tired or bored, go where that is fixed and get something."""
    plans = {}
    for name in AGENTS:
        state = rng.choice(sorted(MOTIVES))
        room, thing = MOTIVES[state]
        plan = [("state", state), ("go", room)] + ([("get", thing)] if rng.random() < 0.7 else [])
        plans[name] = plan
    story = Story()
    cause: dict[str, tuple[str, int]] = {}
    while any(plans.values()):
        name = rng.choice([n for n in AGENTS if plans[n]])
        kind, value = plans[name].pop(0)
        who = name.lower()
        if kind == "state":
            fact = story.add(f"{name} is {value}.")
            cause[name] = (value, fact)
            story.ask((f"Where will {who} go?", MOTIVES[value][0], (fact,)))
        elif kind == "go":
            story.add(f"{name} {rng.choice(MOVE_VERBS)} the {value}.")
            state, fact = cause[name]
            story.ask((f"Why did {who} go to the {value}?", state, (fact,)))
        else:
            story.add(f"{name} {rng.choice(PICK_VERBS)} the {value} there.")
            state, fact = cause[name]
            if len(story.facts) - 1 - fact <= 10:  # bAbI asks within ten facts of the cause
                story.ask((f"Why did {who} get the {value}?", state, (fact,)))
    return story


BUILDERS = {
    "qa15": lambda rng, stop: _qa15(rng),
    "qa16": lambda rng, stop: _qa16(rng),
    "qa20": lambda rng, stop: _qa20(rng),
}
SHRINKS = ("qa15", "qa16", "qa20")
