"""Result tables, CSV/JSON files and heatmaps, on hand-made rows (no model needed)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from rmt.eval.plots import plot_heatmap, plot_sweep, y_range
from rmt.eval.results import (
    EvalResult,
    format_table,
    grid,
    group_by_series,
    read_csv,
    write_csv,
    write_json,
)


def _row(task, length, tokens, correct, n=4, model="ckpt-a", mode="rmt"):
    return EvalResult(
        model=model,
        mode=mode,
        task=task,
        length=length,
        length_tokens=tokens,
        accuracy=correct / n,
        exact_match=max(correct - 1, 0) / n,
        correct=correct,
        n=n,
        seconds=0.5,
        checkpoint=f"/runs/{model}/best",
    )


@pytest.fixture
def rows():
    # lengths deliberately out of order: columns must still grow left to right
    return [
        _row("qa1", "4k", 4096, 1),
        _row("qa1", "0k", 0, 4),
        _row("qa2", "0k", 0, 3),
        _row("qa2", "4k", 4096, 0),
        _row("qa1", "0k", 0, 2, mode="baseline"),
        _row("qa1", "4k", 4096, 0, mode="baseline"),
        _row("qa2", "0k", 0, 2, mode="baseline"),
        _row("qa2", "4k", 4096, 1, mode="baseline"),
    ]


def test_csv_written_in_percent_reads_back_as_fractions(rows, tmp_path: Path):
    # results.csv files written before accuracy became a fraction everywhere held percent
    old = [dataclasses.replace(r, accuracy=100 * r.accuracy, exact_match=100 * r.exact_match)
           for r in rows]  # fmt: skip
    write_csv(old, tmp_path / "results.csv")
    back = read_csv(tmp_path / "results.csv")
    assert [r.accuracy for r in back] == pytest.approx([r.accuracy for r in rows])
    assert [r.exact_match for r in back] == pytest.approx([r.exact_match for r in rows])


def test_csv_json_roundtrip(rows, tmp_path: Path):
    write_csv(rows, tmp_path / "results.csv")
    assert read_csv(tmp_path / "results.csv") == rows
    write_json(rows, tmp_path / "results.json", meta={"seed": 3})
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["meta"] == {"seed": 3}
    assert [EvalResult(**r) for r in payload["results"]] == rows


def test_grid_orders_lengths_by_tokens(rows):
    series = group_by_series(rows)
    assert list(series) == ["ckpt-a", "ckpt-a (baseline)"]
    tasks, lengths, matrix = grid(series["ckpt-a"])
    assert tasks == ["qa1", "qa2"] and lengths == ["0k", "4k"]
    assert matrix == [[1.0, 0.25], [0.75, 0.0]]
    tasks, lengths, matrix = grid(series["ckpt-a"][:3])  # a missing cell stays None
    assert matrix == [[1.0, 0.25], [0.75, None]]


def test_table_formats(rows):
    md = format_table(rows)  # results.md: fractions, as every file
    lines = md.splitlines()
    assert lines[0] == "accuracy as a fraction (0-1)"
    assert lines[2] == "| model | task | 0k | 4k | mean |"
    assert "| ckpt-a | qa1 | 1.000 | 0.250 | 0.625 |" in lines
    assert "| ckpt-a (baseline) | qa2 | 0.500 | 0.250 | 0.375 |" in lines
    assert len(lines) == 4 + 4
    text = format_table(rows, fmt="text", percent=True).splitlines()  # the console: percent
    assert text[0] == "accuracy in percent (0-100)"
    assert text[1].split() == ["model", "task", "0k", "4k", "mean"]
    assert "ckpt-a qa1 100.0 25.0 62.5".split() in [line.split() for line in text]
    em = format_table(rows, value="exact_match")
    assert "| ckpt-a | qa1 | 0.750 | 0.000 | 0.375 |" in em
    with pytest.raises(ValueError, match="unknown fmt"):
        format_table(rows, fmt="latex")


def test_heatmap_png_colors_follow_accuracy(rows, tmp_path: Path):
    path = plot_heatmap(group_by_series(rows)["ckpt-a"], tmp_path / "heat.png", title="ckpt-a")
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    # the figure must contain strong green (100%) and strong red (0%) cells
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    assert ((g > 0.45) & (r < 0.3) & (b < 0.4)).sum() > 50  # RdYlGn at 100 is dark green
    assert ((r > 0.6) & (g < 0.2) & (b < 0.2)).sum() > 50  # RdYlGn at 0 is dark red
    with pytest.raises(ValueError, match="no results"):
        plot_heatmap([], tmp_path / "none.png")


def test_sweep_plot_numeric_and_categorical(tmp_path: Path):
    recs = [
        {"mem": 0, "seg": 64, "acc": 20.0},
        {"mem": 10, "seg": 64, "acc": 80.0},
        {"mem": 0, "seg": 128, "acc": 21.0},
        {"mem": 10, "seg": 128, "acc": None},
    ]
    p = plot_sweep(recs, tmp_path / "a.png", x="mem", y="acc", group_by=["seg"])
    assert p.read_bytes()[:4] == b"\x89PNG"
    recs2 = [{"bb": "gpt2", "acc": 1.0}, {"bb": "llama", "acc": 2.0}]
    assert plot_sweep(recs2, tmp_path / "b.png", x="bb", y="acc").is_file()
    with pytest.raises(ValueError, match="no job has a value"):
        plot_sweep(recs, tmp_path / "c.png", x="mem", y="missing")


def test_sweep_plot_axis_stays_within_the_metric_range():
    bottom, top = y_range("best_valid_accuracy", [0.0, 0.02, 1.0])
    assert bottom == 0.0 and top == 1.0  # a fraction: neither below 0 nor above 1
    bottom, top = y_range("best_metric", [0.4, 0.5])
    assert 0.0 <= bottom < 0.4 and 0.5 < top
    bottom, top = y_range("final_loss", [2.0, 2.0])  # one value: a margin, still not negative
    assert 0.0 <= bottom < 2.0 < top
    assert y_range("delta", [-1.0, 1.0])[0] < -1.0  # a metric that can be negative keeps room
