"""SLURM without a cluster: the job parameters a sweep would submit, and the multi-GPU job script.

``rmt-train -m hydra/launcher=submitit_slurm ...`` runs in this process with stand-ins for
``srun`` and ``sbatch`` on ``PATH``; ``sbatch`` keeps the submission file submitit writes; jobs are reported as
finished instead of being waited for. The test reads the ``#SBATCH`` lines: partition, GPUs,
time limit and the array (one task per swept combination).

``scripts/slurm/train_array.sbatch`` (``accelerate launch`` inside each array task) runs under
bash with SLURM's variables set and a stand-in ``accelerate`` that prints its arguments.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from helpers import REPO, main_in_process

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

FAKE_SBATCH = """#!/bin/sh
cp "$1" "$SBATCH_COPY"
echo "Submitted batch job 4242"
"""


def sbatch_lines(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script, flags=re.M))


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` that keeps the submission file; finished jobs without waiting for SLURM."""
    import submitit
    from hydra.core.utils import JobReturn, JobStatus

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit checks that it exists
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    copy = tmp_path / "submitted.sh"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_COPY", str(copy))
    done = JobReturn(status=JobStatus.COMPLETED, _return_value=0.0)
    monkeypatch.setattr(submitit.core.core.Job, "results", lambda self: [done])
    return copy


def test_submitit_slurm_sweep_job_parameters(fake_slurm, tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    code = main_in_process(
        monkeypatch,
        "-m",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.tasks_per_node=1",
        "hydra.launcher.cpus_per_task=16",
        "hydra.launcher.timeout_min=240",
        "hydra.launcher.array_parallelism=2",
        "memory.num_tokens=0,5,10",
        "trainer.seed=0,1",
        f"hydra.sweep.dir={sweep}",
    )
    assert code == 0
    params = sbatch_lines(fake_slurm.read_text())
    assert params["partition"] == "gpu"
    assert params["gpus-per-node"] == "4"
    assert params["cpus-per-task"] == "16"
    assert params["time"] == "240"
    assert params["array"] == "0-5%2"  # 3 x 2 combinations, at most 2 running at once
    assert params["job-name"] == "train"
    # each array task gets its own overrides: the pickled job list submitit will run
    assert len(list(sweep.glob(".submitit/*/*_submitted.pkl"))) == 6


def test_array_script_runs_accelerate_launch_per_task(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "accelerate").write_text('#!/bin/sh\necho "accelerate $*"\n')
    (bin_dir / "accelerate").chmod(0o755)
    sweep = tmp_path / "sweep.txt"
    sweep.write_text("memory.num_tokens=0 trainer.seed=0\nmemory.num_tokens=10 trainer.seed=1\n")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "SLURM_ARRAY_TASK_ID": "1", "SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_ID": "77",
           "SLURM_ARRAY_JOB_ID": "70", "RMT_SWEEP": str(sweep)}  # fmt: skip
    script = REPO / "scripts" / "slurm" / "train_array.sbatch"
    out = subprocess.run(["bash", str(script), "experiment=memory_demo"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.split() == [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "4", "--num_machines", "1",
        "--main_process_port", str(29500 + 77 % 1000), "-m", "rmt.cli.train",
        "experiment=memory_demo", "memory.num_tokens=10", "trainer.seed=1",
        "hydra.run.dir=outputs/slurm/70/1",
    ]  # fmt: skip
    header = sbatch_lines(script.read_text())
    assert header["gpus-per-node"] and header["array"]
