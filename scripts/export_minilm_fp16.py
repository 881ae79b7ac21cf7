"""Write an fp16 copy of all-MiniLM-L6-v2 (weights + tokenizer) to a folder, small enough to carry.

The optional `minilm` extra ships the encoder as 87 MB of fp32 safetensors; a borrowed GPU
machine takes smaller uploads. Half precision halves the weights (about 44 MB with the
tokenizer); `backbone=minilm` loads them back in float32 (`backbone.dtype`), so training and
evaluation run as from the original folder, up to fp16 rounding of the weights.

    python scripts/export_minilm_fp16.py outputs/minilm_fp16
    rmt-train experiment=babilong_cls_memory backbone=minilm backbone.pretrained=outputs/minilm_fp16
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from rmt.modeling.backbones import minilm_path


def folder_mb(folder: Path) -> float:
    """Total size of the files in ``folder``, in MB."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write (config.json, model.safetensors, tokenizer)")
    parser.add_argument("--source", default=None, help="the model folder (default: the extra's)")
    args = parser.parse_args()

    source = Path(args.source) if args.source else minilm_path()
    out = Path(args.out)
    model = AutoModel.from_pretrained(source, dtype=torch.float16)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    print(f"{out}: {folder_mb(out):.1f} MB (from {source}: {folder_mb(source):.1f} MB)")


if __name__ == "__main__":
    main()
