"""The intruder score (autointerp/score/intruder.py): the trials it builds, the numbers it derives from the judge's
answers (checked against a count by hand), its stage, table and quality suite, and a real model's answers read
from one forward pass. The scripted judge names the excerpt whose marks are rarest (tests/scripted_llm.py)."""

from __future__ import annotations

import math

import pytest
import torch

from autointerp.config import ScoringSpec
from autointerp.errors import ValidationError
from autointerp.llm import LoadedLLMs
from autointerp.record.records import NeuronRecord
from autointerp.score.intruder import (EmbeddingIntruder, IntruderScorer, activating, build_intruder, question,
                                       trials)
from autointerp.store import Replacement, Store
from autointerp.store.schema import table
from tests.scripted_llm import ScriptedLLM
from tests.test_scorers import QUIET, WORDS, record, scripted_config

OPTIONS = ScoringSpec()


def cat_unit(n_top: int = 20, neuron: int = 0) -> NeuronRecord:
    """Fires on " cat" (index 1) with falling strength; its random records are silent."""
    top = [record({1}, i, 10.0 - i * 0.4) for i in range(n_top)]
    return NeuronRecord("m", "r", 0, neuron, top, [record(set(), 100 + i, words=QUIET) for i in range(6)])


def scattered_unit(neuron: int = 1) -> NeuronRecord:
    """Fires on a different word in every excerpt: nothing shared for a judge to find."""
    top = [record({i % len(WORDS)}, i, 10.0 - i * 0.4) for i in range(20)]
    return NeuronRecord("m", "r", 0, neuron, top, [record(set(), 100 + i, words=QUIET) for i in range(6)])


def test_trials_show_neighbours_in_strength_with_one_silent_intruder_marked_as_often():
    unit = cat_unit()
    planned = trials(unit, OPTIONS, seed=0)
    assert len(planned) == OPTIONS.intruder_trials
    ranked = [r.excerpt_id for r in activating(unit.top, OPTIONS)]
    assert ranked == list(range(20))  # all 20 reach 0.2 of the max, strongest first
    starts = []
    for t in planned:
        assert len(t.texts) == len(t.excerpt_ids) == OPTIONS.intruder_shown + 1
        shown = [i for k, i in enumerate(t.excerpt_ids) if k != t.intruder]
        # consecutive in strength: the group is a run of the ranking
        start = ranked.index(shown[0])
        assert shown == ranked[start:start + OPTIONS.intruder_shown]
        starts.append(start)
        assert t.excerpt_ids[t.intruder] >= 100  # a silent (random) record
        for k, text in enumerate(t.texts):
            assert text.count("<<") == 1  # one firing token per activating excerpt, so one mark on the intruder
            if k != t.intruder:
                assert "<<cat>>" in text
        assert "<<cat>>" not in t.texts[t.intruder]
        # the unmarked windows the embedding judge reads: the same text, in the same order, without the marks
        assert list(t.plain) == [x.replace("<<", "").replace(">>", "") for x in t.texts]
    assert starts[0] == 0 and starts[-1] == 20 - OPTIONS.intruder_shown  # from the strongest to the weakest
    assert trials(unit, OPTIONS, seed=0) == planned  # seeded: the same trials every run (so the cache serves them)
    assert len({t.intruder for t in planned}) > 1  # the intruder's place varies


def test_a_unit_with_too_few_activating_or_no_silent_excerpts_gets_no_trial():
    few = NeuronRecord("m", "r", 0, 0, [record({1}, i) for i in range(3)], [record(set(), 9, words=QUIET)])
    loud = NeuronRecord("m", "r", 0, 0, [record({1}, i) for i in range(8)], [])
    assert trials(few, OPTIONS) == [] and trials(loud, OPTIONS) == []


def test_accuracy_and_the_intruders_probability_follow_the_judges_answers(tmp_path):
    config = scripted_config(tmp_path, intruder_judge="llm")
    scorer = build_intruder(config, Store(tmp_path / "s.duckdb"), LoadedLLMs())
    assert isinstance(scorer, IntruderScorer) and scorer.name == "intruder:scripted:rule"
    ScriptedLLM.calls.clear()
    coherent, scattered, empty = scorer.score([cat_unit(), scattered_unit(),
                                               NeuronRecord("m", "r", 0, 2, [], [])])
    assert coherent.accuracy == 1.0 and coherent.picks == coherent.intruders
    # by hand: the judge gives the named excerpt -0.1 and the 4 others -3
    p_named = math.exp(-0.1) / (math.exp(-0.1) + 4 * math.exp(-3.0))
    assert coherent.p_intruder == pytest.approx(p_named)
    # nothing is shared in the scattered unit's trials, so marks are about equally rare: the judge misses some
    hits = sum(p == i for p, i in zip(scattered.picks, scattered.intruders))
    assert scattered.accuracy == hits / len(scattered.picks) < 1.0
    assert scattered.p_intruder == pytest.approx(sum(p_named if p == i else (1 - p_named) / 4
                                                     for p, i in zip(scattered.picks, scattered.intruders))
                                                 / len(scattered.picks))
    assert empty.accuracy is None and empty.reason and empty.picks == []
    asked = len(ScriptedLLM.calls)
    assert asked == 2 * OPTIONS.intruder_trials
    scorer.score([cat_unit()])
    assert len(ScriptedLLM.calls) == asked  # cached


