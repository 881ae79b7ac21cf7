"""Long inputs stream through evaluation: peak memory does not grow with the input length.

Measured in a fresh process (``python -m rmt.eval.longrun``) so other tests' garbage does not
blur it, with the kernel's peak-RSS mark reset before each run and glibc told to map every
allocation above 64 KiB on its own (``MALLOC_MMAP_THRESHOLD_``), so a tensor that grows with
the input shows up in RSS instead of hiding in already-freed heap.

What may grow: the prompt itself (token ids as Python lists and one int64 tensor, about 40
bytes per token while a sample is built). What must not: anything per token inside the model
(hidden states: >= 4 * hidden bytes per token and layer; logits: 4 * vocab bytes per token).
The control run keeps full logits (``model(..., return_logits=True)``, 4 * vocab bytes a token)
and must show that per-token cost, proving the measurement can see it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROMPT_BYTES_PER_TOKEN = 128  # generous bound for the prompt's own storage


def _longrun(args: list[str], out: Path, timeout: int, *, exact_malloc: bool = True) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if exact_malloc:  # every allocation >= 64 KiB is its own mapping (slow: small scale only)
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "rmt.eval.longrun", *args, "--out", str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"longrun timed out; partial output:\n{exc.stdout}\n{exc.stderr}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_peak_memory_flat_from_4k_to_32k(tmp_path: Path):
    results = _longrun(["--lengths", "4k", "32k", "--control"], tmp_path / "m.jsonl", 300)
    short, long, control = results
    assert (short["length"], long["length"], control["length"]) == (4096, 32768, 4096)
    assert short["n"] == long["n"] == 1
    extra_tokens = long["length"] - short["length"]
    growth = (long["peak_delta_mb"] - short["peak_delta_mb"]) * 2**20
    # streaming: 8x the input costs no more than the input's own storage
    assert growth / extra_tokens < PROMPT_BYTES_PER_TOKEN, results
    assert long["peak_rss_mb"] < 1.5 * short["peak_rss_mb"]
    # the measurement does see per-token memory when an implementation keeps it
    assert control["peak_delta_mb"] * 2**20 / control["length"] > 1024, results
    assert control["peak_delta_mb"] > 10 * max(short["peak_delta_mb"], 1.0), results


@pytest.mark.slow
def test_one_million_tokens_on_cpu(tmp_path: Path):
    """A tiny model scores a 1M-token BABILong sample on CPU with flat working memory."""
    results = _longrun(
        ["--lengths", "32k", "1M", "--phases"], tmp_path / "m.jsonl", 1200, exact_malloc=False
    )
    small, big = results
    assert big["length"] == 1 << 20 and big["n"] == 1 and big["prompt_tokens"] > 1 << 20
    extra = big["length"] - small["length"]
    growth = (big["peak_delta_mb"] - small["peak_delta_mb"]) * 2**20
    assert growth / extra < PROMPT_BYTES_PER_TOKEN, results
    # reading the built prompt through the model adds a few int64 copies of the ids (ids, mask,
    # positions: 8 bytes a token each) and nothing per token and hidden unit
    assert big["score_peak_delta_mb"] * 2**20 / big["length"] < 64, results
    print(json.dumps(big))
