"""qa1, qa9-qa14: where people are, said plainly, negated, uncertain, by pronoun, in pairs,
or at times of day.
"""

from __future__ import annotations

import random

from rmt.tasks.babilong.generators.common import (
    MOVE_VERBS,
    PEOPLE,
    QA10_PEOPLE,
    QA10_ROOMS,
    ROOMS,
    Candidate,
    Schedule,
    Story,
    move_sentence,
    run_story,
)

SCHEDULES = {
    "qa1": Schedule(every=2, questions=5, gap=4, max_facts=10),
    "qa9": Schedule(every=2, questions=5, gap=4, max_facts=10),
    "qa10": Schedule(every=2, questions=5, gap=4, max_facts=10),
    "qa11": Schedule(every=2, questions=5, gap=4, max_facts=10),
    "qa12": Schedule(every=2, questions=5, gap=2, max_facts=10),
    "qa13": Schedule(every=2, questions=5, gap=2, max_facts=10),
    "qa14": Schedule(every=2, questions=5, gap=7, max_facts=16, first=4),
}
COREF_OPENERS = ("After that", "Afterwards", "Following that", "Then")
PRONOUN = {"Mary": "she", "Sandra": "she", "John": "he", "Daniel": "he"}
TIMES = ("yesterday", "this morning", "this afternoon", "this evening")


class _Belief:
    """What the story says about each person: ("in" | "not" | "either", rooms, fact)."""

    def __init__(self, rng: random.Random, people: tuple[str, ...], rooms: tuple[str, ...]):
        self.rng, self.people, self.rooms = rng, people, rooms
        self.state: dict[str, tuple[str, tuple[str, ...], int]] = {}

    def step(self, story: Story, kinds: dict[str, float]) -> None:
        rng = self.rng
        person = rng.choice(self.people)
        kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
        if kind == "move":
            room = rng.choice(self.rooms)
            self.state[person] = ("in", (room,), story.add(move_sentence(rng, person, room)))
        elif kind == "is":
            room = rng.choice(self.rooms)
            self.state[person] = ("in", (room,), story.add(f"{person} is in the {room}."))
        elif kind == "not":
            room = rng.choice(self.rooms)
            phrase = rng.choice(("is not in", "is no longer in"))
            self.state[person] = ("not", (room,), story.add(f"{person} {phrase} the {room}."))
        else:
            a, b = rng.sample(self.rooms, 2)
            fact = story.add(f"{person} is either in the {a} or the {b}.")
            self.state[person] = ("either", (a, b), fact)

    def questions(self, p_yes: float, p_maybe: float) -> list[Candidate]:
        out = []
        for person, (kind, rooms, fact) in sorted(self.state.items()):
            others = [r for r in self.rooms if r not in rooms]
            if kind == "in":
                room = rooms[0] if self.rng.random() < p_yes else self.rng.choice(others)
                answer = "yes" if room == rooms[0] else "no"
            elif kind == "not":
                room, answer = rooms[0], "no"  # nothing else is known about where they are
            else:
                inside = self.rng.random() < p_maybe
                room = self.rng.choice(rooms if inside else others)
                answer = "maybe" if inside else "no"
            out.append((f"Is {person} in the {room}?", answer, (fact,)))
        return out


def _qa1(rng: random.Random, stop: int | None) -> Story | None:
    loc: dict[str, tuple[str, int]] = {}

    def step(story: Story) -> None:
        person = rng.choice(PEOPLE)
        room = rng.choice([r for r in ROOMS if r != loc.get(person, ("",))[0]])
        loc[person] = (room, story.add(move_sentence(rng, person, room)))

    def ask(_: Story) -> list[Candidate]:
        return [(f"Where is {p}?", room, (i,)) for p, (room, i) in sorted(loc.items())]

    return run_story(rng, SCHEDULES["qa1"], step, ask, stop)


def _qa9(rng: random.Random, stop: int | None) -> Story | None:
    belief = _Belief(rng, PEOPLE, ROOMS)
    kinds = {"is": 0.246, "not": 0.258, "move": 0.496}
    return run_story(
        rng, SCHEDULES["qa9"], lambda s: belief.step(s, kinds),
        lambda _: belief.questions(p_yes=0.5, p_maybe=0.0), stop,
    )  # fmt: skip


