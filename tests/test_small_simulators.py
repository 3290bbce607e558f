"""Explainers and simulators that run on a laptop: the top-token baseline, the marked format, token matching,
sentence-embedding similarity (the real all-MiniLM-L6-v2 from its package) and their combination; and the
honesty of best-of-n: the test split never reaches the explainer or the choice."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from autointerp.errors import ModelLoadError
from autointerp.explain import ExplainerInput
from autointerp.explain.formats.marked import Marked
from autointerp.prompting import active_tokens
from autointerp.explain.top_tokens import TopTokens, TopTokensOptions
from autointerp.record.records import ActivationRecord
from autointerp.simulate import SimulationJob
from autointerp.simulate.combined import Combined, CombinedOptions
from autointerp.simulate.embedding import Embedding, EmbeddingOptions, similarity_values
from autointerp.simulate.token_match import TokenMatch, TokenMatchOptions, quoted
from autointerp.stages import Stages
from autointerp.store import Store

R = ActivationRecord
TOKENS = (" In", " May", " the", " river", " flooded", " Attorney", "-", "General", ",", " and", " March", ".")


def test_quoted_strings_come_out_in_order_once():
    assert quoted('words like "and", "the" and "And", also “but”') == ["and", "the", "but"]
    assert quoted("no quotes here") == []


def test_token_match_grades_quoted_tokens_by_their_order_and_pieces_of_quoted_words():
    sim = TokenMatch(TokenMatchOptions(decay=0.5, piece=0.5))
    [values] = sim.simulate([SimulationJob('months like "May", "march" and the office "Attorney-General"', TOKENS)])
    expected = {" May": 10.0, " March": 5.0, " Attorney": 2.5 * 0.5, "General": 2.5 * 0.5}  # case ignored
    assert values == [expected.get(t, 0.0) for t in TOKENS]


def test_the_top_token_baseline_lists_the_most_active_train_tokens():
    records = (R((" a", " cat", " and", " dog"), (0.0, 4.0, 0.5, 3.0)),
               R((" the", " cat", " sat", "."), (0.0, 5.0, 0.1, 2.4)))
    # normalised by 5.0: cat 8 and 10, dog 6, "." 4 (below half), and 1
    assert [a.token for a in active_tokens(records, 5)] == ["cat", "dog"]
    [explained] = TopTokens(TopTokensOptions(count=3)).explain([ExplainerInput(2, 7, records)], seed=0)
    assert explained.explanation == 'words like "cat" and "dog"' and (explained.layer, explained.neuron) == (2, 7)


def test_the_marked_format_lists_active_tokens_and_marks_them_in_a_window_around_each_peak():
    tokens = tuple(f" w{i}" for i in range(40))
    acts = tuple(8.0 if i == 30 else (4.0 if i == 31 else 0.0) for i in range(40))
    messages = Marked().messages([R(tokens, acts)])
    user = messages[-2]["content"]
    assert messages[-1] == {"role": "assistant", "content": "Explanation of neuron 4 behavior: the main thing this "
                                                          "neuron does is find"}
    assert 'Most active tokens: "w30" (x1, 10), "w31" (x1, 5)' in user
    # 16 tokens before the peak, 6 after, the active ones marked
    assert "1. ... w14" in user and "<< w30>><< w31>> w32" in user and " w36..." in user and " w13" not in user
    assert Marked().parse(' the numbers "w30" and "w31".\nNeuron 5') == 'the numbers "w30" and "w31"'


@pytest.fixture(scope="module")
def minilm():
    return Embedding(EmbeddingOptions(floor=0.1, power=1.0), None)


def test_embedding_similarity_equals_cosines_computed_by_hand(minilm):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from autointerp.subject.embedded import embedded_encoder_path

    path = embedded_encoder_path("all-minilm-l6-v2")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def embed(text: str) -> np.ndarray:
        encoded = tokenizer([text], return_tensors="pt")
        with torch.inference_mode():
            states = model(**encoded).last_hidden_state[0]
        mean = states.mean(0).numpy()
        return mean / np.linalg.norm(mean)

    explanation = "names of months"
    [values] = minilm.simulate([SimulationJob(explanation, TOKENS)])
    cosines = np.array([embed(t.strip() or t) @ embed(explanation) for t in TOKENS])
    assert np.allclose(values, similarity_values(cosines, 0.1, 1.0), atol=1e-4)
    months = [values[TOKENS.index(t)] for t in (" May", " March")]
    others = [v for t, v in zip(TOKENS, values) if t not in (" May", " March")]
    assert min(months) > max(others)  # it follows the explanation: months, and only them, come out on top


def test_the_embedded_encoder_is_refused_when_its_files_are_not_the_pinned_ones(monkeypatch):
    from autointerp.subject import embedded

    pinned = embedded.EMBEDDED_ENCODERS["all-minilm-l6-v2"]
    tampered = dataclasses.replace(pinned, sha256={**pinned.sha256, "model.safetensors": "0" * 64})
    monkeypatch.setitem(embedded.EMBEDDED_ENCODERS, "all-minilm-l6-v2", tampered)
    with pytest.raises(ModelLoadError, match="model.safetensors has sha256 .* refusing to use it"):
        embedded.embedded_encoder_path("all-minilm-l6-v2")


def test_combined_adds_a_share_of_the_embedding_to_the_exact_matches(minilm):
    combined = Combined(CombinedOptions(weight=0.4, decay=0.5, piece=0.0, floor=0.1, power=1.0), None)
    job = SimulationJob('months such as "May"', TOKENS)
    [values] = combined.simulate([job])
    [match] = TokenMatch(TokenMatchOptions(0.5, 0.0)).simulate([job])
    [meant] = minilm.simulate([job])
    assert np.allclose(values, np.minimum(10, np.asarray(match) + 0.4 * np.asarray(meant)))
    assert values[TOKENS.index(" March")] > values[TOKENS.index(" river")]  # not quoted, but a month


def _with(text: str, **sections: dict) -> str:
    import yaml

    raw = yaml.safe_load(text)
    raw.update(sections)
    return yaml.safe_dump(raw)


def test_changing_a_neurons_test_records_cannot_change_its_chosen_explanation(project):
    """Best-of-n chooses on the valid split; the explainer sees the train split. Rewriting every test-split
    record of the layer leaves every chosen explanation as it was; rewriting the valid split does change
    choices (so this test can fail)."""
    project.write_text(_with(project.read_text(), explainer={"kind": "llm", "samples": 3, "llm": {
        "backend": "scripted", "vary": True}}, simulator={"kind": "token_match"}, neurons={"select": "first",
                                                                                          "count": 12}))
    from autointerp.config import load_config

    stages = Stages(load_config(), Store.from_home(), lambda _: None)
    stages.excerpts("tiny-gpt2")
    stages.record("tiny-gpt2", [1])
    first = stages.explain("tiny-gpt2", 1)
    chosen = {(r["neuron"], r["sample"]) for r in first.rows if r["chosen"]}
    assert len(chosen) == 12 and len({r["explanation"] for r in first.rows}) > 12  # candidates differ

    def rewrite(split_index: int) -> None:  # replace the activations of one split of every record list
        store = stages.store
        store.execute(f"""UPDATE activation_records SET activations = list_transform(activations, lambda x: 5 - x)
                          WHERE layer = 1 AND ((kind = 'top' AND rank % 4 = {split_index})
                                               OR (kind = 'random' AND rank % 3 = {split_index - 1}))""")
        store.execute("UPDATE activation_records SET max_activation = list_max(activations) WHERE layer = 1")

    rewrite(3)  # the test split: top rank % 4 == 3, random rank % 3 == 2
    again = stages.explain("tiny-gpt2", 1)
    assert {(r["neuron"], r["sample"]) for r in again.rows if r["chosen"]} == chosen
    assert [r["valid_score"] for r in again.rows] == [r["valid_score"] for r in first.rows]
    rewrite(2)  # the valid split: top rank % 4 == 2, random rank % 3 == 1
    changed = stages.explain("tiny-gpt2", 1)
    assert {(r["neuron"], r["sample"]) for r in changed.rows if r["chosen"]} != chosen
