"""Smoke test of scripts/bench_data.py on short lengths."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_data.py"


def test_bench_data_prints_json_and_writes_a_plot(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--repeats", "2", "--lengths", "1k", "4k", "--out", str(tmp_path)])
    printed = json.loads(capsys.readouterr().out)
    assert printed["median_ms"].keys() == {"1k", "4k"} == results["median_ms"].keys()
    assert all(v > 0 for v in printed["median_ms"].values())
    assert (tmp_path / "bench_data.png").stat().st_size > 1000
