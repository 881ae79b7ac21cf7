#!/usr/bin/env python
"""Training-step time of an encoder RMT classifier (`RMTForSequenceClassification`), with and
without memory, against the number of segments.

One step = forward over all segments + backward + AdamW step, batch of `--batch-size` samples
of `n * segment_size` tokens. "memory" carries `--mem-tokens` tokens in place ([memory ; segment])
and classifies the final memory; "no memory" reads the same segments independently and
classifies the last segment's first token. Prints one JSON object (and writes it to --out).

    python scripts/bench_encoder.py --backbone tiny_encoder --threads 1
    python scripts/bench_encoder.py --backbone minilm --segments 1,2,4 --threads 1  # needs [minilm]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModel

from rmt import RMTConfig, RMTForSequenceClassification
from rmt.modeling.backbones import minilm_path, tiny_encoder_config

# backbone -> (segment_size, mem_tokens) used unless given on the command line
PRESETS = {"tiny_encoder": (128, 16), "minilm": (496, 16)}


def build(backbone: str, mem: int, seg: int, seed: int) -> RMTForSequenceClassification:
    """A classifier with `mem` memory tokens (0: first-token head, no memory) around `backbone`."""
    torch.manual_seed(seed)
    head = {"classifier_input": "memory" if mem else "first_token", "num_labels": 4}
    if backbone == "minilm":
        encoder = AutoModel.from_pretrained(minilm_path())
        return RMTForSequenceClassification.from_backbone(
            encoder, num_mem_tokens=mem, segment_size=seg, segment_checkpointing=False, **head
        )
    bb = tiny_encoder_config(
        "bert", vocab_size=512, hidden_size=128, num_layers=2, num_heads=4, max_positions=256
    )
    config = RMTConfig(
        backbone_config=bb, num_mem_tokens=mem, segment_size=seg, segment_checkpointing=False,
        **head,
    )  # fmt: skip
    return RMTForSequenceClassification(config)


def time_steps(model, n_segments: int, seg: int, batch: int, steps: int, warmup: int) -> dict:
    """Median and all timings (seconds) of `steps` training steps after `warmup` untimed ones."""
    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000 if vocab > 2000 else 3, vocab, (batch, n_segments * seg), generator=g)
    labels = torch.randint(0, 4, (batch,), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = model(ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"step_s": median, "times_s": times, "tokens_per_s": batch * n_segments * seg / median}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backbone", default="tiny_encoder", choices=sorted(PRESETS))
    ap.add_argument("--segments", default="1,2,4,8", help="segment counts to measure")
    ap.add_argument("--segment-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--mem-tokens", type=int, default=None, help="default: the preset's")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per point")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/bench", help="folder for the JSON")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    seg_default, mem_default = PRESETS[args.backbone]
    seg = args.segment_size or seg_default
    mem = args.mem_tokens if args.mem_tokens is not None else mem_default
    points = []
    for n in [int(x) for x in args.segments.split(",")]:
        for m in (mem, 0):
            model = build(args.backbone, m, seg, args.seed)
            row = time_steps(model, n, seg, args.batch_size, args.steps, args.warmup)
            points.append({"segments": n, "mem_tokens": m, **row})
    for p in points:
        if p["mem_tokens"]:
            base = next(q for q in points if q["segments"] == p["segments"] and not q["mem_tokens"])
            p["ratio_vs_no_memory"] = p["step_s"] / base["step_s"]
    result = {
        "benchmark": "encoder_train_step",
        "backbone": args.backbone,
        "segment_size": seg,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": platform.processor() or platform.machine(),
        "points": points,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"encoder_{args.backbone}_cpu.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
