"""Collect the jobs of a Hydra multirun (a sweep of ``rmt-train -m``) into one table.

A sweep folder holds one folder per job, each with ``.hydra/overrides.yaml`` (what this job
changed), ``config.yaml``, ``summary.json`` (final metrics) and ``metrics.jsonl`` (every log and
eval event). The report keeps only the overrides that differ between jobs (the swept
parameters; the shared ones go in the Markdown header), the final summary, the best value of
every evaluation metric seen in ``metrics.jsonl``, the number of steps and the time. Jobs that
crashed or are still running have no ``summary.json``: they stay in the table with status
``incomplete`` and whatever ``metrics.jsonl`` already holds, because a sweep table that hides
failed jobs misleads. A job that failed (``failed.json``, see :mod:`rmt.sweep.jobs`) shows its
reason, and the jobs of the sweep's ``multirun.yaml`` that never started are listed as
``not started``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rmt.run import FAILED_FILE, METRICS_FILE, SUMMARY_FILE, override_key, read_overrides
from rmt.sweep.jobs import read_sweep_jobs

# metrics.jsonl keys that describe an event rather than measure the model
_EVENT_KEYS = {
    "step", "split", "stage", "epoch", "time", "seconds", "minutes", "lr", "segments", "samples", "n",
}  # fmt: skip
_LOWER_IS_BETTER = ("loss", "ppl", "perplexity", "error")
_TRAIN_SPLITS = {"train"}
# summary.json keys shown elsewhere (steps, minutes) or the same for every job of a sweep
_SUMMARY_SKIP = {"steps", "step", "minutes", "output_dir", "metric_name"}


@dataclass
class Job:
    """One job folder of a sweep, as read from disk."""

    path: Path
    name: str
    overrides: dict[str, object]
    status: str  # done (summary.json) | failed (failed.json) | incomplete | not started
    summary: dict[str, object] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)  # best_<split>_<metric> from metrics.jsonl
    steps: int | None = None
    minutes: float | None = None
    reason: str | None = None  # why a failed job failed


@dataclass
class SweepReport:
    """The table of a sweep: one record per job, with the swept keys named."""

    root: Path
    jobs: list[Job]
    swept: list[str]  # override keys whose value differs between jobs
    common: dict[str, object]  # override keys with one value for all jobs
    columns: list[str]
    records: list[dict[str, object]]


def parse_override(text: str) -> tuple[str, object]:
    """``"memory.num_tokens=10"`` -> ``("memory.num_tokens", 10)``; ``+``/``++``/``~`` prefixes drop."""
    key, (_, sep, value) = override_key(text), text.partition("=")
    if not sep:
        return key, None
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, dict | list):
        parsed = value  # keep the text: a cell holds one value
    elif isinstance(parsed, str):
        try:  # YAML 1.1 reads "1e-3" as text; Hydra reads it as a float
            parsed = (
                float(parsed) if parsed.strip().lower() not in ("nan", "inf", "-inf") else parsed
            )
        except ValueError:
            pass
    return key, parsed


def find_jobs(root: str | Path, *, allow_none: bool = False) -> list[Path]:
    """Every folder under ``root`` that holds a Hydra job (``.hydra/overrides.yaml``);
    ``allow_none``: an empty list instead of an error when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"rmt-report: {root} is not a folder; pass the multirun folder of a sweep, "
            "e.g. outputs/multirun/<date>/<time>"
        )
    jobs = [p.parent.parent for p in root.rglob(".hydra/overrides.yaml")]
    if not jobs and not allow_none:
        raise FileNotFoundError(
            f"rmt-report: no Hydra job folder (with .hydra/overrides.yaml) under {root}; "
            "pass the folder that `rmt-train -m ...` printed (outputs/multirun/<date>/<time>)"
        )
    return sorted(set(jobs), key=_job_sort_key)


def _job_sort_key(path: Path):
    # job folders are numbered 0, 1, ..., 10: sort numerically, not as text
    parts = []
    for part in path.parts:
        parts.append((0, int(part), "") if part.isdigit() else (1, 0, part))
    return parts


def read_job(path: Path, root: Path) -> Job:
    """Read one job folder; missing or malformed files are named in the error."""
    try:
        raw = read_overrides(path)
    except ValueError as exc:
        raise ValueError(f"rmt-report: {exc}") from exc
    overrides = dict(parse_override(item) for item in raw)
    name = str(path.relative_to(root)) if path != root else path.name

    summary: dict[str, object] = {}
    summary_file = path / SUMMARY_FILE
    status = "incomplete"
    if summary_file.is_file():
        try:
            summary = _flatten(json.loads(summary_file.read_text()))
            status = "done"
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"rmt-report: {summary_file} is not valid JSON ({exc}); "
                "delete it to report the job as incomplete"
            ) from exc

    reason = None
    if (path / FAILED_FILE).is_file():
        status = "failed"
        try:
            reason = str(json.loads((path / FAILED_FILE).read_text()).get("reason"))
        except (json.JSONDecodeError, AttributeError):
            reason = f"{FAILED_FILE} is damaged"
    best, steps = _best_from_metrics(path / METRICS_FILE)
    summary_steps = summary.get("steps", summary.get("step"))
    if _is_number(summary_steps):
        steps = int(summary_steps)
    minutes = None
    for key in ("minutes", "train_minutes", "wall_minutes"):
        if _is_number(summary.get(key)):
            minutes = float(summary[key])
            break
    if minutes is None and _is_number(summary.get("seconds")):
        minutes = float(summary["seconds"]) / 60
    if minutes is None:
        minutes = _minutes_from_files(path)
    return Job(path, name, overrides, status, summary, best, steps, minutes, reason)


