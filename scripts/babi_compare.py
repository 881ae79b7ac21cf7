"""Compare the offline generator with real bAbI files, task by task.

    python scripts/babi_compare.py /path/to/tasks_1-20_v1-2/en-10k [--samples 1000] [--tasks qa3]

For every ``qaN_*_test.txt`` in the folder it prints, real vs generated: each answer label's
share, the median and 90th percentile of facts per question, the largest number of facts
between a question's last supporting fact and the question, and which real sentence forms
(names and things replaced by their kind, see rmt.tasks.babilong.generators.forms) the generator never
writes. The figures recorded in tests/test_babi_generator.py come from this script.
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from pathlib import Path

from rmt.tasks.babilong.babi import BabiSample, read_babi, task_from_filename
from rmt.tasks.babilong.generators import generate_sample
from rmt.tasks.babilong.generators.forms import sentence_form


def summary(samples: list[BabiSample]) -> dict:
    """The figures compared: label shares, facts per question, gap, sentence forms."""
    n = len(samples)
    facts = sorted(len(s.facts) for s in samples)
    forms: Counter[str] = Counter()
    for s in samples:
        forms.update(sentence_form(f) for f in s.facts)
        forms[sentence_form(s.question)] += 1
    return {
        "labels": {k: v / n for k, v in Counter(s.answer for s in samples).items()},
        "median": statistics.median(facts),
        "p90": facts[int(0.9 * (n - 1))],
        "gap": max(len(s.facts) - 1 - max(s.supporting) for s in samples),
        "forms": forms,
    }


def compare(task: str, real: list[BabiSample], count: int, split: str = "train") -> None:
    gen = [generate_sample(task, i, split=split) for i in range(count)]
    r, g = summary(real), summary(gen)
    print(f"== {task}: {len(real)} real, {len(gen)} generated questions")
    print(f"   facts/question median {r['median']} vs {g['median']}, p90 {r['p90']} vs "
          f"{g['p90']}; most facts after support {r['gap']} vs {g['gap']}")  # fmt: skip
    for label in sorted(set(r["labels"]) | set(g["labels"]), key=lambda k: -r["labels"].get(k, 0)):
        a, b = 100 * r["labels"].get(label, 0), 100 * g["labels"].get(label, 0)
        flag = "  <-- off by more than 5 points" if abs(a - b) > 5 else ""
        print(f"   {label:>22} {a:5.1f}% vs {b:5.1f}%{flag}")
    total = sum(r["forms"].values())
    missing = {f: c for f, c in r["forms"].items() if f not in g["forms"]}
    covered = 100 * (1 - sum(missing.values()) / total)
    print(f"   sentence forms: {len(r['forms'])} real, {covered:.1f}% of real sentences covered")
    for form, c in sorted(missing.items(), key=lambda kv: -kv[1])[:10]:
        print(f"     missing ({100 * c / total:.2f}%): {form}")
    extra = [f for f in g["forms"] if f not in r["forms"]]
    for form in extra[:5]:
        print(f"     never in the real file: {form}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder with qaN_*_test.txt bAbI files")
    parser.add_argument("--samples", type=int, default=1000, help="generated questions per task")
    parser.add_argument("--tasks", nargs="*", help="only these tasks (qa1 ... qa20)")
    parser.add_argument(
        "--split", default="train",
        help="generator split (validation/test hold few of the shortest stories, so skew)",
    )  # fmt: skip
    args = parser.parse_args()
    files = sorted(args.folder.glob("qa*_test.txt"), key=lambda p: int(task_from_filename(p)[2:]))
    if not files:
        raise SystemExit(f"no qaN_*_test.txt files in {args.folder}")
    for path in files:
        task = task_from_filename(path)
        if not args.tasks or task in args.tasks:
            compare(task, read_babi(path), args.samples, args.split)


if __name__ == "__main__":
    main()
