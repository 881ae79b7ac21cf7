"""qa4, qa17, qa18, qa19: relations between rooms, shapes and containers.

These stories have a fixed shape in bAbI (qa4: two facts, one question; qa17: two facts,
eight questions; qa18: five or ten facts, five questions; qa19: five facts, one question).
A curriculum that asks for fewer facts gets the facts a question needs plus others of the
same story, in order.
"""

from __future__ import annotations

import random

from rmt.tasks.babilong.generators.common import DIRECTIONS, OPPOSITE, ROOMS, Question, Story

SHAPES = ("red square", "blue square", "pink rectangle", "yellow square", "red sphere",
          "triangle")  # fmt: skip
# "X is <relation> Y": the sign of X - Y along the axis (0: left-right, 1: below-above)
POSITIONS = {"to the left of": (0, -1), "to the right of": (0, 1), "above": (1, 1),
             "below": (1, -1)}  # fmt: skip
CONTAINERS = ("chocolate", "box of chocolates", "box", "suitcase", "chest", "container")
SHORT = {"north": "n", "south": "s", "east": "e", "west": "w"}


def _grid(rng: random.Random, names: list[str], links: int) -> tuple[dict, list[tuple]]:
    """Place ``links + 1`` names on a grid, each next to one placed before; the relations."""
    cell = {names[0]: (0, 0)}
    rels = []
    for new in names[1 : links + 1]:
        while True:
            anchor = rng.choice(sorted(cell))
            direction = rng.choice(sorted(DIRECTIONS))
            dx, dy = DIRECTIONS[direction]
            pos = (cell[anchor][0] + dx, cell[anchor][1] + dy)
            if pos not in cell.values():
                break
        cell[new] = pos
        rels.append((new, direction, anchor))  # new is <direction> of anchor
    return cell, rels


def _qa4(rng: random.Random, links: int) -> Story:
    rooms = list(ROOMS)
    rng.shuffle(rooms)
    _, rels = _grid(rng, rooms, links)
    story = Story()
    said = []
    for a, d, b in rels:
        if rng.random() < 0.5:  # said either way round
            a, d, b = b, OPPOSITE[d], a
        story.add(f"The {a} is {d} of the {b}.")
        said.append((a, d, b))
    k = rng.randrange(len(said))
    a, d, b = said[k]
    if rng.random() < 0.5:
        story.ask((f"What is {d} of the {b}?", a, (k,)))
    else:
        story.ask((f"What is the {a} {d} of?", b, (k,)))
    return story


def _qa17(rng: random.Random) -> Story:
    a, b, c = rng.sample(SHAPES, 3)
    pos = {b: (0, 0)}
    story = Story()
    for shape in (a, c):
        while True:  # a and c never share a place, so some relation between them holds
            relation = rng.choice(sorted(POSITIONS))
            axis, sign = POSITIONS[relation]
            p = [0, 0]
            p[axis] = rng.choice((-1, 1))
            if tuple(p) not in pos.values():
                break
        pos[shape] = tuple(p)
        if p[axis] == sign:
            story.add(f"The {shape} is {relation} the {b}.")
        else:
            story.add(f"The {b} is {relation} the {shape}.")

    def holds(x: str, relation: str, y: str) -> bool:
        axis, sign = POSITIONS[relation]
        return (pos[x][axis] - pos[y][axis]) * sign > 0

    for _ in range(8):
        x, y = (a, c) if rng.random() < 0.5 else (c, a)
        true = [r for r in sorted(POSITIONS) if holds(x, r, y)]
        false = [r for r in sorted(POSITIONS) if not holds(x, r, y)]
        yes = rng.random() < 0.52
        relation = rng.choice(true if yes else false)
        story.ask((f"Is the {x} {relation} the {y}?", "yes" if yes else "no", (0, 1)))
    return story


def _qa18(rng: random.Random) -> Story | None:
    order = list(CONTAINERS)
    rng.shuffle(order)  # smallest first
    rank = {name: i for i, name in enumerate(order)}
    story = Story()
    smaller: dict[tuple[str, str], int] = {}  # (small, big) -> fact
    for _ in range(2):
        for _ in range(5):
            x, y = sorted(rng.sample(order, 2), key=rank.get)
            if rng.random() < 0.7:
                smaller[(x, y)] = story.add(f"The {x} fits inside the {y}.")
            else:
                smaller[(x, y)] = story.add(f"The {y} is bigger than the {x}.")
        chains = [
            (x, z, (f1, f2))
            for (x, y), f1 in smaller.items()
            for (y2, z), f2 in smaller.items()
            if y == y2 and (x, z) not in smaller
        ]
        if chains:
            break
    else:
        return None
    for _ in range(5):
        small, big, support = rng.choice(chains)
        yes = rng.random() < 0.47  # bAbI's share of "yes"
        if rng.random() < 0.5:
            x, z = (small, big) if yes else (big, small)
            story.ask((f"Does the {x} fit in the {z}?", "yes" if yes else "no", support))
        else:
            x, z = (big, small) if yes else (small, big)
            story.ask((f"Is the {x} bigger than the {z}?", "yes" if yes else "no", support))
    return story


def _qa19(rng: random.Random) -> Story | None:
    rooms = list(ROOMS)
    rng.shuffle(rooms)
    cell, rels = _grid(rng, rooms, 5)
    rng.shuffle(rels)
    story = Story()
    for a, d, b in rels:
        story.add(f"The {a} is {d} of the {b}.")
    step = {v: k for k, v in DIRECTIONS.items()}
    paths = []
    for i, (a, _, b) in enumerate(rels):
        for j, (c, _, e) in enumerate(rels):
            if i == j:
                continue
            shared = {a, b} & {c, e}
            if len(shared) != 1:
                continue
            (mid,) = shared
            start, end = ({a, b} - shared).pop(), ({c, e} - shared).pop()
            moves = []
            for x, y in ((start, mid), (mid, end)):
                delta = (cell[y][0] - cell[x][0], cell[y][1] - cell[x][1])
                moves.append(SHORT[step[delta]])
            paths.append((start, end, ",".join(moves), (i, j)))
    if not paths:
        return None
    start, end, answer, support = rng.choice(paths)
    story.ask((f"How do you go from the {start} to the {end}?", answer, support))
    return story


def shrink(rng: random.Random, story: Story, stop: int) -> Story | None:
    """One question of ``story`` with its facts cut to ``stop``: the supporting ones first."""
    fits = [q for q in story.questions if q.n_facts >= stop >= len(q.supporting)]
    if not fits:
        return None
    question = rng.choice(fits)
    keep = set(question.supporting)
    rest = [i for i in range(question.n_facts) if i not in keep]
    keep |= set(rng.sample(rest, stop - len(keep)))
    index = {old: new for new, old in enumerate(sorted(keep))}
    out = Story([story.facts[i] for i in sorted(keep)])
    support = tuple(index[i] for i in question.supporting)
    out.questions.append(Question(len(out.facts), question.text, question.answer, support))
    return out


BUILDERS = {
    "qa4": lambda rng, stop: _qa4(rng, 2 if stop is None else stop),
    "qa17": lambda rng, stop: _qa17(rng),
    "qa18": lambda rng, stop: _qa18(rng),
    "qa19": lambda rng, stop: _qa19(rng),
}
SHRINKS = ("qa17", "qa18", "qa19")  # fixed-shape stories a curriculum cuts down
