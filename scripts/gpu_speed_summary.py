"""Markdown summary of a `scripts/gpu_speed.sh OUT` run: `python scripts/gpu_speed_summary.py OUT`.

Reads each row's JSON (`OUT/<row>.json`, what the benchmark printed); for a row cut by its time
box, the points it had finished are recovered from the `[bench_train] ...: {json}` lines of
`OUT/<row>.log`, so a partial row still gives its ratio table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common  # noqa: E402
import bench_train  # noqa: E402

TRAIN_ROWS = {"r1_b8_s128": "batch 8 x segment 128, 10 memory tokens",
              "r2_b16_s512": "batch 16 x segment 512, 16 memory tokens"}  # fmt: skip
EVAL_ROWS = {"r5_eval": "batched scoring (bench_eval.py)",
             "r6_eval_compiled": "batched scoring, compile=true (bench_eval.py --compile)"}  # fmt: skip


def load(out: Path, name: str) -> dict | None:
    """The row's JSON document, or None when it did not finish."""
    try:
        return json.loads((out / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def logged_points(out: Path, name: str, script: str = "bench_train") -> list[dict]:
    """Points a benchmark row logged before it ended (also when it was killed)."""
    points = []
    try:
        lines = (out / f"{name}.log").read_text().splitlines()
    except OSError:
        return points
    for line in lines:
        if line.startswith(f"[{script}]") and ": {" in line:
            points.append(json.loads(line[line.index(": {") + 2 :]))
    return points


def train_row(out: Path, name: str, title: str, peak: float | None) -> list[str]:
    doc = load(out, name)
    points = doc["points"] if doc else logged_points(out, name)
    lines = [f"## {title} ({name}{'' if doc else ', cut short: points from its log'})", ""]
    if not points:
        return [*lines, "no point finished", ""]
    table = bench_train.baseline_comparison(points, peak)["table"]
    failed = [p for p in points if p.get("status") != "ok"]
    lines += [table, ""]
    lines += [f"- not measured: {json.dumps(p)[:300]}" for p in failed]
    return [*lines, ""]


def eval_row(out: Path, name: str, title: str) -> list[str]:
    doc = load(out, name)
    points = doc["points"] if doc else logged_points(out, name, "bench_eval")
    lines = [f"## {title} ({name}{'' if doc else ', cut short: points from its log'})", ""]
    if not points:
        return [*lines, "no point finished", ""]
    device = doc["device"] if doc else None  # a cut row: its device is not in the points
    mem = {"cpu": "peak RSS MiB", "cuda": "peak alloc MiB"}.get(device, "peak MiB")
    return [*lines, bench_common.scoring_table({"points": points}, mem), ""]


def scheme_row(out: Path, name: str) -> list[str]:
    """Each recomputation scheme against none (`bench_train.py --schemes`)."""
    doc = load(out, name)
    points = doc["points"] if doc else logged_points(out, name)
    lines = [f"## recomputation schemes, batch 8 x segment 128 ({name}"
             f"{'' if doc else ', cut short: points from its log'})", ""]  # fmt: skip
    if not points:
        return [*lines, "no point finished", ""]
    return [*lines, bench_train.scheme_comparison(points)["table"], ""]


def main(out: Path) -> None:
    machine = load(out, "machine") or {}
    peak = next((v for k, v in bench_train.PEAK_FLOPS.items() if k in machine.get("gpu", "")), None)
    lines = ["# gpu_speed results", "", f"machine: `{json.dumps(machine)}`", ""]
    rows = (out / "rows.txt").read_text() if (out / "rows.txt").exists() else ""
    lines += ["```", rows.strip(), "```", "", bench_train.MFU_NOTE, ""]
    for name, title in TRAIN_ROWS.items():
        lines += train_row(out, name, title, peak)
    lines += scheme_row(out, "r1b_schemes")
    recipe = load(out, "r3_recipe")
    lines += ["## default tiny rmt-train (r3_recipe)", ""]
    if recipe:
        keys = ("steps", "fit_wall_s", "steps_per_s", "cpu_steps_per_s", "data_wait_share_mean",
                "validations", "num_workers", "device", "precision")  # fmt: skip
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(recipe.get(k)) for k in keys) + " |", ""]
    else:
        lines += ["did not finish: see r3_recipe.log", ""]
    armt = load(out, "r4_armt")
    points = armt["points"] if armt else logged_points(out, "r4_armt")
    lines += ["## ARMT vs RMT (r4_armt)", ""]
    lines += [f"`{json.dumps(bench_train.armt_target(points))}`", ""]
    for p in points:
        lines.append(
            f"- {p.get('memory')}: {p.get('status')} tokens/s {p.get('tokens_per_s')}, "
            f"step {p.get('step_s')} s, peak {p.get('peak_mb')} MiB"
        )
    for name, title in EVAL_ROWS.items():
        lines += eval_row(out, name, title)
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
