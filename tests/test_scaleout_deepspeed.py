"""DeepSpeed ZeRO-2 with two CPU processes (gloo, DeepSpeed's CPU accelerator): trains like DDP,
saves ZeRO's own last/ and a save_pretrained best/.

Slow (two 2-process runs). Accelerate builds DeepSpeed state only for accelerator processes, so
the run goes through tests/engine_cpu_probe.py (see there). Skipped without ``deepspeed``
(``pip install 'rmt[deepspeed]'``).
"""

from __future__ import annotations

import pytest
import torch
from helpers import events, finish, launch_two_processes
from safetensors.torch import load_file

pytest.importorskip("deepspeed")
pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

ARGS = ["debug=fast", "trainer.progress_bar=false", "task=babilong_qa1", "task.min_facts=1",
        "task.max_facts=1"]  # fmt: skip
ZERO2 = ["--use_deepspeed", "--zero_stage", "2", "--gradient_accumulation_steps", "1",
         "--gradient_clipping", "1.0"]  # fmt: skip


def test_zero2_trains_like_ddp(tmp_path):
    runs = {"zero2": ZERO2, "ddp": ["--multi_gpu"]}
    started = {
        name: launch_two_processes(
            tmp_path, name, engine, [*ARGS, f"hydra.run.dir={tmp_path / name}"]
        )
        for name, engine in runs.items()
    }
    for proc, log in started.values():
        code, out = finish(proc, log)
        assert code == 0, out[-4000:]
    zero2, ddp = tmp_path / "zero2", tmp_path / "ddp"
    assert (zero2 / "last" / "pytorch_model").is_dir()  # ZeRO's own checkpoint layout
    for split in ("train", "valid"):
        a, b = events(zero2, split), events(ddp, split)
        assert [e["step"] for e in a] == [e["step"] for e in b] and a
        for key in ("loss", "grad_norm") if split == "train" else ("loss", "accuracy"):
            assert torch.tensor([e[key] for e in a]).allclose(
                torch.tensor([e[key] for e in b]), rtol=1e-4, atol=1e-6
            ), (split, key)
    wa, wb = (
        load_file(zero2 / "best" / "model.safetensors"),
        load_file(ddp / "best" / "model.safetensors"),
    )
    assert wa.keys() == wb.keys() and all(wa[k].allclose(wb[k], atol=1e-5) for k in wa)
