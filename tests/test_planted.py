"""A neuron planted to fire on a known token set: recording finds it, and scoring rewards the true rule.

No LLM here: the "simulations" come straight from a rule, so the test isolates recording + scoring.
"""

from __future__ import annotations

import numpy as np
import torch

from autointerp.config import RecordSpec
from autointerp.record.recorder import record_activations
from autointerp.record.records import ActivationRecord, NeuronRecord
from autointerp.score.scoring import score_neuron
from autointerp.subject import load_model
from autointerp.units.mlp import MLPNeurons
from tests.conftest import WORDS, save_tiny_model
from tests.test_recording import load_excerpts

PLANTED = 5
CONCEPT = {"cat", "dog"}
WRONG = {"sea", "ship"}


def plant(model_dir) -> None:
    """Layer 0's neuron 5 reads only the current token: it fires on CONCEPT and nowhere else."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    block = model.transformer.h[0]
    width = model.config.n_embd
    direction = torch.zeros(width)
    direction[0], direction[1] = 1.0, -1.0  # zero mean, so LayerNorm keeps it
    with torch.no_grad():
        model.transformer.wpe.weight.zero_()  # no position signal
        for p in block.attn.parameters():
            p.zero_()  # no attention: the residual at layer 0's MLP is the token embedding
        vocab = {w: i + 1 for i, w in enumerate(WORDS)}
        for word, index in vocab.items():
            model.transformer.wte.weight[index, :2] = 0.0
            if word in CONCEPT:
                model.transformer.wte.weight[index] = direction * 3 + 0.01 * torch.randn(width)
        block.mlp.c_fc.weight[:, PLANTED] = direction * 4
        block.mlp.c_fc.bias[PLANTED] = -4.0
    model.save_pretrained(model_dir)


def rule(tokens, words) -> list[float]:
    return [10.0 if t.strip() in words else 0.0 for t in tokens]


def test_a_planted_neuron_is_found_and_only_its_true_rule_scores_high(tmp_path):
    model_dir = save_tiny_model("gpt2", tmp_path / "planted")
    plant(model_dir)
    source, ids, tokens = load_excerpts(model_dir, tmp_path, n_excerpts=40)
    model = load_model(source)
    spec = RecordSpec(top=20, random=20, random_pool=30, quantile_bands=3, per_band=2, batch_size=8)
    rec = record_activations(model, MLPNeurons(), [0], [(ids, tokens)], spec, 0, 128, len(ids),
                             log=lambda _: None)[0]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    words = {i: tokenizer.decode([i]) for i in np.unique(tokens)}

    def records(kind_ids, kind_acts):
        return [ActivationRecord(tuple(words[t] for t in tokens[e]), tuple(kind_acts[j]), int(e))
                for j, e in enumerate(kind_ids)]

    neuron = NeuronRecord("m", "r", 0, PLANTED, records(rec.top_ids[PLANTED], rec.top_acts[PLANTED]),
                          records(rec.random_ids[PLANTED], rec.random_acts[PLANTED]))
    # the neuron fires where the concept is and only there
    top = neuron.top[0]
    peak = int(np.argmax(top.activations))
    assert top.tokens[peak].strip() in CONCEPT and top.activations[peak] > 1.0
    off = [a for r in neuron.random for t, a in zip(r.tokens, r.activations) if t.strip() not in CONCEPT]
    assert max(off) < 0.01

    def scores(words_rule):
        top_test, random_test = neuron.test_top(), neuron.test_random()
        return score_neuron([r.activations for r in top_test], [rule(r.tokens, words_rule) for r in top_test],
                            [r.activations for r in random_test], [rule(r.tokens, words_rule) for r in random_test])

    right, wrong = scores(CONCEPT), scores(WRONG)
    assert right.score_top_and_random > 0.95
    assert abs(wrong.score_top_and_random) < 0.2
    assert right.score_top_and_random - wrong.score_top_and_random > 0.8
