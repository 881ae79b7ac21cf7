"""A padded batch gives every sample exactly what it gets alone: logits, loss, memory and gradients.

`forward` unpads the batch, cuts each sample into segments on its own, and aligns the samples on
their last segment; partial segments are right-padded inside each backbone call. Pads only matter
where a later segment reads what they could have changed, so these tests put them there: with
`right` and `center` alignment the partial segments come first and their written memory is read
by every later segment; with `left` alignment the partial segment is the last one, whose written
memory is `out.memory`. Every sample is compared alone against its row of the batch, for both
padding sides, on a RoPE backbone (llama) and one with learned positions (gpt2).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import recompute_partially

from rmt.modeling.config import ALIGNMENTS
from rmt.modeling.segmentation import batch_schedule, segment_bounds

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

VOCAB = 97
SEG = 6
LENGTHS = [23, 9, 4, 14]  # 4, 2, 1 and 3 segments of at most 6 tokens
TOL = {"rtol": 1e-4, "atol": 1e-5}


def rand_ids(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n,), generator=g)


def samples():
    return [rand_ids(n, seed=n) for n in LENGTHS]


def pad_batch(seqs, side):
    """Stack 1-D samples into a batch padded on `side`; return ids, mask and each sample's columns."""
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    where = []
    for i, s in enumerate(seqs):
        cols = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, cols], mask[i, cols] = s, 1
        where.append(cols)
    return ids, mask, where


def sparse_labels(seq):
    """Every third token labelled, so some labels predict across a segment boundary."""
    labels = torch.full_like(seq, -100)
    labels[1::3] = seq[1::3]
    return labels


# The two model internals these tests read; a refactor of the model changes only these lines.
def memory_before_last_segment(model, ids, mask=None):
    """[B, M, H]: the memory each sample's last segment reads (where generation starts)."""
    return model.read_memory(ids, mask)


def initial_memory(model):
    """[M, H]: the learned memory a sample's first segment reads."""
    return model.memory.tokens


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_lengths_put_pads_where_they_matter(alignment):
    """Guard on the test data: some samples get pads in the last step (all alignments) and in an
    earlier step (right and center: left alignment keeps every earlier segment full)."""
    schedule = batch_schedule(LENGTHS, SEG, alignment)
    ragged = [len({e - s for _, s, e in step}) > 1 for step in schedule]
    assert ragged[-1]
    assert any(ragged[:-1]) == (alignment != "left")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("alignment", ALIGNMENTS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_each_sample_alone(tiny_rmt, family, alignment, side):
    model = tiny_rmt(family, mem=3, seg=SEG, segment_alignment=alignment)
    seqs = samples()
    ids, mask, where = pad_batch(seqs, side)
    labels = ids.masked_fill(mask == 0, -100)
    sparse = torch.full_like(ids, -100)
    for i, s in enumerate(seqs):
        sparse[i, where[i]] = sparse_labels(s)
    with torch.no_grad():
        batch = model(ids, attention_mask=mask, labels=labels, return_logits=True)
        # With labels and no logits, the LM head runs only at labelled positions: another path.
        batch_sparse = model(ids, attention_mask=mask, labels=sparse)
        singles = [model(s[None], labels=s[None], return_logits=True) for s in seqs]
    assert batch_sparse.logits is None
    assert torch.all(batch.logits[mask == 0] == 0)
    for i, (s, single) in enumerate(zip(seqs, singles, strict=True)):
        logits = single.logits[0]
        torch.testing.assert_close(batch.logits[i, where[i]], logits, **TOL)
        torch.testing.assert_close(batch.memory[i], single.memory[0], **TOL)
        torch.testing.assert_close(batch.sample_loss[i], single.sample_loss[0], **TOL)
        # The loss is that of one causal-LM pass over the whole sample: labels are shifted across
        # segment boundaries, never inside each segment alone.
        torch.testing.assert_close(
            single.sample_loss[0], F.cross_entropy(logits[:-1], s[1:]), **TOL
        )
        assert batch.num_label_tokens[i].item() == len(s) - 1
        lab = sparse_labels(s)
        ref = F.cross_entropy(logits[:-1], lab[1:], ignore_index=-100)
        torch.testing.assert_close(batch_sparse.sample_loss[i], ref, **TOL)
        assert batch_sparse.num_label_tokens[i].item() == (lab[1:] != -100).sum().item()
    torch.testing.assert_close(batch.loss, F.cross_entropy(
        torch.cat([sg.logits[0, :-1] for sg in singles]), torch.cat([s[1:] for s in seqs])
    ), **TOL)  # fmt: skip


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("alignment", ALIGNMENTS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_read_memory_equals_forward_memory_of_the_prefix(tiny_rmt, family, alignment, side):
    """The memory generation starts from is what `forward` writes over all but the last segment."""
    model = tiny_rmt(family, mem=3, seg=SEG, segment_alignment=alignment)
    seqs = samples()
    ids, mask, _ = pad_batch(seqs, side)
    with torch.no_grad():
        got = memory_before_last_segment(model, ids, mask)
        for i, s in enumerate(seqs):
            bounds = segment_bounds(len(s), SEG, alignment)
            start = bounds[-1][0]
            if start == 0:
                torch.testing.assert_close(got[i], initial_memory(model))
                continue
            # The prefix alone is cut into the same segments as inside the whole sample.
            assert segment_bounds(start, SEG, alignment) == bounds[:-1]
            torch.testing.assert_close(got[i], model(s[None, :start]).memory[0], **TOL)


@pytest.mark.parametrize(
    "depth,checkpointing",
    [(-1, False), (1, False), (2, False), (2, True), (-1, True), (-1, "partial"), (-1, "mlp")],
)
def test_padded_batch_gradients_equal_sum_over_samples(tiny_rmt, monkeypatch, depth, checkpointing):
    """Truncated BPTT and checkpointing cut each sample as they would cut it alone.

    The batch loss summed over labelled tokens has the gradient of the per-sample sums: no memory
    crosses between samples, and the BPTT cut counts from each sample's own last segment.
    """
    kwargs = {"bptt_depth": depth, "segment_checkpointing": checkpointing}
    model = tiny_rmt("llama", mem=3, seg=SEG, segment_alignment="right", **kwargs).train()
    seqs = samples()
    ids, mask, _ = pad_batch(seqs, "left")
    recompute_partially(monkeypatch, model, ids, 2, mask)  # "partial": the batch's first 2 steps
    out = model(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    (out.sample_loss * out.num_label_tokens).sum().backward()
    batch_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    for s in seqs:
        single = model(s[None], labels=s[None])
        (single.loss * single.num_label_tokens.sum()).backward()
    single_grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert batch_grads.keys() == single_grads.keys() and "memory.tokens" in batch_grads
    assert batch_grads["memory.tokens"].abs().sum() > 0
    for name, grad in batch_grads.items():
        torch.testing.assert_close(
            grad, single_grads[name], rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}"
        )
