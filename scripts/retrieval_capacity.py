"""Capacity, head to head: RMT vs ARMT accuracy against the number of stored pairs N.

Trains ``experiment=retrieval_capacity`` once per (memory, N), one run after another (each a
separate ``rmt-train`` process, skipped when its summary.json exists), then reads every run's
best validation accuracy and writes a markdown table and a plot. Prints the rows as JSON.

    python scripts/retrieval_capacity.py run --n 1 2 4 8 --out outputs/retrieval_capacity
    # or one process per memory, side by side:
    python scripts/retrieval_capacity.py run --memories armt --out outputs/retrieval_capacity
    python scripts/retrieval_capacity.py report --out outputs/retrieval_capacity \
        --plot docs/img/retrieval_capacity.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MEMORIES = {"tokens": "RMT (memory=default)", "armt": "ARMT (memory=armt)"}
MEMORY_OPTION = {"tokens": "default", "armt": "armt"}
LOAD_FILE = "load.json"  # beside each run's summary.json


def curriculum(n: int, pairs_per_segment: int) -> str:
    """The recipe's one stage for N pairs: every segment count from 2 (one pair, then the query)
    to ceil(N / pps) + 1 (all N), one per batch; with the recipe's ``task.vary_pairs`` each
    batch holds the pairs its segments allow, so N = 1..N mix as in the ARMT paper's training."""
    segments = math.ceil(n / pairs_per_segment) + 1
    return f"[{{segments:[{','.join(str(s) for s in range(2, segments + 1))}]}}]"


def command(memory: str, n: int, args, run_dir: Path) -> list[str]:
    """The rmt-train command of one run."""
    stages = curriculum(n, args.pairs_per_segment)
    return [sys.executable, "-m", "rmt.cli.train", "experiment=retrieval_capacity",
            f"memory={MEMORY_OPTION[memory]}", f"task.num_pairs={n}",
            f"task.pairs_per_segment={args.pairs_per_segment}", f"task.curriculum={stages}",
            "trainer.progress_bar=false", f"hydra.run.dir={run_dir}", *args.extra]  # fmt: skip


def run(args) -> None:
    for n in args.n:  # by N, both memories: a partial sweep still compares pairs of runs
        for memory in args.memories:
            run_dir = Path(args.out) / f"{memory}_n{n}"
            if (run_dir / "summary.json").exists():
                continue
            cmd = command(memory, n, args, run_dir)
            print(" ".join(cmd[1:]), flush=True)
            load = os.getloadavg()[0]
            subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            # the machine's 1-minute load average before and after: the steps a run made under
            # a minutes cap depend on it
            write_load(run_dir, before=load, after=os.getloadavg()[0])


def write_load(run_dir: Path, *, before: float, after: float) -> None:
    (run_dir / LOAD_FILE).write_text(json.dumps({"before": before, "after": after}) + "\n")


def rows(out: Path) -> list[dict]:
    """One row per finished run: memory, N, best and final validation accuracy (fractions, as
    in summary.json), the step of the best, steps made, minutes, why it stopped, load averages."""
    found = []
    for summary_path in sorted(out.glob("*_n*/summary.json")):
        memory, n = summary_path.parent.name.rsplit("_n", 1)
        summary = json.loads(summary_path.read_text())
        load_path = summary_path.parent / LOAD_FILE
        load = json.loads(load_path.read_text()) if load_path.exists() else {}
        found.append({"memory": memory, "n": int(n), "steps": summary["steps"],
                      "best_accuracy": round(summary["best_metric"], 3),
                      "best_step": summary["best_step"],
                      "final_accuracy": round(summary["final_accuracy"], 3),
                      "minutes": round(summary["minutes"], 2), "stopped": summary["stopped"],
                      "load_before": load.get("before"), "load_after": load.get("after")})  # fmt: skip
    return sorted(found, key=lambda r: (r["n"], r["memory"]))


def table(found: list[dict]) -> str:
    """Markdown: N rows; per memory the best validation accuracy and, in brackets, the final one
    (in percent, as the caption line says); ARMT - RMT in points (best); and the steps and
    minutes each run made (a run stops at trainer.max_steps or at trainer.max_minutes)."""
    by = {(r["memory"], r["n"]): r for r in found}
    lines = ["validation accuracy in percent (0-100): best (final)", "",
             "| N pairs | RMT | ARMT | ARMT - RMT, best (points) | steps (RMT / ARMT) | minutes (RMT / ARMT) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for n in sorted({r["n"] for r in found}):
        rmt, armt = by.get(("tokens", n)), by.get(("armt", n))
        cells = [f"{100 * r['best_accuracy']:.1f} ({100 * r['final_accuracy']:.1f})" if r else "-"
                 for r in (rmt, armt)]  # fmt: skip
        diff = (f"{100 * (armt['best_accuracy'] - rmt['best_accuracy']):+.1f}"
                if rmt and armt else "-")  # fmt: skip
        steps = " / ".join(str(r["steps"]) if r else "-" for r in (rmt, armt))
        minutes = " / ".join(f"{r['minutes']:.1f}" if r else "-" for r in (rmt, armt))
        lines.append(f"| {n} | {cells[0]} | {cells[1]} | {diff} | {steps} | {minutes} |")
    return "\n".join(lines)


def plot(found: list[dict], path: Path, chance: float) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for memory, label in MEMORIES.items():
        mine = [r for r in found if r["memory"] == memory]
        if mine:
            ax.plot([r["n"] for r in mine], [100 * r["best_accuracy"] for r in mine],
                    marker="o", label=label)  # fmt: skip
    ax.axhline(100 * chance, color="grey", linestyle=":", label=f"chance ({100 * chance:.2f}%)")
    ax.set_xscale("log", base=2)
    ns = sorted({r["n"] for r in found})
    ax.set_xticks(ns, labels=[str(n) for n in ns])
    ax.set_xlabel("key-value pairs stored (N)")
    ax.set_ylabel("best validation accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(args) -> None:
    out = Path(args.out)
    found = rows(out)
    if not found:
        raise SystemExit(f"no finished runs (summary.json) under {out}; run the sweep first")
    (out / "capacity.md").write_text(table(found) + "\n")
    plot(found, Path(args.plot or out / "capacity.png"), chance=1 / args.value_vocab)
    print(json.dumps(found, indent=1))
    print(table(found))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run", "report"])
    parser.add_argument("--out", default="outputs/retrieval_capacity")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--memories", nargs="+", choices=list(MEMORIES), default=list(MEMORIES))
    parser.add_argument("--pairs-per-segment", type=int, default=1)
    parser.add_argument("--value-vocab", type=int, default=16, help="for the chance line")
    parser.add_argument("--plot", default=None, help="the plot's path (default: OUT/capacity.png)")
    parser.add_argument(
        "extra",
        nargs="*",
        help="more rmt-train overrides, right after the action: run trainer.seed=1 --n 4",
    )
    args = parser.parse_args()
    if args.action == "run":
        run(args)
    report(args)


if __name__ == "__main__":
    main()
