"""One heatmap of several `rmt-eval` runs: rows are runs (e.g. RMT, ARMT, no memory), columns
the lengths of their grid (x1..x16), cells their accuracy, as in the BABILong papers.

    python scripts/plot_signature.py RESULTS_CSV=LABEL [...] --out docs/img/signature_gpu.png

Each RESULTS_CSV is the results.csv that `rmt-eval` wrote; LABEL names its row. The table is
printed too (markdown), so the README's numbers and figure come from the same files.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from rmt.eval.plots import plot_heatmap
from rmt.eval.results import format_table, read_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="RESULTS_CSV=LABEL")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--title", default="qa1 accuracy by input length")
    args = parser.parse_args()
    rows = []
    for spec in args.runs:
        path, _, label = spec.partition("=")
        found = read_csv(Path(path))
        if not found:
            raise SystemExit(f"plot_signature: {path} holds no results")
        # one row per run: the run's label takes the task column's place
        rows += [dataclasses.replace(r, task=label or r.model, model="runs") for r in found]
    print(format_table(rows, percent=True))
    plot_heatmap(rows, args.out, title=args.title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
