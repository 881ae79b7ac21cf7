"""What a trained retrieval checkpoint has learned: accuracy by queried pair, and (ARMT) whether its
written keys name the pair's key.

    python scripts/retrieval_probe.py outputs/retrieval_capacity/armt_n2 --n 2

The checkpoint (a run folder or its best/) is checked and loaded as ``rmt-eval`` does, and the
samples use the run's key and value symbols (``task.key_vocab``, ``task.value_vocab``).

Prints one JSON object:
- ``accuracy`` and ``by_pair``: the answer's argmax under teacher forcing on fresh samples (seeds
  10^7 + i, never used for training or validation), split by which pair is queried. A memory
  that stores the N values but not which key each belongs to sits near 1/N on every pair; one
  that keeps the first pair only sits near 100% on it and chance on the rest.
- ARMT only, per write-memory token of the first pair's segment, in the first carrying layer:
  ``key_cos_same`` / ``key_cos_diff``, the mean cosine between the written key features of two
  samples whose first key is the same / different symbol (equal: the key does not depend on the
  key token); ``query_match`` / ``query_other``, the mean weight a query puts on that key when
  the query asks for that key / another one (equal: reading cannot tell pairs apart); ``gate``,
  the mean write gate beta.
- ``decodable``, per pair segment: how well a linear read-out (ridge regression on 2/3 of the
  samples, accuracy in % on the other third) recovers the segment's key symbol and value symbol
  from what the memory writes: the write-memory tokens' outputs of the first carrying layer
  (ARMT) or of the last layer (RMT: the next memory), and for ARMT also from the written key
  features. Binding needs the key in the written keys of every segment: the earlier recipe's
  ARMT runs lost it after the first segment while keeping values, the current recipe's keep both
  in every segment (README, "Capacity, head to head").
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from rmt.eval import checkpoint as checkpoints
from rmt.modeling.adapters import decoder_layers
from rmt.modeling.memory.armt import AssociativeMemory
from rmt.tasks.retrieval.sample import Layout, make_sample


def samples(n: int, count: int, segment_size: int, *, key_vocab: int = 16, value_vocab: int = 16
            ) -> tuple[torch.Tensor, int]:  # fmt: skip
    """[count, (n + 1) * segment_size] ids (one pair per segment, then the query) and the
    prompt length (the answer's position)."""
    layout = Layout(num_pairs=n, pairs_per_segment=1, key_vocab=key_vocab, value_vocab=value_vocab,
                    segment_size=segment_size)  # fmt: skip
    problem = layout.problem()
    if problem:
        raise SystemExit(f"--n {n}: {problem}")
    made = [make_sample(layout, segments=n + 1, seed=10**7 + i) for i in range(count)]
    return torch.tensor([s["input_ids"] for s in made]), made[0]["prompt_length"]


def decodable(x: torch.Tensor, labels: torch.Tensor, *, ridge: float = 1e-2) -> float:
    """Held-out accuracy (%) of a linear read-out of ``labels`` [B] from ``x`` [B, D]: ridge
    regression onto one-hot labels, fitted on the first 2/3 of the rows (standardised), argmax on
    the rest. Deterministic; chance is about 1 / (number of labels)."""
    x = x.double().flatten(1)
    cut = 2 * len(x) // 3
    mean, std = x[:cut].mean(0), x[:cut].std(0) + 1e-6
    x = torch.cat([(x - mean) / std, torch.ones(len(x), 1, dtype=x.dtype)], 1)  # with a bias
    classes, target = labels.unique(return_inverse=True)
    onehot = F.one_hot(target, len(classes)).double()
    train = x[:cut]
    gram = train.T @ train + ridge * cut * torch.eye(x.shape[1], dtype=x.dtype)
    weights = torch.linalg.solve(gram, train.T @ onehot[:cut])
    correct = (x[cut:] @ weights).argmax(-1) == target[cut:]
    return round(100 * correct.double().mean().item(), 1)


def probe(model, ids: torch.Tensor, prompt: int, n: int, size: int) -> dict:
    memory = model.memory
    armt = isinstance(memory, AssociativeMemory) and memory.layer_ids
    written, inputs, hooks = [], [], []
    backbone = getattr(model, "backbone", None)
    if backbone is not None:  # writes: the first carrying layer (ARMT) or the last layer (RMT)
        layer = decoder_layers(backbone)[memory.layer_ids[0] if armt else -1]
        hooks.append(layer.register_forward_hook(
            lambda m, a, o: written.append(o[0] if isinstance(o, tuple) else o)))  # fmt: skip
    if armt:  # and the carrying layer's inputs before the read
        hooks.append(layer.register_forward_pre_hook(
            lambda m, a, kw: inputs.append(a[0] if a else kw["hidden_states"]),
            with_kwargs=True, prepend=True,
        ))  # fmt: skip
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    for hook in hooks:
        hook.remove()
    correct = logits[:, prompt - 1].argmax(-1) == ids[:, prompt]
    keys = ids[:, 0 : n * size : size]  # the pair keys, one per segment
    queried = (keys == ids[:, prompt - 1, None]).float().argmax(-1)
    result = {
        "samples": len(ids), "accuracy": round(100 * correct.float().mean().item(), 1),
        "by_pair": [round(100 * correct[queried == j].float().mean().item(), 1) for j in range(n)],
    }  # fmt: skip
    if written:  # one backbone call per segment, the write-memory tokens last
        m = memory.num_tokens
        result["decodable"] = []
        for j in range(n):
            write = written[j][:, -m:]
            row = {"pair": j, "key": decodable(write, ids[:, j * size]),
                   "value": decodable(write, ids[:, j * size + 1])}  # fmt: skip
            if armt:
                key = memory.write_projections(write, slot=0)[0]
                row.update(key_in_keys=decodable(key, ids[:, j * size]),
                           value_in_keys=decodable(key, ids[:, j * size + 1]))  # fmt: skip
            result["decodable"].append(row)
    if armt:
        write = written[0][:, -m:]  # the first segment's write-memory outputs [B, M, H]
        key, _, gate = memory.write_projections(write, slot=0)
        gate = gate[..., 0].mean(0)
        query_in = inputs[-1][:, m + 1]  # the query segment's key token: [read mem, ?, k_q, ...]
        query = F.normalize(memory.query_features(query_in, 0), dim=-1)
        same = keys[:, :1] == keys[:, :1].T
        other = ~torch.eye(len(ids), dtype=torch.bool)
        asks = ids[:, prompt - 1, None] == keys[:, :1].T  # query i asks for sample j's first key
        tokens = []
        for t in range(m):
            cos, weight = key[:, t] @ key[:, t].T, query @ key[:, t].T
            tokens.append({
                "key_cos_same": round(cos[same & other].mean().item(), 3),
                "key_cos_diff": round(cos[~same].mean().item(), 3),
                "query_match": round(weight[asks].mean().item(), 3),
                "query_other": round(weight[~asks].mean().item(), 3),
                "gate": round(gate[t].item(), 3),
            })  # fmt: skip
        result["write_tokens"] = tokens
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a run folder or its best/")
    parser.add_argument("--n", type=int, required=True, help="pairs per sample")
    parser.add_argument("--samples", type=int, default=800)
    args = parser.parse_args(argv)
    ckpt = checkpoints.check(args.checkpoint)
    task = ckpt.run_config.task
    if task.type != "retrieval":
        raise SystemExit(f"{args.checkpoint}: trained on task.type={task.type}, not retrieval")
    model, _ = checkpoints.load(ckpt)
    size = model.config.segment_size
    ids, prompt = samples(args.n, args.samples, size, key_vocab=task.key_vocab,
                          value_vocab=task.value_vocab)  # fmt: skip
    print(json.dumps(probe(model, ids, prompt, args.n, size), indent=1))


if __name__ == "__main__":
    main()
