"""``rmt-report <multirun dir>``: one table and one plot for a whole sweep.

A plain argparse entrypoint rather than Hydra: it takes one folder and a few options, and a
report must not open a new Hydra run folder of its own. Writes ``report.csv``, ``report.md``
and ``report_<metric>.png`` into ``<multirun dir>/report/`` (or ``--out``) and prints the
Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rmt.eval.plots import plot_sweep
from rmt.sweep import report as sweep


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmt-report",
        description="Collect every job of an `rmt-train -m` sweep into one table and plot.",
    )
    parser.add_argument(
        "multirun_dir", help="the sweep folder, e.g. outputs/multirun/<date>/<time>"
    )
    parser.add_argument(
        "--metric",
        default=None,
        help="column to plot (default: summary.json's best_metric, else the first accuracy)",
    )
    parser.add_argument(
        "--x",
        default=None,
        help="swept override on the x axis (default: the first swept override)",
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default: <multirun_dir>/report)"
    )
    return parser


def run(argv: list[str] | None = None) -> dict[str, Path]:
    """Build the report; returns the paths written. Raises on bad input (see ``main``)."""
    args = build_parser().parse_args(argv)
    result = sweep.collect(args.multirun_dir)
    metric = args.metric or sweep.default_metric(result)
    if metric not in result.columns:
        raise ValueError(
            f"rmt-report: --metric {metric!r} is not a column; choose one of {result.columns}"
        )
    x = args.x or (result.swept[0] if result.swept else "job")
    if x not in result.columns:  # checked before any file is written: no partial report
        raise ValueError(f"rmt-report: --x {x!r} is not a swept override; swept: {result.swept}")
    out = Path(args.out) if args.out else Path(args.multirun_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": sweep.write_csv(result, out / "report.csv"),
        "markdown": out / "report.md",
    }
    markdown = sweep.to_markdown(result, metric)
    paths["markdown"].write_text(markdown)
    print(markdown)

    group_by = [k for k in result.swept if k != x]
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in metric)
    try:
        paths["plot"] = plot_sweep(
            result.records, out / f"report_{safe}.png", x=x, y=metric, group_by=group_by
        )
    except ValueError as exc:  # no finished job has the metric yet: table only
        print(f"rmt-report: no plot: {exc}", file=sys.stderr)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return paths


def main(argv: list[str] | None = None) -> None:
    try:
        run(argv)
    except (FileNotFoundError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
