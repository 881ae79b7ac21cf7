"""Plot validation accuracy against wall-clock minutes for one or more `rmt-train` runs.

Reads each run's metrics.jsonl (written by the trainer) and draws one curve per run, so the
README can show the offline demo with and without memory side by side. Prints the points as JSON.

    python scripts/plot_learning_curves.py RUN_DIR[=LABEL] ... --out outputs/bench/learning_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_curve(run_dir: Path, metric: str) -> list[tuple[float, int, float]]:
    """(minutes, step, value) for every validation event of a run (`"split": "valid"` lines)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise SystemExit(f"{path} not found: give the folder of an rmt-train run")
    points = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event.get("split") == "valid" and metric in event and "minutes" in event:
            points.append((event["minutes"], event["step"], event[metric]))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders, optionally RUN=LABEL")
    parser.add_argument("--metric", default="accuracy", help="key of the validation events")
    parser.add_argument("--chance", type=float, default=None, help="draw a chance-level line")
    parser.add_argument("--out", default="outputs/bench/learning_curves.png")
    args = parser.parse_args()

    fig, ax = plt.subplots(figsize=(6, 4))
    report = {}
    for spec in args.runs:
        run, _, label = spec.partition("=")
        points = read_curve(Path(run), args.metric)
        label = label or Path(run).name
        report[label] = [{"minutes": round(m, 2), "step": s, args.metric: v} for m, s, v in points]
        ax.plot([p[0] for p in points], [100 * p[2] for p in points], marker=".", label=label)
    if args.chance is not None:
        ax.axhline(100 * args.chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xlabel("wall-clock minutes")
    ax.set_ylabel(f"validation {args.metric} (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(json.dumps({"plot": str(out), "runs": report}, indent=1))


if __name__ == "__main__":
    main()