def all_jobs(root: Path) -> list[Job]:
    """The jobs found on disk, and those of the sweep's ``multirun.yaml`` that never started
    (a sweep stopped by a signal, or by ``sweep.fail_fast``), in job order."""
    found = {p: read_job(p, root) for p in find_jobs(root, allow_none=True)}
    planned = read_sweep_jobs(root) or []
    for num, overrides in enumerate(planned):
        path = root / str(num)
        if path not in found:
            found[path] = Job(path, str(num), dict(map(parse_override, overrides)), "not started")
    if not found:
        find_jobs(root)  # raises, naming what a sweep folder holds
    return [found[p] for p in sorted(found, key=_job_sort_key)]


def collect(root: str | Path) -> SweepReport:
    """Read every job of the sweep under ``root`` into one table."""
    root = Path(root)
    jobs = all_jobs(root)
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    swept, common = [], {}
    for key in keys:
        values = {json.dumps(job.overrides.get(key), default=str) for job in jobs}
        if len(values) > 1 or len(jobs) == 1:
            swept.append(key)
        else:
            common[key] = jobs[0].overrides.get(key)
    if len(jobs) == 1:
        common = {}

    summary_keys: list[str] = []
    best_keys: list[str] = []
    for job in jobs:
        summary_keys += [
            k
            for k, v in job.summary.items()
            if k not in summary_keys and k not in _SUMMARY_SKIP and _is_scalar(v)
        ]
        best_keys += [k for k in job.best if k not in best_keys]
    reason = ["reason"] if any(job.reason for job in jobs) else []
    columns = ["job", "status", *reason, *swept, *summary_keys, *best_keys, "steps", "minutes"]
    records = []
    for job in jobs:
        rec: dict[str, object] = {"job": job.name, "status": job.status}
        if reason:
            rec["reason"] = job.reason
        rec.update({k: job.overrides.get(k) for k in swept})
        rec.update({k: job.summary.get(k) for k in summary_keys})
        rec.update({k: job.best.get(k) for k in best_keys})
        rec["steps"] = job.steps
        rec["minutes"] = None if job.minutes is None else round(job.minutes, 2)
        records.append(rec)
    return SweepReport(root, jobs, swept, common, columns, records)


def default_metric(report: SweepReport) -> str:
    """The metric to plot when none is given: the trainer's own best metric, else an accuracy.

    Order: ``best_metric`` from summary.json (the value the trainer selected ``best/`` on),
    then any summary or metrics.jsonl column with ``acc`` in its name, then any ``best_*``.
    """
    candidates = [c for c in report.columns if c not in ("job", "status", "steps", "minutes")]
    candidates = [c for c in candidates if c not in report.swept]
    numeric = [c for c in candidates if any(_is_number(r.get(c)) for r in report.records)]
    for rule in (
        lambda c: c == "best_metric",
        lambda c: "acc" in c and c.startswith("best"),
        lambda c: "acc" in c,
        lambda c: c.startswith("best"),
    ):
        for c in numeric:
            if rule(c):
                return c
    raise ValueError(
        "rmt-report: no numeric metric found in summary.json or metrics.jsonl of any job; "
        f"columns are {report.columns}. Pass --metric NAME."
    )


def write_csv(report: SweepReport, path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=report.columns)
        writer.writeheader()
        for rec in report.records:
            writer.writerow({k: "" if rec.get(k) is None else rec.get(k) for k in report.columns})
    return path


def to_markdown(report: SweepReport, metric: str | None = None) -> str:
    """Markdown table of the sweep; the shared overrides are listed above it."""
    lines = [f"# Sweep report: {report.root}", ""]
    if report.common:
        shared = ", ".join(f"`{k}={v}`" for k, v in report.common.items())
        lines += [f"Shared overrides: {shared}", ""]
    if metric:
        names = {str(j.summary["metric_name"]) for j in report.jobs if "metric_name" in j.summary}
        about = (
            f" (the trainer's `{names.pop()}`)"
            if metric == "best_metric" and len(names) == 1
            else ""
        )
        lines += [f"Main metric: `{metric}`{about}", ""]
    lines.append("| " + " | ".join(report.columns) + " |")
    lines.append("|" + "|".join("---" for _ in report.columns) + "|")
    for rec in report.records:
        lines.append("| " + " | ".join(_cell(rec.get(c)) for c in report.columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _best_from_metrics(path: Path) -> tuple[dict[str, float], int | None]:
    """Best value of every evaluation metric in metrics.jsonl, and the last step logged."""
    best: dict[str, float] = {}
    last_step = None
    if not path.is_file():
        return best, last_step
    lines = path.read_text().splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            # the last line of a killed job may be cut in half; anything else is damage
            if lineno == len(lines):
                continue
            raise ValueError(f"rmt-report: {path}:{lineno} is not a JSON object") from None
        if _is_number(event.get("step")):
            last_step = max(last_step or 0, int(event["step"]))
        split = str(event.get("split", "train"))
        if split in _TRAIN_SPLITS:
            continue
        for key, value in event.items():
            if key in _EVENT_KEYS or not _is_number(value):
                continue
            name = f"best_{split}_{key}"
            lower = any(tag in key.lower() for tag in _LOWER_IS_BETTER)
            old = best.get(name)
            if old is None or (value < old if lower else value > old):
                best[name] = float(value)
    return best, last_step


def _minutes_from_files(path: Path) -> float | None:
    start = path / ".hydra" / "config.yaml"
    ends = [p for p in (path / "summary.json", path / "metrics.jsonl") if p.is_file()]
    if not start.is_file() or not ends:
        return None
    return max(0.0, (max(p.stat().st_mtime for p in ends) - start.stat().st_mtime) / 60)


def _flatten(obj: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _is_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not math.isnan(float(value))


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
