"""The option-reading probes: the drill asks what it claims to ask, and the copy
probe scores a model that can copy options above one that cannot."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from pure_transformer.mcq.record import MCQ
from pure_transformer.model.config import model_preset

LETTERS = ("A", "B", "C", "D")  # these tests ask four-option questions
from pure_transformer.eval.probes import drill_batches, lookup_drill, option_copy_accuracy
from pure_transformer.eval.scoring import encode_prompt


@pytest.mark.fast
def test_drill_answer_is_the_key_paired_with_the_asked_value():
    batch = next(drill_batches(vocab_size=500, batch_size=64, filler=5, seed=3))
    assert batch.input_ids.shape == (64, 8 + 5 + 2)
    for row, answer in zip(batch.input_ids.tolist(), batch.answer.tolist()):
        pairs = dict(zip(row[1:8:2], row[0:8:2]))  # value -> key
        assert sorted(row[0:8:2]) == [10, 11, 12, 13]  # each key once
        assert row[-2] == 5 and pairs[row[-1]] == answer


@pytest.mark.fast
def test_lookup_drill_reports_held_out_accuracy():
    cfg = model_preset("tiny")
    history = list(lookup_drill(cfg, steps=4, batch_size=8, report_every=2))
    assert [step for step, _, _ in history] == [2, 4]
    assert all(loss > 0 and 0.0 <= acc <= 1.0 for _, loss, acc in history)


def test_positional_control_is_learned_so_the_drill_can_see_learning():
    # A copy by position is learnt in a few hundred steps even by a 2-layer model;
    # the drill's chance-level results on the lookup are therefore not a broken loop.
    cfg = dataclasses.replace(model_preset("tiny"), vocab_size=512, dim=64, n_layers=2, n_heads=2, ffn_dim=128)
    *_, (step, loss, accuracy) = lookup_drill(cfg, steps=300, batch_size=32, report_every=100,
                                              positional_control=True)
    assert step == 300 and accuracy > 0.9 and loss < 0.5


class _Copier(torch.nn.Module):
    """A hand-built perfect option reader: after "Answer: C." it predicts the first
    token of option C's text."""

    def __init__(self, tok, vocab_size: int):
        super().__init__()
        self.tok, self.vocab_size = tok, vocab_size
        self.cfg = types.SimpleNamespace(max_seq_len=4096)
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, last_only=False):
        text = self.tok.decode(ids[0].tolist())  # "...Answer: C."
        letter = text.rstrip(".")[-1]
        line = next(x for x in text.splitlines() if x.startswith(f"{letter}. "))
        target = self.tok.encode(" " + line[3:])[0]
        logits = torch.zeros(1, 1, self.vocab_size)
        logits[0, 0, target] = 1.0
        return None, logits


@pytest.mark.fast
def test_option_copy_accuracy_separates_a_reader_from_a_constant(tiny_tokenizer):
    tok = tiny_tokenizer
    questions = [MCQ(question=f"Which drug number {i}?", options={L: f"{name} {i}" for L, name in
                     zip(LETTERS, ("Warfarin", "Heparin", "Aspirin", "Insulin"))}, answer="A") for i in range(8)]
    vocab = tok.vocab_size
    reader = _Copier(tok, vocab)
    assert option_copy_accuracy(reader, tok, questions) == 1.0

    class Constant(_Copier):
        def forward(self, ids, last_only=False):
            logits = torch.zeros(1, 1, vocab)
            logits[0, 0, tok.encode(" Warfarin")[0]] = 1.0  # always option A's first token
            return None, logits

    assert option_copy_accuracy(Constant(tok, vocab), tok, questions) == 0.25
    assert encode_prompt(tok, questions[0])[-1] == tok.encode("Answer:")[-1]