def test_the_stage_writes_a_checked_partition_and_a_bad_row_never_lands(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    config = scripted_config(tmp_path, intruder_judge="llm")
    units = [cat_unit(neuron=0), scattered_unit(neuron=1)]
    scorer = build_intruder(config, store, LoadedLLMs())
    rows = []
    for unit, scored in zip(units, scorer.score(units)):
        rows.append({"model": "m", "revision": "r", "layer": 0, "neuron": unit.neuron, "scorer": scorer.name,
                     "accuracy": scored.accuracy, "p_intruder": scored.p_intruder, "n_trials": len(scored.picks),
                     "n_shown": 5, "intruders": scored.intruders, "picks": scored.picks,
                     "excerpt_ids": [i for ids in scored.excerpt_ids for i in ids], "reason": None})
    where = {"model": "m", "revision": "r", "layer": [0], "scorer": scorer.name}
    store.replace([Replacement("intruder_scores", where, table("intruder_scores", rows=rows))])
    stored = store.query("SELECT neuron, accuracy FROM intruder_scores ORDER BY neuron")
    assert list(stored.accuracy) == [rows[0]["accuracy"], rows[1]["accuracy"]]
    # an accuracy that the stored picks do not give is refused, and the partition stays as it was
    lying = [{**rows[0], "accuracy": 0.0}, rows[1]]
    with pytest.raises(ValidationError, match="accuracy_counted"):
        store.replace([Replacement("intruder_scores", where, table("intruder_scores", rows=lying))])
    out_of_range = [{**rows[0], "picks": [7] + rows[0]["picks"][1:]}, rows[1]]
    with pytest.raises(ValidationError, match="in_range"):
        store.replace([Replacement("intruder_scores", where, table("intruder_scores", rows=out_of_range))])
    assert list(store.query("SELECT accuracy FROM intruder_scores ORDER BY neuron").accuracy) == list(stored.accuracy)


def test_the_embedding_judge_names_the_excerpt_least_like_the_others_as_computed_by_hand(tmp_path):
    import numpy as np

    from autointerp.simulate.embedding import Encoder

    config = scripted_config(tmp_path)  # the default judge: embedding, no LLM
    judge = build_intruder(config, Store(tmp_path / "s.duckdb"), LoadedLLMs())
    assert isinstance(judge, EmbeddingIntruder) and judge.name == f"intruder:embedding:{config.search.encoder}"
    ScriptedLLM.calls.clear()
    units = [cat_unit(), scattered_unit()]
    results = judge.score(units)
    assert ScriptedLLM.calls == [] and all(r.p_intruder is None for r in results)
    encoder = Encoder.get(config.search.encoder, config.base_dir)
    for unit, result in zip(units, results):
        planned = trials(unit, config.scoring, config.seed)
        for t, pick in zip(planned, result.picks):
            # by hand: embed the unmarked texts, mean cosine to the other four, the lowest is named
            v = encoder.embed([x.replace("<<", "").replace(">>", "") for x in t.texts])
            v = v / np.linalg.norm(v, axis=1, keepdims=True)
            mean_to_others = [(float(v[i] @ v.sum(0)) - 1) / 4 for i in range(5)]
            assert pick == int(np.argmin(mean_to_others))
    # the cat unit's activating excerpts are one sentence, its intruder another: named every time
    assert results[0].accuracy == 1.0


@pytest.mark.slow
def test_a_real_model_names_an_excerpt_by_one_prefill_equal_to_a_plain_forward():
    from autointerp.llm.base import answer_token_ids
    from autointerp.llm.local import LocalLLM, LocalOptions
    from tests.test_llm_local import SMOLLM2

    llm = LocalLLM(LocalOptions(model=SMOLLM2, dtype="float32", batch_size=2))
    [trial] = trials(cat_unit(), ScoringSpec(intruder_trials=1))
    request = {"messages": IntruderScorer.messages(trial.texts), "answers": ["1", "2", "3", "4", "5"]}
    assert question(trial.texts) in request["messages"][-1]["content"]
    [answer] = llm.judge([request])
    ids = answer_token_ids(llm.tokenizer, request["answers"])
    assert all(len(v) >= 1 for v in ids.values())
    prompt = llm._prompt_ids(request["messages"])
    with torch.inference_mode():
        logprobs = torch.log_softmax(llm.lm(torch.tensor([prompt])).logits[0, -1].float(), -1)
    for number in request["answers"]:
        expected = torch.logsumexp(logprobs[ids[number]], 0).item()
        assert answer.response[number] == pytest.approx(max(expected, -30.0), abs=1e-3)
