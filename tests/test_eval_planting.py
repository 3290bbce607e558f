"""The weight edit behind the planted-neuron evaluation (eval/planting.py), on the tiny Llama model.

After planting a concept (a set of token ids) into neuron n of layer L and a save/reload round trip, an
independent forward pass computed by hand from the weights shows: n fires on the concept tokens of text the
probe never saw and (almost) nowhere else, every other neuron of layers <= L is unchanged, and recording
puts concept tokens at the peaks of n's top excerpts.

Planting reads the concept off the layer's input with a linear probe. A trained model's residual carries such
directions (on SmolLM2 the eval measures it), but the tiny model's is 32 random dimensions that attention
mixes, where no direction tells a token set apart. So the fixture first gives the concept tokens what
training gives a real model, a shared embedding direction, as test_planted.py does for GPT-2.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autointerp.errors import UnsupportedArchitectureError
from autointerp.subject import load_model, load_tokenizer, resolve_source
from eval.planting import mlp_inputs, neuron_activations, plant, precision_recall
from tests.reference import manual_neurons
from tests.test_recording import load_excerpts, run_recording

LAYER, NEURON = 1, 7
CONCEPT = ("sea", "ship", "sails", "river", "water")
FIT = 30  # excerpts the probe is fitted on; the other 10 are held out


def concept_mask(tokens: np.ndarray, concept_ids: list[int]) -> torch.Tensor:
    return torch.from_numpy(np.isin(tokens, concept_ids).reshape(-1))


def with_concept_direction(model_dir, target, concept: tuple[str, ...]) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    vocab = load_tokenizer(resolve_source(str(model_dir))).get_vocab()
    direction = torch.nn.functional.normalize(torch.randn(model.config.hidden_size,
                                                          generator=torch.Generator().manual_seed(0)), dim=0)
    with torch.no_grad():  # the embeddings' norm is ~0.85: the concept direction dominates its tokens
        model.model.embed_tokens.weight[[vocab[w] for w in concept]] += 3.0 * direction
    model.save_pretrained(target)
    load_tokenizer(resolve_source(str(model_dir))).save_pretrained(target)


@pytest.fixture(scope="module")
def planted(tiny_llama, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("planting")
    with_concept_direction(tiny_llama, tmp_path / "subject", CONCEPT)
    source, ids, tokens = load_excerpts(tmp_path / "subject", tmp_path, n_excerpts=40)
    vocab = load_tokenizer(source).get_vocab()
    concept_ids = [vocab[w] for w in CONCEPT]
    model = load_model(source)
    before = [manual_neurons(model, row.tolist()) for row in tokens[FIT:]]
    x = mlp_inputs(model, LAYER, [tokens[i:min(i + 8, FIT)] for i in range(0, FIT, 8)])
    result = plant(model, LAYER, NEURON, x, concept_mask(tokens[:FIT], concept_ids))
    model.save_pretrained(tmp_path / "planted")
    load_tokenizer(source).save_pretrained(tmp_path / "planted")
    reloaded = load_model(resolve_source(str(tmp_path / "planted")))
    return reloaded, result, ids, tokens, concept_ids, before


def test_the_planted_neuron_fires_on_held_out_concept_tokens_and_nothing_else_changes(planted):
    model, result, _ids, tokens, concept_ids, before = planted
    held = tokens[FIT:]
    after = [manual_neurons(model, row.tolist()) for row in held]  # [excerpt][layer] -> (T, N)
    activation = torch.cat([a[LAYER][:, NEURON] for a in after])
    is_concept = concept_mask(held, concept_ids)
    assert 0.05 < is_concept.float().mean() < 0.2  # the held-out text has both kinds of token

    precision, recall = precision_recall(activation > result.threshold, is_concept)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    assert activation[is_concept].median() > 5 * result.threshold
    assert activation[~is_concept].abs().median() < 0.1 * result.threshold
    assert (result.fit_precision, result.fit_recall) >= (0.9, 0.9)

    others = [n for n in range(model.config.intermediate_size) if n != NEURON]
    for b, a in zip(before, after):
        for layer in range(LAYER + 1):
            kept = others if layer == LAYER else slice(None)
            torch.testing.assert_close(a[layer][:, kept], b[layer][:, kept], atol=1e-5, rtol=0)
        assert not torch.allclose(a[LAYER][:, NEURON], b[LAYER][:, NEURON])
    # the helper the eval script measures with reads the same numbers as the hand-made forward pass
    torch.testing.assert_close(neuron_activations(model, LAYER, [NEURON], [held])[:, 0], activation,
                               atol=1e-4, rtol=1e-4)


def test_recording_the_planted_model_finds_the_concept_at_the_top_excerpts_peaks(planted):
    model, result, ids, tokens, concept_ids, _before = planted
    rec = run_recording(model, ids, tokens, [LAYER])[LAYER]
    for excerpt, acts in zip(rec.top_ids[NEURON], rec.top_acts[NEURON]):
        row = np.flatnonzero(ids == excerpt)[0]
        assert tokens[row][int(np.argmax(acts))] in concept_ids
    # the written rows are exactly what the planting returned, and the neuron writes nothing back
    mlp = model.model.layers[LAYER].mlp
    torch.testing.assert_close(mlp.gate_proj.weight[NEURON], result.gate)
    torch.testing.assert_close(mlp.up_proj.weight[NEURON], result.up)
    assert mlp.down_proj.weight[:, NEURON].abs().sum() == 0


def test_planting_refuses_a_model_without_a_gated_mlp(tiny_gpt2):
    model = load_model(resolve_source(str(tiny_gpt2)))
    with pytest.raises(UnsupportedArchitectureError, match="gated"):
        plant(model, 0, 0, torch.zeros(4, 32), torch.tensor([True, False, False, False]))


def test_the_exact_rule_ceiling_is_scored_on_the_test_excerpts():
    from autointerp.record.records import ActivationRecord, NeuronRecord
    from eval.planted import CONCEPTS, rule_applied_exactly

    months = CONCEPTS["months"]
    words = [" In", " March", " the", " river", " rose", " in", " May", "."]

    def record(i: int, shift: int) -> ActivationRecord:
        tokens = tuple(words[(j + shift) % len(words)] for j in range(len(words)))
        return ActivationRecord(tokens, tuple(5.0 if label else 0.0 for label in months.labels(tokens)), i)

    neuron = NeuronRecord("m", "r", 0, 0, [record(i, i) for i in range(8)], [record(100 + i, i) for i in range(6)])
    exact = rule_applied_exactly(months, neuron)
    assert exact.score_top_and_random == pytest.approx(1.0) and exact.score_random_only == pytest.approx(1.0)
    # Another concept's rule on the same excerpts: the river tokens, never a month, correlate negatively.
    assert rule_applied_exactly(CONCEPTS["water"], neuron).score_top_and_random < 0


def test_the_two_pattern_concepts_label_by_form_and_context_not_by_word():
    from eval.planted import CONCEPTS

    tokens = ["The", " team", " from", " Paris", ",", " led", " by", " Anna", ".", " Then", " came", " rain", ",",
              " then", " snow"]
    capitalized = CONCEPTS["capitalized"].labels(tokens)
    assert [t for t, hit in zip(tokens, capitalized) if hit] == [" Paris", " Anna"]  # "The", " Then": sentence starts
    after_comma = CONCEPTS["after_comma"].labels(tokens)
    assert [t for t, hit in zip(tokens, after_comma) if hit] == [" led", " then"]
    # the same word is in the concept in one place and not in another: no word list can say it
    assert CONCEPTS["after_comma"].labels([" then", ",", " then"]) == [False, False, True]
    assert CONCEPTS["weekdays"].labels([" Monday", " monday"]) == [True, False]  # case-sensitive names
    assert CONCEPTS["number_words"].labels([" Two", " hundred", " twofold"]) == [True, True, False]
