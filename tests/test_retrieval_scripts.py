"""scripts/retrieval_context_control.py and scripts/retrieval_probe.py: the control's samples and
the probe's split by queried pair and its ARMT key measurements."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import torch
from helpers import FAST, REPO, main_in_process

sys.path.insert(0, str(REPO / "scripts"))
import retrieval_context_control as control  # noqa: E402
import retrieval_probe as probe  # noqa: E402

from rmt.tasks.retrieval.sample import PAIR_TOKENS  # noqa: E402
from rmt.tasks.retrieval.tokenizer import build_tokenizer  # noqa: E402


@pytest.mark.parametrize("n", [1, 3, 16])
def test_control_samples_end_with_the_queried_keys_value(n):
    data = control.batch(64, n, torch.Generator().manual_seed(n))
    assert data.shape == (64, PAIR_TOKENS * n + 3)
    pairs, question, key, answer = data[:, :-3], data[:, -3], data[:, -2], data[:, -1]
    keys, values, ends = pairs[:, 0::3], pairs[:, 1::3], pairs[:, 2::3]
    assert (ends == 2 * control.SYMBOLS).all() and (question == 2 * control.SYMBOLS + 1).all()
    assert all(len(set(row.tolist())) == n for row in keys)  # distinct keys in a sample
    assert (keys < control.SYMBOLS).all() and (values >= control.SYMBOLS).all()
    for row in range(64):  # the answer is the value stored with the queried key
        (where,) = (keys[row] == key[row]).nonzero()[:, 0].tolist()
        assert answer[row] == values[row, where]


class _FirstPairModel(torch.nn.Module):
    """Answers every query with the first pair's value: 100% on pair 0, chance on the rest."""

    memory = SimpleNamespace()

    def __init__(self, vocab: int, segment: int) -> None:
        super().__init__()
        self.vocab, self.segment = vocab, segment

    def forward(self, input_ids):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., :] = torch.nn.functional.one_hot(input_ids[:, 1], self.vocab)[:, None]
        return SimpleNamespace(logits=logits)


def test_probe_splits_accuracy_by_the_queried_pair():
    vocab = len(build_tokenizer())
    ids, prompt = probe.samples(4, 400, 4)
    result = probe.probe(_FirstPairModel(vocab, 4), ids, prompt, 4, 4)
    assert result["by_pair"][0] == 100.0
    assert all(a < 25 for a in result["by_pair"][1:]), result  # equal values only: ~1/16
    assert "write_tokens" not in result  # not ARMT


def test_probe_measures_armt_keys_and_sees_a_key_that_names_the_pair(tiny_rmt):
    vocab = len(build_tokenizer())
    model = tiny_rmt(mem=2, seg=4, vocab=vocab, memory_type="armt",
                     memory_options={"layers": [0], "key_dim": 8})  # fmt: skip
    ids, prompt = probe.samples(2, 200, 4)
    first = probe.probe(model, ids, prompt, 2, 4)
    assert len(first["write_tokens"]) == 2 and len(first["by_pair"]) == 2
    for token in first["write_tokens"]:
        assert 0 < token["gate"] < 1 and -1 <= token["key_cos_diff"] <= 1
    # make the written key a function of the first key symbol alone: the key projection reads
    # only a subspace that the write token's output fills with the key token's embedding
    mem = model.memory
    with torch.no_grad():
        emb = model.backbone.get_input_embeddings().weight
        mem.key.zero_()
        captured = []
        layer = probe.decoder_layers(model.backbone)[0]
        hook = layer.register_forward_hook(
            lambda m, a, o: captured.append(o[0] if isinstance(o, tuple) else o)
        )
        model(input_ids=ids)
        hook.remove()
    write = captured[0][:, -2:]  # first segment's write outputs
    keyed = torch.linalg.lstsq(write[:, 0], emb[ids[:, 0]]).solution  # [H, H]: output -> key emb
    with torch.no_grad():
        mem.key[0] = keyed @ torch.randn(emb.shape[1], mem.key.shape[-1])
    result = probe.probe(model, ids, prompt, 2, 4)
    named = result["write_tokens"][0]
    assert named["key_cos_same"] > named["key_cos_diff"] + 0.2, named
    # the written keys of the first segment now name its key; the other segment's do not
    assert result["decodable"][0]["key_in_keys"] > 90, result["decodable"]
    assert result["decodable"][0]["key_in_keys"] > result["decodable"][1]["key_in_keys"] + 30


def test_decodable_reads_labels_that_are_linearly_there_and_only_those():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(16, (900,), generator=gen)
    codes = torch.randn(16, 24, generator=gen)
    noise = torch.randn(900, 24, generator=gen)
    assert probe.decodable(codes[labels] + 0.3 * noise, labels) > 95
    assert probe.decodable(noise, labels) < 20  # chance is 1/16
    # a fixed part shared by every row (a memory token's own embedding) changes nothing
    assert probe.decodable(codes[labels] + 0.3 * noise + 50.0, labels) > 95


def test_probe_reads_each_segments_writes_for_its_own_pair(tiny_rmt):
    """Fresh write tokens and an empty associative memory (W_v = 0 at init): every segment is
    computed alike, so each one's writes name its own pair (mixing segments up gives chance)."""
    vocab = len(build_tokenizer())
    model = tiny_rmt(mem=2, seg=4, vocab=vocab, memory_type="armt",
                     memory_options={"layers": [0], "key_dim": 8, "carry_tokens": False})  # fmt: skip
    ids, prompt = probe.samples(3, 300, 4)
    rows = probe.probe(model, ids, prompt, 3, 4)["decodable"]
    assert [row["pair"] for row in rows] == [0, 1, 2]
    assert all(row["key"] > 90 and row["value"] > 90 for row in rows), rows


def test_probe_measures_what_rmt_memory_tokens_hold(tiny_rmt):
    """RMT has no associative keys: the read-out is taken from the last layer's write tokens."""
    vocab = len(build_tokenizer())
    model = tiny_rmt(mem=2, seg=4, vocab=vocab)
    ids, prompt = probe.samples(3, 300, 4)
    result = probe.probe(model, ids, prompt, 3, 4)
    assert "write_tokens" not in result
    rows = result["decodable"]
    assert [row["pair"] for row in rows] == [0, 1, 2]
    assert all(set(row) == {"pair", "key", "value"} for row in rows)
    assert rows[0]["key"] > 90  # the first segment's writes see a fixed memory and its pair


def test_probe_reads_a_run_with_the_runs_own_symbols(tmp_path, monkeypatch, capsys):
    """``retrieval_probe.py <run folder> --n 2``: loads the run as rmt-eval does and draws its
    samples from the run's key and value symbols (3 each here, not the sweep's 16)."""
    run = tmp_path / "run"
    args = (*FAST, "task=retrieval", "memory=armt", "memory.num_tokens=2", "segment.size=4",
            "task.num_pairs=2", "task.pairs_per_segment=1", "task.key_vocab=3",
            "task.value_vocab=3", "task.curriculum=[{segments:[3]}]", f"hydra.run.dir={run}")  # fmt: skip
    assert main_in_process(monkeypatch, *args) == 0
    capsys.readouterr()
    drawn = []
    make = probe.samples
    monkeypatch.setattr(probe, "samples", lambda *a, **kw: drawn.append(kw) or make(*a, **kw))
    probe.main([str(run), "--n", "2", "--samples", "40"])
    result = json.loads(capsys.readouterr().out)
    assert drawn == [{"key_vocab": 3, "value_vocab": 3}]
    assert result["samples"] == 40 and len(result["by_pair"]) == 2
    assert len(result["write_tokens"]) == 2
