"""Long inputs stream through evaluation: peak memory does not grow with the input length.

Measured in fresh processes (``python scripts/longrun.py`` of this checkout) with the kernel's
peak-RSS mark reset before each run. Each length runs in its own process, so no measurement can
hide a tensor that grows with the input in heap that an earlier, longer run freed (the
allocator's own settings, such as glibc's ``MALLOC_MMAP_THRESHOLD_``, are left alone).

What may grow: the prompt itself (token ids as Python lists and one int64 tensor, about 40
bytes per token while a sample is built). What must not: anything per token inside the model
(hidden states: >= 4 * hidden bytes per token and layer; logits: 4 * vocab bytes per token).
The control run keeps full logits (``model(..., return_logits=True)``, 4 * vocab bytes a token)
and must show that per-token cost, proving the measurement can see it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import checkout_env

PROMPT_BYTES_PER_TOKEN = 128  # generous bound for the prompt's own storage


def _longrun(jobs: dict[str, list[str]], folder: Path, timeout: int) -> dict[str, list[dict]]:
    """Run ``scripts/longrun.py`` once per job, all at once; the JSON lines of each."""
    procs = {}
    for name, args in jobs.items():
        out = folder / f"{name}.jsonl"
        cmd = [
            *[sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "longrun.py")],
            *args,
            "--out",
            str(out),
        ]
        procs[name] = (out, subprocess.Popen(
            cmd, env=checkout_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ))  # fmt: skip
    results = {}
    for name, (out, proc) in procs.items():
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"longrun {name} timed out; partial output:\n{proc.communicate()}")
        assert proc.returncode == 0, stderr[-3000:]
        results[name] = [json.loads(line) for line in out.read_text().splitlines()]
    return results


def test_peak_memory_flat_from_4k_to_32k(tmp_path: Path):
    runs = _longrun(
        {"short": ["--lengths", "4k", "--control"], "long": ["--lengths", "32k"]}, tmp_path, 300
    )
    (short, control), (long,) = runs["short"], runs["long"]
    assert (short["length"], long["length"], control["length"]) == (4096, 32768, 4096)
    assert control["mode"] == "full_logits_control"
    assert short["n"] == long["n"] == 1
    extra_tokens = long["length"] - short["length"]
    growth = (long["peak_delta_mb"] - short["peak_delta_mb"]) * 2**20
    # streaming: 8x the input costs no more than the input's own storage
    assert growth / extra_tokens < PROMPT_BYTES_PER_TOKEN, runs
    assert long["peak_rss_mb"] < 1.5 * short["peak_rss_mb"]
    # the measurement does see per-token memory when an implementation keeps it
    assert control["peak_delta_mb"] * 2**20 / control["length"] > 1024, runs
    assert control["peak_delta_mb"] > 10 * max(short["peak_delta_mb"], 1.0), runs


@pytest.mark.slow
def test_one_million_tokens_on_cpu(tmp_path: Path):
    """A tiny model scores a 1M-token BABILong sample on CPU with flat working memory."""
    runs = _longrun(
        {"small": ["--lengths", "32k", "--phases"], "big": ["--lengths", "1M", "--phases"]},
        tmp_path,
        1200,
    )
    (small,), (big,) = runs["small"], runs["big"]
    results = [small, big]
    assert big["length"] == 1 << 20 and big["n"] == 1 and big["prompt_tokens"] > 1 << 20
    extra = big["length"] - small["length"]
    growth = (big["peak_delta_mb"] - small["peak_delta_mb"]) * 2**20
    assert growth / extra < PROMPT_BYTES_PER_TOKEN, results
    # reading the built prompt through the model adds a few int64 copies of the ids (ids, mask,
    # positions: 8 bytes a token each) and nothing per token and hidden unit
    assert big["score_peak_delta_mb"] * 2**20 / big["length"] < 64, results
    print(json.dumps(big))
