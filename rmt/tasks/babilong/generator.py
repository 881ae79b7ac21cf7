"""Offline, seeded generator of bAbI-style tasks qa1..qa10.

Written from the task descriptions in Weston et al. (2015), "Towards AI-Complete Question
Answering": a small simulated world where people move between rooms and pick up, drop and
pass objects. Every story is produced by simulating that world, and the question's answer is
read from the simulated state, so answers are correct by construction; other people's actions
are the distractor facts, as in bAbI.

Why it exists: training and testing must work without any download, and an infinite stream
of fresh stories keeps a small model from memorising the data.

Determinism: each sample comes from an RNG seeded by a SHA-256 of ``(task, seed, split,
index)`` (never Python's salted ``hash``), so DataLoader workers and reruns agree. Splits never
share a story: each story is assigned to a split by a hash of its facts (80/10/10) and a draw
that lands in another split is redrawn.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from rmt.tasks.babilong.babi import BabiSample
from rmt.tasks.base import stable_int

PEOPLE = ("Mary", "John", "Daniel", "Sandra")
QA5_PEOPLE = ("Bill", "Fred", "Jeff", "Mary")  # qa5 answers are scored against these names
QA10_PEOPLE = ("Mary", "John", "Daniel", "Sandra", "Bill", "Fred", "Julie")
ROOMS = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
OBJECTS = ("apple", "football", "milk")
DIRECTIONS = {"north": (0, 1), "south": (0, -1), "east": (1, 0), "west": (-1, 0)}
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
NUMBERS = ("none", "one", "two", "three")

MOVE_VERBS = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
PICK_VERBS = ("picked up", "got", "grabbed", "took")
DROP_VERBS = ("dropped", "put down", "discarded", "left")
GIVE_VERBS = ("gave", "handed", "passed")

TASKS = tuple(f"qa{i}" for i in range(1, 11))
SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation",
                  "val": "validation", "dev": "validation", "test": "test"}  # fmt: skip

# Fewest facts a story of each task can have, the most (qa4 has six rooms on a grid), and the
# default range when the caller gives no bounds (close to the story sizes of bAbI).
TASK_MIN_FACTS = {"qa1": 1, "qa2": 2, "qa3": 3, "qa4": 1, "qa5": 2,
                  "qa6": 1, "qa7": 2, "qa8": 2, "qa9": 1, "qa10": 1}  # fmt: skip
TASK_MAX_FACTS = {"qa4": len(ROOMS) - 1}
DEFAULT_FACTS = {"qa1": (2, 10), "qa2": (3, 30), "qa3": (4, 40), "qa4": (2, 2), "qa5": (2, 30),
                 "qa6": (2, 12), "qa7": (2, 20), "qa8": (2, 20), "qa9": (2, 10),
                 "qa10": (2, 10)}  # fmt: skip

_MAX_DRAWS = 5000


def normalize_split(split: str) -> str:
    try:
        return _SPLIT_ALIASES[split.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}") from None


def split_of_story(facts: tuple[str, ...] | list[str]) -> str:
    """The split a story belongs to, from a stable hash of its facts (80/10/10)."""
    bucket = stable_int("story", "\n".join(facts)) % 10
    return "train" if bucket < 8 else ("validation" if bucket == 8 else "test")


def fact_range(task: str, min_facts: int | None, max_facts: int | None) -> tuple[int, int]:
    """Resolve the number-of-facts bounds for ``task``; a clear error when impossible."""
    d_lo, d_hi = DEFAULT_FACTS[task]
    if max_facts is not None and max_facts < TASK_MIN_FACTS[task]:
        raise ValueError(
            f"max_facts={max_facts} is too small for {task}: its stories need at least "
            f"{TASK_MIN_FACTS[task]} facts; raise max_facts"
        )
    lo = min_facts if min_facts is not None else d_lo
    hi = max_facts if max_facts is not None else max(d_hi, lo)
    if min_facts is None:
        lo = min(lo, hi)
    lo = max(lo, TASK_MIN_FACTS[task])
    cap = TASK_MAX_FACTS.get(task)
    if cap is not None:
        if lo > cap:
            raise ValueError(f"min_facts={min_facts} is too large for {task}: at most {cap}")
        hi = min(hi, cap)
    if lo > hi:
        raise ValueError(f"min_facts={min_facts} is larger than max_facts={max_facts}")
    return lo, hi


class _World:
    """People, rooms and objects; every action is checked against what the story has said."""

    def __init__(self, rng: random.Random, people: tuple[str, ...], strict_there: bool = True):
        self.rng = rng
        self.people = people
        self.strict_there = strict_there  # "picked up ... there" needs a known room
        self.loc: dict[str, str | None] = dict.fromkeys(people)
        self.loc_fact: dict[str, int | None] = dict.fromkeys(people)
        self.holder: dict[str, str | None] = dict.fromkeys(OBJECTS)
        self.floor: dict[str, str | None] = dict.fromkeys(OBJECTS)  # room where it was dropped
        self.floor_support: dict[str, tuple[int, ...]] = {}
        self.pick_fact: dict[str, int] = {}
        # object -> [(room, fact index that put it there)], consecutive rooms distinct
        self.history: dict[str, list[tuple[str, int]]] = {o: [] for o in OBJECTS}
        self.carried: dict[str, list[str]] = {p: [] for p in people}
        self.facts: list[str] = []
        self.events: list[tuple] = []
        self.touched: set[str] = set()  # people named in a fact

    # -- queries --------------------------------------------------------------------------
    def obj_room(self, obj: str) -> str | None:
        holder = self.holder[obj]
        return self.loc[holder] if holder is not None else self.floor[obj]

    def can_pick(self, person: str, obj: str) -> bool:
        if self.holder[obj] is not None:
            return False
        if self.strict_there and self.loc[person] is None:
            return False
        floor = self.floor[obj]
        return floor is None or self.loc[person] in (None, floor)

    # -- actions --------------------------------------------------------------------------
    def _add(self, sentence: str, event: tuple) -> int:
        self.facts.append(sentence)
        self.events.append(event)
        return len(self.facts) - 1

    def _note_room(self, obj: str, room: str | None, idx: int) -> None:
        hist = self.history[obj]
        if room is not None and (not hist or hist[-1][0] != room):
            hist.append((room, idx))

    def move(self, person: str, room: str) -> None:
        verb = self.rng.choice(MOVE_VERBS)
        idx = self._add(f"{person} {verb} the {room}.", ("move", person, room))
        self.loc[person], self.loc_fact[person] = room, idx
        self.touched.add(person)
        for obj in self.carried[person]:
            self._note_room(obj, room, idx)

    def pick(self, person: str, obj: str) -> None:
        verb = self.rng.choice(PICK_VERBS)
        idx = self._add(f"{person} {verb} the {obj} there.", ("pick", person, obj))
        if self.loc[person] is None and self.floor[obj] is not None:
            self.loc[person], self.loc_fact[person] = self.floor[obj], idx
        self.holder[obj], self.floor[obj] = person, None
        self.pick_fact[obj] = idx
        self.carried[person].append(obj)
        self.touched.add(person)
        self._note_room(obj, self.loc[person], idx)

    def drop(self, person: str, obj: str) -> None:
        verb = self.rng.choice(DROP_VERBS)
        idx = self._add(f"{person} {verb} the {obj}.", ("drop", person, obj))
        self.holder[obj], self.floor[obj] = None, self.loc[person]
        support = [idx] + ([self.loc_fact[person]] if self.loc_fact[person] is not None else [])
        self.floor_support[obj] = tuple(sorted(support))
        self.carried[person].remove(obj)
        self.touched.add(person)

    def can_give(self, giver: str, receiver: str, obj: str) -> bool:
        if giver == receiver or self.holder[obj] != giver:
            return False
        a, b = self.loc[giver], self.loc[receiver]
        return a is None or b is None or a == b

    def give(self, giver: str, receiver: str, obj: str) -> None:
        verb = self.rng.choice(GIVE_VERBS)
        idx = self._add(f"{giver} {verb} the {obj} to {receiver}.", ("give", giver, receiver, obj))
        # handing over means being in the same room: one known room tells the other
        for a, b in ((giver, receiver), (receiver, giver)):
            if self.loc[a] is None and self.loc[b] is not None:
                self.loc[a], self.loc_fact[a] = self.loc[b], idx
        self.holder[obj] = receiver
        self.carried[giver].remove(obj)
        self.carried[receiver].append(obj)
        self.touched.update((giver, receiver))

    # -- random behaviour ---------------------------------------------------------------
    def random_move(self, person: str | None = None) -> None:
        person = person or self.rng.choice(self.people)
        rooms = [r for r in ROOMS if r != self.loc[person]]
        self.move(person, self.rng.choice(rooms))

    def random_object_action(self, person: str | None = None, allow_give: bool = False) -> bool:
        """One pick/drop/give by ``person`` (or anyone) if one is possible; else False."""
        people = [person] if person else list(self.people)
        self.rng.shuffle(people)
        for p in people:
            options: list[Callable[[], None]] = []
            for obj in OBJECTS:
                if self.can_pick(p, obj):
                    options.append(lambda p=p, o=obj: self.pick(p, o))
            for obj in self.carried[p]:
                options.append(lambda p=p, o=obj: self.drop(p, o))
                if allow_give:
                    for q in self.people:
                        if self.can_give(p, q, obj):
                            options.append(lambda p=p, q=q, o=obj: self.give(p, q, o))
            if options:
                self.rng.choice(options)()
                return True
        return False

    def random_step(self, object_rate: float, allow_give: bool = False) -> None:
        if self.rng.random() < object_rate and self.random_object_action(allow_give=allow_give):
            return
        self.random_move()


# ----------------------------------------------------------------------------------------
# Tasks. Each builder simulates exactly n facts and returns (facts, question, answer,
# supporting) or None when the story admits no good question (the caller redraws).
# ----------------------------------------------------------------------------------------
_Draw = tuple[list[str], str, str, tuple[int, ...]] | None


def _focus_rate(n: int) -> float:
    # short stories must spend most facts on the protagonist to contain an answer at all
    return max(0.35, min(1.0, 4.0 / n))


def _qa1(rng: random.Random, n: int) -> _Draw:
    w = _World(rng, PEOPLE)
    for _ in range(n):
        w.random_move()
    person = rng.choice(sorted(w.touched))
    return w.facts, f"Where is {person}?", w.loc[person], (w.loc_fact[person],)


def _qa6(rng: random.Random, n: int) -> _Draw:
    w = _World(rng, PEOPLE)
    for _ in range(n):
        w.random_move()
    person = rng.choice(sorted(w.touched))
    room = (
        w.loc[person]
        if rng.random() < 0.5
        else rng.choice([r for r in ROOMS if r != w.loc[person]])
    )
    answer = "yes" if room == w.loc[person] else "no"
    return w.facts, f"Is {person} in the {room}?", answer, (w.loc_fact[person],)


def _carry_story(rng: random.Random, n: int, *, keep_moving: bool) -> _World:
    """A protagonist fetches an object (and, with keep_moving, carries it around)."""
    w = _World(rng, PEOPLE)
    hero, obj = rng.choice(PEOPLE), rng.choice(OBJECTS)
    focus = _focus_rate(n)
    for _ in range(n):
        if rng.random() >= focus:
            w.random_step(object_rate=0.4)
        elif w.loc[hero] is None:
            w.random_move(hero)
        elif w.holder[obj] == hero:
            if keep_moving or rng.random() < 0.7:
                w.random_move(hero)
            else:
                w.drop(hero, obj)
        elif w.can_pick(hero, obj):
            w.pick(hero, obj)
        elif w.holder[obj] is None and w.floor[obj] is not None:
            w.move(hero, w.floor[obj])
        else:
            w.random_move(hero)
    return w


def _qa2(rng: random.Random, n: int) -> _Draw:
    w = _carry_story(rng, n, keep_moving=False)
    located = [o for o in OBJECTS if w.obj_room(o) is not None]
    if not located:
        return None
    obj = rng.choice(located)
    holder = w.holder[obj]
    if holder is not None:
        support = tuple(sorted({w.pick_fact[obj], w.loc_fact[holder]}))
    else:
        support = w.floor_support[obj]
    return w.facts, f"Where is the {obj}?", w.obj_room(obj), support


def _qa3(rng: random.Random, n: int) -> _Draw:
    w = _carry_story(rng, n, keep_moving=True)
    options = []
    for obj in OBJECTS:
        rooms = [room for room, _ in w.history[obj]]
        for j in range(1, len(rooms)):
            if rooms.count(rooms[j]) == 1:  # "before the X" must name one moment
                options.append((obj, j))
    if not options:
        return None
    obj, j = rng.choice(options)
    (before, f_before), (room, f_room) = w.history[obj][j - 1], w.history[obj][j]
    support = {f_before, f_room}
    if obj in w.pick_fact and w.pick_fact[obj] <= f_room:
        support.add(w.pick_fact[obj])
    return w.facts, f"Where was the {obj} before the {room}?", before, tuple(sorted(support))


def _qa4(rng: random.Random, n: int) -> _Draw:
    rooms = list(ROOMS)
    rng.shuffle(rooms)
    cell = {rooms[0]: (0, 0)}
    taken = {(0, 0)}
    facts, rels = [], []
    for new in rooms[1 : n + 1]:
        while True:
            anchor = rng.choice(sorted(cell))
            direction = rng.choice(sorted(DIRECTIONS))
            dx, dy = DIRECTIONS[direction]
            pos = (cell[anchor][0] + dx, cell[anchor][1] + dy)
            if pos not in taken:
                break
        cell[new] = pos
        taken.add(pos)
        # "new is <direction> of anchor", said either way round
        a, d, b = (
            (new, direction, anchor) if rng.random() < 0.5 else (anchor, OPPOSITE[direction], new)
        )
        facts.append(f"The {a} is {d} of the {b}.")
        rels.append((a, d, b))
    k = rng.randrange(len(rels))
    a, d, b = rels[k]
    if rng.random() < 0.5:  # ask about the inverse relation
        a, d, b = b, OPPOSITE[d], a
    if rng.random() < 0.5:
        question, answer = f"What is {d} of the {b}?", a
    else:
        question, answer = f"What is the {a} {d} of?", b
    return facts, question, answer, (k,)


def _qa5(rng: random.Random, n: int) -> _Draw:
    w = _World(rng, QA5_PEOPLE, strict_there=False)
    giver, receiver = rng.sample(QA5_PEOPLE, 2)
    focus = _focus_rate(n)
    for _ in range(n):
        if rng.random() >= focus:
            w.random_step(object_rate=0.6, allow_give=True)
            continue
        held = w.carried[giver]
        if not held:
            pickable = [o for o in OBJECTS if w.can_pick(giver, o)]
            if pickable:
                w.pick(giver, rng.choice(pickable))
            else:
                w.random_step(object_rate=0.6, allow_give=True)
        else:
            obj = rng.choice(held)
            if w.can_give(giver, receiver, obj):
                w.give(giver, receiver, obj)
                giver, receiver = receiver, rng.choice([p for p in QA5_PEOPLE if p != receiver])
            else:
                w.move(receiver, w.loc[giver])
    gives = [(i, e) for i, e in enumerate(w.events) if e[0] == "give"]
    if not gives:
        return None
    _, (_, g, r, o) = rng.choice(gives)
    kind = rng.randrange(5)
    patterns = [  # question, which event fields must match, answer field
        (f"Who gave the {o} to {r}?", (None, o, r), 0),
        (f"Who did {g} give the {o} to?", (g, o, None), 2),
        (f"What did {g} give to {r}?", (g, None, r), 1),
        (f"Who received the {o}?", (None, o, None), 2),
        (f"Who gave the {o}?", (None, o, None), 0),
    ]
    question, pattern, field = patterns[kind]
    # the most recent give that fits the question answers it
    for i, (_, eg, er, eo) in reversed(gives):
        fields = (eg, eo, er)
        if all(p is None or p == f for p, f in zip(pattern, fields, strict=True)):
            return w.facts, question, fields[field], (i,)
    raise AssertionError("the chosen give event always matches its own question")


def _holding_story(rng: random.Random, n: int) -> tuple[_World, str] | None:
    w = _World(rng, PEOPLE)
    hero = rng.choice(PEOPLE)
    focus = _focus_rate(n)
    for _ in range(n):
        if rng.random() >= focus:
            w.random_step(object_rate=0.5)
        elif w.loc[hero] is None or not w.random_object_action(hero):
            w.random_move(hero)
    # ask about someone who handled objects: their pick/drop facts support the answer
    actors = sorted({e[1] for e in w.events if e[0] != "move"})
    return (w, rng.choice(actors)) if actors else None


def _qa7(rng: random.Random, n: int) -> _Draw:
    if (story := _holding_story(rng, n)) is None:
        return None
    w, person = story
    count = len(w.carried[person])
    support = tuple(i for i, e in enumerate(w.events) if e[0] != "move" and person in e[1:3])
    return w.facts, f"How many objects is {person} carrying?", NUMBERS[count], support


def _qa8(rng: random.Random, n: int) -> _Draw:
    if (story := _holding_story(rng, n)) is None:
        return None
    w, person = story
    answer = ",".join(w.carried[person]) or "nothing"
    support = tuple(i for i, e in enumerate(w.events) if e[0] != "move" and person in e[1:3])
    return w.facts, f"What is {person} carrying?", answer, support


def _belief_story(rng: random.Random, n: int, kinds: tuple[str, ...]) -> _Draw:
    """qa9/qa10: statements about where people are (not), then a yes/no(/maybe) question."""
    people = PEOPLE if "either" not in kinds else QA10_PEOPLE
    state: dict[str, tuple[str, tuple[str, ...], int]] = {}
    facts: list[str] = []
    for i in range(n):
        person, kind = rng.choice(people), rng.choice(kinds)
        room = rng.choice(ROOMS)
        if kind == "move":
            facts.append(f"{person} {rng.choice(MOVE_VERBS)} the {room}.")
            state[person] = ("in", (room,), i)
        elif kind == "is":
            facts.append(f"{person} is in the {room}.")
            state[person] = ("in", (room,), i)
        elif kind == "not":
            phrase = rng.choice(("is not in", "is no longer in"))
            facts.append(f"{person} {phrase} the {room}.")
            state[person] = ("not", (room,), i)
        else:
            a, b = rng.sample(ROOMS, 2)
            facts.append(f"{person} is either in the {a} or the {b}.")
            state[person] = ("either", (a, b), i)
    person = rng.choice(sorted(state))
    kind, rooms, idx = state[person]
    others = [r for r in ROOMS if r not in rooms]
    if kind == "in":
        # qa9's negative statements can only be answered "no": lean to "yes" here to balance
        p_yes = 0.75 if "not" in kinds else 0.5
        room = rooms[0] if rng.random() < p_yes else rng.choice(others)
        answer = "yes" if room == rooms[0] else "no"
    elif kind == "not":
        room, answer = rooms[0], "no"  # nothing else is known about where they are
    else:
        room = rng.choice(rooms) if rng.random() < 0.6 else rng.choice(others)
        answer = "maybe" if room in rooms else "no"
    return facts, f"Is {person} in the {room}?", answer, (idx,)


def _qa9(rng: random.Random, n: int) -> _Draw:
    return _belief_story(rng, n, ("move", "is", "not"))


def _qa10(rng: random.Random, n: int) -> _Draw:
    return _belief_story(rng, n, ("move", "is", "either", "either"))


_BUILDERS: dict[str, Callable[[random.Random, int], _Draw]] = {
    "qa1": _qa1, "qa2": _qa2, "qa3": _qa3, "qa4": _qa4, "qa5": _qa5,
    "qa6": _qa6, "qa7": _qa7, "qa8": _qa8, "qa9": _qa9, "qa10": _qa10,
}  # fmt: skip


def normalize_task(task: str) -> str:
    name = str(task).lower()
    if name not in _BUILDERS:
        raise ValueError(
            f"the offline generator has tasks {', '.join(TASKS)}; got {task!r}. "
            "For qa11..qa20 read bAbI files (rmt.tasks.babilong.babi.read_babi) or published BABILong "
            "sets (rmt.tasks.babilong.published.load_babilong)"
        )
    return name


def generate_sample(
    task: str,
    index: int,
    *,
    seed: int = 0,
    split: str = "train",
    min_facts: int | None = None,
    max_facts: int | None = None,
) -> BabiSample:
    """The ``index``-th story of ``task`` in ``split``: a pure function of its arguments.

    ``min_facts``/``max_facts`` bound the number of facts (a curriculum starts small).
    """
    task = normalize_task(task)
    split = normalize_split(split)
    lo, hi = fact_range(task, min_facts, max_facts)
    rng = random.Random(stable_int(task, seed, split, index))
    build = _BUILDERS[task]
    for _ in range(_MAX_DRAWS):
        drawn = build(rng, rng.randint(lo, hi))
        if drawn is None:
            continue
        facts, question, answer, support = drawn
        if split_of_story(facts) != split:
            continue
        return BabiSample(task, tuple(facts), question, answer, tuple(support))
    raise RuntimeError(
        f"could not draw a {split} story for {task} with {lo}..{hi} facts in {_MAX_DRAWS} "
        "tries; allow more facts (max_facts)"
    )


def vocabulary() -> set[str]:
    """Every word and punctuation mark a generated story, question or answer can contain."""
    words = set(PEOPLE + QA5_PEOPLE + QA10_PEOPLE + ROOMS + OBJECTS + NUMBERS)
    words |= set(DIRECTIONS)
    for phrase in MOVE_VERBS + PICK_VERBS + DROP_VERBS + GIVE_VERBS:
        words |= set(phrase.split())
    words |= set(
        "The the there to is in not no longer either or of What Where Who How many objects "
        "carrying was before did give received gave Is yes maybe nothing".split()
    )
    words |= set(". , ?".split())
    return words
