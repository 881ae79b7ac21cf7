"""``rmt-eval``: the Hydra entrypoint of the evaluation grid (see ``rmt/conf/eval.yaml``).

    rmt-eval checkpoint=outputs/train/<date>/<time>_<name>
    rmt-eval checkpoint=<run> tasks=[qa1,qa2] lengths=[0k,1k,4k,16k,64k] samples=100
    rmt-eval checkpoints=[<run a>,<run b>] baseline=true

Thin on purpose: it hands the composed config and Hydra's run folder to
:func:`rmt.eval.evaluate.run_eval`. Bad input (a broken checkpoint, an unknown task, a missing
data file) ends with a one-paragraph message and exit status 2, not a stack trace.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rmt.cli import quiet_library_bars
from rmt.eval import evaluate
from rmt.eval.config import register_configs
from rmt.run import CheckpointError, discard_refused

register_configs()
RESULT_FILES = ("results.csv", "results.json")  # an earlier evaluation's: never removed


@hydra.main(config_path="../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Evaluate; returns the first checkpoint's mean accuracy, or mean perplexity for task=lm
    (what sweepers optimise)."""
    quiet_library_bars()
    cfg.output_dir = HydraConfig.get().runtime.output_dir
    try:
        rows = evaluate.run_eval(cfg)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:  # ConfigError is a ValueError
        if not any((Path(cfg.output_dir) / name).exists() for name in RESULT_FILES):
            discard_refused(cfg.output_dir)  # the folder Hydra made for this refused command
        print(f"rmt-eval: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return evaluate.main_value(rows)


if __name__ == "__main__":
    main()
