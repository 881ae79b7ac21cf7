"""Generation, checked by its logits against a greedy loop built only from `forward`.

`model.generate` reads all but the last prompt segment into memory and hands
`[memory ; last segment]` to the backbone's own `generate`. Its logits must equal those of `forward`
on the prompt plus the tokens generated so far, as long as `forward` cuts that longer sequence into
the same segments: with left alignment, while the generated tokens fit in the last segment. With
right or center alignment any extra token moves the cuts, so there only the first step is compared
with `forward`, and the whole generation is compared batch against single.

Random tiny models mostly repeat the last prompt token whatever the memory holds, so a memory bug
leaves their tokens unchanged. `recall_model` is trained for a few seconds to answer a key that
only the first segment holds: its answer comes through memory, and a memory bug changes it.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import forward_greedy, generate_with_logits, pad_batch

from rmt import RMTConfig, RMTForCausalLM
from rmt.modeling.backbones import FAMILIES, tiny_backbone_config
from rmt.modeling.config import ALIGNMENTS

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

TOL = {"rtol": 1e-4, "atol": 1e-5}


# ---------------------------------------------------------------- a model that answers from memory
QUERY = 2
KEYS = range(3, 11)
NOISE = (11, 32)
RECALL_VOCAB = 32
RECALL_SEG = 6


def recall_prompts(keys, length, seed):
    """`[key key key noise ... QUERY]`, `length` tokens; the key sits in the first segment only
    (for length >= 9 and segment size 6, whatever the alignment)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(*NOISE, (len(keys), length - 4), generator=g)
    keys = torch.as_tensor(list(keys))
    query = torch.full((len(keys), 1), QUERY)
    return torch.cat([keys[:, None].repeat(1, 3), noise, query], dim=1)


@pytest.fixture(scope="module")
def recall_model():
    """Llama-style, 2 memory tokens, segments of 6, trained ~150 steps (seconds) to answer the key.

    Training prompts have 8 to 15 tokens (2 or 3 segments), so the key always crosses one or two
    memory transitions. The fixture checks (through `forward`) that the model learned before any test
    uses it, so a bug that breaks training or `forward` shows up as a setup error of those tests.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        bb = tiny_backbone_config(
            "llama", vocab_size=RECALL_VOCAB, hidden_size=32, num_layers=2, num_heads=4,
            max_positions=64,
        )  # fmt: skip
        config = RMTConfig(backbone_config=bb, num_mem_tokens=2, segment_size=RECALL_SEG)
        model = RMTForCausalLM(config).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        g = torch.Generator().manual_seed(0)
        for step in range(150):
            keys = torch.randint(KEYS.start, KEYS.stop, (32,), generator=g)
            prompts = recall_prompts(keys, 8 + step % 8, seed=step)
            ids = torch.cat([prompts, keys[:, None]], dim=1)
            labels = torch.full_like(ids, -100)
            labels[:, -1] = keys
            loss = model(ids, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        keys = torch.tensor(list(KEYS) * 4)
        for length in (9, 12, 17):
            # Checked through `forward`, so that a bug in generation fails the tests, not this.
            with torch.no_grad():
                logits = model(recall_prompts(keys, length, seed=length), return_logits=True).logits
            accuracy = (logits[:, -1].argmax(-1) == keys).float().mean().item()
            assert accuracy == 1.0, f"recall_model did not learn (accuracy {accuracy} at {length})"
    finally:
        torch.set_num_threads(threads)
    return model


def with_alignment(model, alignment):
    model = copy.deepcopy(model)
    model.config.segment_alignment = alignment
    return model


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_recall_model_answers_through_memory(recall_model, alignment):
    """Prompts that differ only in their first segment get different answers: the key, which
    reached the last segment through memory alone. Scores change with it."""
    model = with_alignment(recall_model, alignment)
    keys = list(KEYS)
    prompts = recall_prompts(keys[:1], 15, seed=7).repeat(len(keys), 1)
    prompts[:, :3] = torch.tensor(keys)[:, None]  # rows differ in their first three tokens only
    with torch.no_grad():
        tokens, logits = generate_with_logits(model, prompts)
    assert tokens[:, 0].tolist() == keys
    assert not torch.allclose(logits[0], logits[1], **TOL)


@pytest.mark.parametrize("side", ["left", "right"])
def test_generate_equals_forward_greedy(recall_model, side):
    """Every step's logits equal `forward` on prompt + generated tokens (left alignment, and the
    last segments of 1 to 3 tokens leave room for 3 new ones: `forward` cuts the same segments)."""
    lengths = [13, 8, 15, 9]  # last segments of 1, 2, 3 and 3 tokens: generation pads them too
    keys = [3, 7, 10, 5]
    seqs = [recall_prompts([k], n, seed=n)[0] for k, n in zip(keys, lengths, strict=True)]
    ids, mask = pad_batch(seqs, side)
    with torch.no_grad():
        tokens, logits = generate_with_logits(recall_model, ids, mask, steps=3)
        for i, s in enumerate(seqs):
            ref_tokens, ref_logits = forward_greedy(recall_model, s, 3)
            torch.testing.assert_close(logits[i], ref_logits, **TOL)
            assert torch.equal(tokens[i], ref_tokens)
    assert tokens[:, 0].tolist() == keys


@pytest.mark.parametrize("alignment", ALIGNMENTS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_generate_batch_equals_single_and_forward(recall_model, alignment, side):
    """Any alignment: a padded batch generates what each prompt generates alone, and the first
    step's logits are `forward`'s last logits on the prompt."""
    model = with_alignment(recall_model, alignment)
    lengths = [19, 9, 14, 11, 16]
    keys = [4, 9, 3, 10, 6]
    seqs = [recall_prompts([k], n, seed=n)[0] for k, n in zip(keys, lengths, strict=True)]
    ids, mask = pad_batch(seqs, side)
    with torch.no_grad():
        tokens, logits = generate_with_logits(model, ids, mask, steps=3)
        for i, s in enumerate(seqs):
            one_tokens, one_logits = generate_with_logits(model, s[None], steps=3)
            assert torch.equal(tokens[i], one_tokens[0])
            torch.testing.assert_close(logits[i], one_logits[0], **TOL)
            last = model(s[None], return_logits=True).logits[0, -1]
            torch.testing.assert_close(logits[i, 0], last, **TOL)
    assert tokens[:, 0].tolist() == keys


# ---------------------------------------------------------------- every backbone family
@pytest.mark.parametrize("family", FAMILIES)
def test_families_generate_equals_forward_greedy(tiny_rmt, family):
    """Random weights, every family, a left-padded batch: tokens and logits equal `forward`'s."""
    model = tiny_rmt(family, mem=3, seg=8)
    g = torch.Generator().manual_seed(5)
    seqs = [torch.randint(3, 97, (n,), generator=g) for n in (17, 10, 26)]  # last segments 1, 2, 2
    ids, mask = pad_batch(seqs)
    with torch.no_grad():
        tokens, logits = generate_with_logits(model, ids, mask, steps=6)
        for i, s in enumerate(seqs):
            ref_tokens, ref_logits = forward_greedy(model, s, 6)
            torch.testing.assert_close(logits[i], ref_logits, **TOL)
            assert torch.equal(tokens[i], ref_tokens)
