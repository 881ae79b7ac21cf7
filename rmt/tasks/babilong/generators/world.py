"""The bAbI world of people, rooms and objects that qa2, qa3, qa5-qa8 and qa20 simulate.

Every action is checked against what the story has said so far, so answers are correct by
construction. As in bAbI, a person may pick up an object before the story says where they
are (the task's style says how often "there" ends the sentence). The world records, per object,
the facts that support where it is, whom it is with and where it has been, so questions come
with complete supporting facts: replaying only those facts gives the same answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from rmt.tasks.babilong.generators.common import (
    DROP_VERBS,
    GIVE_VERBS,
    OBJECTS,
    PICK_VERBS,
    ROOMS,
    Story,
    move_sentence,
)


@dataclass(frozen=True)
class Style:
    """How a task words its object sentences (shares measured from the real files).

    Args:
        pick_there: chance a pick-up ends with "there".
        drop_there: chance a drop ends with "there".
        let_go: chance an object action drops or hands over what someone carries (when
            anyone does) rather than picking something up; it sets how much people hold.
    """

    pick_there: float = 1.0
    drop_there: float = 0.2
    let_go: float = 0.5


@dataclass
class World:
    """State of one story; facts are appended to ``story``."""

    rng: random.Random
    story: Story
    people: tuple[str, ...]
    style: Style = field(default_factory=Style)
    objects: tuple[str, ...] = OBJECTS
    rooms: tuple[str, ...] = ROOMS
    room_weights: dict[str, float] = field(default_factory=dict)  # rooms people favour
    activity: dict[str, float] = field(default_factory=dict)  # people who act more or less

    def __post_init__(self) -> None:
        self.loc: dict[str, str | None] = dict.fromkeys(self.people)
        self.loc_fact: dict[str, int] = {}
        self.holder: dict[str, str | None] = dict.fromkeys(self.objects)
        self.floor: dict[str, str | None] = dict.fromkeys(self.objects)
        # facts that say whom an object is with or where it lies (replaying them is enough)
        self.obj_support: dict[str, tuple[int, ...]] = {o: () for o in self.objects}
        # rooms an object has been in: (room, facts that show it got there), consecutive distinct
        self.history: dict[str, list[tuple[str, tuple[int, ...]]]] = {o: [] for o in self.objects}
        self.last_touch: dict[str, int] = {}  # object -> latest pick/drop/give fact
        self.carried: dict[str, list[str]] = {p: [] for p in self.people}
        self.handled: dict[str, list[int]] = {p: [] for p in self.people}  # pick/drop/give facts
        self.events: list[tuple] = []

    # -- queries --------------------------------------------------------------------------
    def obj_room(self, obj: str) -> str | None:
        holder = self.holder[obj]
        return self.loc[holder] if holder is not None else self.floor[obj]

    def room_support(self, obj: str) -> tuple[int, ...]:
        """Facts that tell where ``obj`` is now (empty when the story does not say)."""
        holder = self.holder[obj]
        if holder is None:
            return self.obj_support[obj] if self.floor[obj] else ()
        if self.loc[holder] is None:
            return ()
        return tuple(sorted(set(self.obj_support[obj]) | {self.loc_fact[holder]}))

    def can_pick(self, person: str, obj: str) -> bool:
        if self.holder[obj] is not None:
            return False
        floor = self.floor[obj]
        return floor is None or self.loc[person] == floor

    def can_give(self, giver: str, receiver: str, obj: str) -> bool:
        if giver == receiver or self.holder[obj] != giver:
            return False
        a, b = self.loc[giver], self.loc[receiver]
        return a is None or b is None or a == b

    # -- actions --------------------------------------------------------------------------
    def _add(self, sentence: str, event: tuple) -> int:
        self.events.append(event)
        return self.story.add(sentence)

    def _visit(self, obj: str, support: tuple[int, ...]) -> None:
        room = self.obj_room(obj)
        hist = self.history[obj]
        if room is not None and (not hist or hist[-1][0] != room):
            hist.append((room, tuple(sorted(set(support)))))

    def move(self, person: str, room: str) -> None:
        idx = self._add(move_sentence(self.rng, person, room), ("move", person, room))
        self.loc[person], self.loc_fact[person] = room, idx
        for obj in self.carried[person]:
            self._visit(obj, (*self.obj_support[obj], idx))

    def _there(self, rate: float) -> str:
        return " there" if self.rng.random() < rate else ""

    def pick(self, person: str, obj: str) -> None:
        there = self._there(self.style.pick_there)
        verb = self.rng.choice(PICK_VERBS)
        idx = self._add(f"{person} {verb} the {obj}{there}.", ("pick", person, obj))
        self.holder[obj], self.floor[obj] = person, None
        self.obj_support[obj] = (idx,)
        self._touch(person, obj, idx)
        if self.loc[person] is not None:
            self._visit(obj, (idx, self.loc_fact[person]))

    def drop(self, person: str, obj: str) -> None:
        there = self._there(self.style.drop_there)
        verb = self.rng.choice(DROP_VERBS)
        idx = self._add(f"{person} {verb} the {obj}{there}.", ("drop", person, obj))
        where = self.loc_fact.get(person)
        self.holder[obj], self.floor[obj] = None, self.loc[person]
        self.obj_support[obj] = (idx,) + ((where,) if where is not None else ())
        self._touch(person, obj, idx)

    def give(self, giver: str, receiver: str, obj: str) -> None:
        verb = self.rng.choice(GIVE_VERBS)
        event = ("give", giver, receiver, obj)
        idx = self._add(f"{giver} {verb} the {obj} to {receiver}.", event)
        self.holder[obj] = receiver
        self.obj_support[obj] = (idx,)
        self.carried[giver].remove(obj)
        self.carried[receiver].append(obj)
        self.handled[giver].append(idx)
        self.handled[receiver].append(idx)
        self.last_touch[obj] = idx

    def _touch(self, person: str, obj: str, idx: int) -> None:
        if self.holder[obj] == person:
            self.carried[person].append(obj)
        else:
            self.carried[person].remove(obj)
        self.handled[person].append(idx)
        self.last_touch[obj] = idx

    # -- random behaviour -----------------------------------------------------------------
    def random_move(self, person: str | None = None) -> None:
        person = person or self._by_actor([(p,) for p in self.people])[0]
        rooms = [r for r in self.rooms if r != self.loc[person]]
        weights = [self.room_weights.get(r, 1.0) for r in rooms]
        self.move(person, self.rng.choices(rooms, weights=weights)[0])

    def _by_actor(self, options: list[tuple]) -> tuple:
        weights = [self.activity.get(option[0], 1.0) for option in options]
        return self.rng.choices(options, weights=weights)[0]

    def random_object_action(self, *, give_rate: float = 0.0) -> bool:
        """One pick, drop or (with ``give_rate``) give by someone; False when none is possible."""
        gives = [
            (p, q, o)
            for p in self.people
            for o in self.carried[p]
            for q in self.people
            if self.can_give(p, q, o)
        ]
        if gives and self.rng.random() < give_rate:
            self.give(*self._by_actor(gives))
            return True
        picks = [(p, o) for p in self.people for o in self.objects if self.can_pick(p, o)]
        drops = [(p, o) for p in self.people for o in self.carried[p]]
        if drops and (not picks or self.rng.random() < self.style.let_go):
            self.drop(*self._by_actor(drops))
        elif picks:
            self.pick(*self._by_actor(picks))
        else:
            return False
        return True

    def random_step(self, object_rate: float, give_rate: float = 0.0) -> None:
        if self.rng.random() < object_rate and self.random_object_action(give_rate=give_rate):
            return
        self.random_move()
