"""Control for the capacity comparison: can the backbone bind keys to values with no memory at all?

The same tiny Llama-style backbone as ``experiment=retrieval_capacity`` (hidden 64, 2 layers,
4 heads, tied embeddings) sees every pair and the query in one context, ``k v ; k v ; ... ? k``,
and is trained to predict the queried value. No segments, no memory: if this model cannot learn
to pick the queried pair's value under some optimiser setting, no memory can be expected to learn
it under that setting either. The N pairs are drawn as in ``task=retrieval`` (N distinct keys out
of 16, values out of 16 with replacement); fresh samples every step, 400 held-out ones for the
accuracy printed every ``--every`` steps (one JSON line each).

    OMP_NUM_THREADS=1 python scripts/retrieval_context_control.py --n 2 --lr 3e-3 --batch-size 32
    OMP_NUM_THREADS=1 python scripts/retrieval_context_control.py --n 4 --lr 1e-3 --batch-size 128

AdamW at a constant learning rate, no schedule: the point is which settings let binding emerge.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, PreTrainedModel

from rmt.modeling.backbones import tiny_backbone_config

SYMBOLS = 16  # key and value symbols each, as in experiment=retrieval_capacity


def batch(size: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """[size, 3n + 3] token ids: ``k v ;`` per pair, then ``? k_q v_q`` (keys 0..15, values
    16..31, ``;`` 32, ``?`` 33); the last token is the answer."""
    keys = torch.stack([torch.randperm(SYMBOLS, generator=generator)[:n] for _ in range(size)])
    values = torch.randint(SYMBOLS, (size, n), generator=generator) + SYMBOLS
    query = torch.randint(n, (size, 1), generator=generator)
    pairs = torch.stack([keys, values, torch.full_like(keys, 2 * SYMBOLS)], -1).flatten(1)
    question = torch.full_like(query, 2 * SYMBOLS + 1)
    return torch.cat([pairs, question, keys.gather(1, query), values.gather(1, query)], 1)


def model(hidden: int, layers: int, heads: int, seed: int) -> PreTrainedModel:
    """The tiny Llama-style backbone that ``backbone=tiny_d64`` builds, for this vocabulary."""
    torch.manual_seed(seed)
    config = tiny_backbone_config("llama", vocab_size=2 * SYMBOLS + 2, hidden_size=hidden,
                                  num_layers=layers, num_heads=heads, max_positions=128)  # fmt: skip
    return AutoModelForCausalLM.from_config(config)


def accuracy(lm: PreTrainedModel, data: torch.Tensor) -> float:
    with torch.no_grad():
        guess = lm(input_ids=data[:, :-1]).logits[:, -1].argmax(-1)
    return (guess == data[:, -1]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2, help="pairs per sample (<= 16)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250, help="steps between accuracy lines")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 1 <= args.n <= SYMBOLS:
        parser.error(f"--n {args.n}: use 1..{SYMBOLS} (the keys of a sample are distinct)")
    lm = model(args.hidden, args.layers, args.heads, args.seed)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=args.lr)
    train = torch.Generator().manual_seed(args.seed)
    held_out = batch(400, args.n, torch.Generator().manual_seed(10**6 + args.seed))
    start = time.time()
    for step in range(1, args.steps + 1):
        data = batch(args.batch_size, args.n, train)
        loss = F.cross_entropy(lm(input_ids=data[:, :-1]).logits[:, -1], data[:, -1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0 or step == args.steps:
            row = {"step": step, "loss": round(loss.item(), 4),
                   "accuracy": round(accuracy(lm, held_out), 4),
                   "seconds": round(time.time() - start, 1)}  # fmt: skip
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