def _qa10(rng: random.Random, stop: int | None) -> Story | None:
    belief = _Belief(rng, QA10_PEOPLE, QA10_ROOMS)
    kinds = {"is": 0.257, "either": 0.247, "move": 0.496}
    return run_story(
        rng, SCHEDULES["qa10"], lambda s: belief.step(s, kinds),
        lambda _: belief.questions(p_yes=0.55, p_maybe=0.6), stop,
    )  # fmt: skip


def _paired(task: str, rng: random.Random, stop: int | None) -> Story | None:
    """qa11-qa13: a named sentence, then (qa11, qa13) one that refers back to it."""
    group = 1 if task == "qa11" else 2
    loc: dict[str, tuple[str, tuple[int, ...]]] = {}
    last: dict[str, object] = {}

    def step(story: Story) -> None:
        follow = task != "qa12" and last.get("pending")
        if follow:
            who, first = last["who"], last["fact"]
            room = rng.choice(ROOMS)
            subject = "they" if group == 2 else PRONOUN[who[0]]
            opener = rng.choice(COREF_OPENERS)
            fact = story.add(f"{opener} {subject} {rng.choice(MOVE_VERBS)} the {room}.")
            support = (first, fact)
            last["pending"] = False
        else:
            who = tuple(rng.sample(PEOPLE, group))
            room = rng.choice(ROOMS)
            fact = story.add(move_sentence(rng, " and ".join(who), room))
            support = (fact,)
            last.update(who=who, fact=fact, pending=True)
        for person in who:
            loc[person] = (room, support)

    def ask(_: Story) -> list[Candidate]:
        return [(f"Where is {p}?", room, support) for p, (room, support) in sorted(loc.items())]

    return run_story(rng, SCHEDULES[task], step, ask, stop)


def _qa14(rng: random.Random, stop: int | None) -> Story | None:
    """Each person's day (yesterday ... this evening), told out of order."""
    timeline: dict[str, list[str]] = {}
    for person in QA10_PEOPLE:
        rooms = timeline[person] = []
        for _ in range(4 if rng.random() < 0.5 else 3):
            rooms.append(rng.choice([r for r in QA10_ROOMS if not rooms or r != rooms[-1]]))
    # told out of order, but one person's day tends to come in runs, as in bAbI
    pending = {p: rng.sample(range(len(rooms)), len(rooms)) for p, rooms in timeline.items()}
    events, person = [], rng.choice(QA10_PEOPLE)
    while any(pending.values()):
        if not pending[person] or rng.random() < 0.5:
            person = rng.choice([p for p in QA10_PEOPLE if pending[p]])
        k = pending[person].pop()
        events.append((person, k, timeline[person][k]))
    events.reverse()  # step() pops from the end
    told: dict[tuple[str, int], tuple[str, int]] = {}

    def step(story: Story) -> bool:
        if not events:
            return False
        person, k, room = events.pop()
        verb, when = rng.choice(MOVE_VERBS), TIMES[k]
        if rng.random() < 0.5:
            sentence = f"{when[0].upper()}{when[1:]} {person} {verb} the {room}."
        else:
            sentence = f"{person} {verb} the {room} {when}."
        told[(person, k)] = (room, story.add(sentence))
        return True

    def ask(_: Story) -> list[Candidate]:
        latest: dict[tuple[str, str], int] = {}  # "before the X" means the latest told visit
        for person, k in sorted(told):
            latest[(person, told[(person, k)][0])] = k
        out = []
        for (person, room), k in sorted(latest.items()):
            if k and (person, k - 1) in told:
                before, prev = told[(person, k - 1)]
                support = (told[(person, k)][1], prev)
                out.append((f"Where was {person} before the {room}?", before, support))
        return out

    return run_story(rng, SCHEDULES["qa14"], step, ask, stop)


BUILDERS = {
    "qa1": _qa1,
    "qa9": _qa9,
    "qa10": _qa10,
    "qa11": lambda rng, stop: _paired("qa11", rng, stop),
    "qa12": lambda rng, stop: _paired("qa12", rng, stop),
    "qa13": lambda rng, stop: _paired("qa13", rng, stop),
    "qa14": _qa14,
}
