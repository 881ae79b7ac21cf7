"""qa2, qa3, qa5, qa6, qa7, qa8: people carry, drop and hand over objects between rooms.

Rates of object actions, gives and "there" are the shares of each sentence kind in the real
bAbI v1.2 en-10k test files (scripts/babi_compare.py prints them).
"""

from __future__ import annotations

import random

from rmt.tasks.babilong.generators.common import (
    NUMBERS,
    PEOPLE,
    QA5_PEOPLE,
    Candidate,
    Schedule,
    Story,
    run_story,
)
from rmt.tasks.babilong.generators.world import Style, World

SCHEDULES = {
    "qa2": Schedule(every=2, questions=5, gap=4, max_facts=100, ask_rate=0.6),
    "qa3": Schedule(every=2, questions=5, gap=4, max_facts=240, ask_rate=0.2),
    "qa5": Schedule(every=2, questions=5, gap=4, max_facts=100),
    "qa6": Schedule(every=2, questions=5, gap=4, max_facts=20),
    "qa7": Schedule(every=2, questions=5, gap=4, max_facts=40, ask_rate=0.8),
    "qa8": Schedule(every=2, questions=5, gap=4, max_facts=60),
}
# task: (share of object actions, share of gives among them, style)
_RATES = {
    "qa2": (0.35, 0.0, Style(pick_there=1.0, drop_there=0.19)),
    "qa3": (0.36, 0.0, Style(pick_there=0.2, drop_there=0.21)),
    "qa5": (0.44, 0.36, Style(pick_there=1.0, drop_there=0.2)),
    "qa6": (0.33, 0.0, Style(pick_there=1.0, drop_there=0.18)),
    "qa7": (0.43, 0.31, Style(pick_there=1.0, drop_there=0.25, let_go=0.7)),
    "qa8": (0.33, 0.0, Style(pick_there=1.0, drop_there=0.25, let_go=0.6)),
}


def _where_is(w: World) -> list[Candidate]:
    return [
        (f"Where is the {o}?", w.obj_room(o), w.room_support(o))
        for o in w.objects
        if w.obj_room(o) is not None
    ]


def _where_was(w: World) -> list[Candidate]:
    out = []
    for obj, hist in w.history.items():
        rooms = [room for room, _ in hist]
        for room in sorted(set(rooms[1:])):
            j = len(rooms) - 1 - rooms[::-1].index(room)  # the latest visit of that room
            if j == 0:
                continue
            support = set(hist[j - 1][1]) | set(hist[j][1]) | {w.last_touch[obj]}
            out.append((f"Where was the {obj} before the {room}?", rooms[j - 1], tuple(support)))
    return out


# question, which field of the give (giver, object, receiver) answers it, share in bAbI
_QA5_PATTERNS = (
    ("What did {g} give to {r}?", 1, 0.33),
    ("Who gave the {o}?", 0, 0.178),
    ("Who did {g} give the {o} to?", 2, 0.171),
    ("Who gave the {o} to {r}?", 0, 0.168),
    ("Who received the {o}?", 2, 0.153),
)


def _who_gave(w: World) -> list[Candidate]:
    """A question about the latest give (so no earlier give can answer it too)."""
    gives = [(i, e) for i, e in enumerate(w.events) if e[0] == "give"]
    if not gives:
        return []
    at, (_, giver, receiver, obj) = gives[-1]
    weights = [share for *_, share in _QA5_PATTERNS]
    pattern, field, _ = w.rng.choices(_QA5_PATTERNS, weights=weights)[0]
    text = pattern.format(g=giver, o=obj, r=receiver)
    return [(text, (giver, obj, receiver)[field], (at,))]


def _is_in(w: World) -> list[Candidate]:
    out = []
    for p in w.people:
        room = w.loc[p]
        if room is None:
            continue
        asked = room if w.rng.random() < 0.5 else w.rng.choice([r for r in w.rooms if r != room])
        out.append((f"Is {p} in the {asked}?", "yes" if asked == room else "no", (w.loc_fact[p],)))
    return out


def _count(w: World) -> list[Candidate]:
    return [
        (f"How many objects is {p} carrying?", NUMBERS[len(w.carried[p])], tuple(w.handled[p]))
        for p in w.people
        if w.handled[p]
    ]


def _listing(w: World) -> list[Candidate]:
    return [
        (f"What is {p} carrying?", ",".join(w.carried[p]) or "nothing", tuple(w.handled[p]))
        for p in w.people
        if w.handled[p]
    ]


_QUESTIONS = {"qa2": _where_is, "qa3": _where_was, "qa5": _who_gave, "qa6": _is_in,
              "qa7": _count, "qa8": _listing}  # fmt: skip


def build(task: str, rng: random.Random, stop: int | None) -> Story | None:
    """One story of ``task`` (see :func:`rmt.tasks.babilong.generators.common.run_story`)."""
    object_rate, give_rate, style = _RATES[task]
    people = QA5_PEOPLE if task == "qa5" else PEOPLE
    story = Story()
    # bAbI's qa3 answers "garden" in 21.5% of its test questions, not one in six,
    weights = {"garden": 1.45} if task == "qa3" else {}
    # and its qa5 names Jeff less often than the others
    activity = {"Jeff": 0.6} if task == "qa5" else {}
    world = World(rng, story, people, style=style, room_weights=weights, activity=activity)
    ask = _QUESTIONS[task]

    def step(_: Story) -> None:
        # once qa5's objects change hands they keep doing so, as in bAbI
        if task == "qa5" and any(e[0] == "give" for e in world.events) and rng.random() < 0.15:
            if world.random_object_action(give_rate=1.0):
                return
        world.random_step(object_rate, give_rate)

    return run_story(rng, SCHEDULES[task], step, lambda _: ask(world), stop=stop, story=story)
