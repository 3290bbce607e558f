"""Scorers as a role: the judging scorers (detection, fuzzing) against independent computations, the excerpt
sets they build, the judge stage's table and its quality suite, and the stable entry point `score_explanation`.

The scripted judge (tests/scripted_llm.py) is a word-list judge: enough to check that every number the scorers
report follows from the judge's answers. What a real model answers is checked in tests/test_llm_local.py."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pandas as pd
import pytest
import yaml

from autointerp.config import LLMChoice, load_config
from autointerp.errors import ConfigError, ValidationError
from autointerp.llm import LoadedLLMs
from autointerp.record.records import ActivationRecord, NeuronRecord
from autointerp.score import REGISTRY, ScoringItem, build_scorer, item_of, score_explanation, score_items
from autointerp.score.judging import auroc, balanced_accuracy, classify, detection_set, fuzzing_set
from autointerp.store import Replacement, Store
from autointerp.store.schema import table
from tests.scripted_llm import ScriptedLLM, ScriptedOptions

WORDS = "the cat sat on a mat by the sea and the dog ran off".split()
QUIET = "a bird flew over the hill and rain fell on the town at night".split()  # no "cat"


def record(active: set[int], excerpt_id: int, value: float = 5.0, words: list[str] = WORDS) -> ActivationRecord:
    return ActivationRecord(tuple(f" {w}" for w in words), tuple(value if i in active else 0.0
                                                                for i in range(len(words))), excerpt_id)


def scripted_config(tmp_path, **scoring):
    path = tmp_path / "autointerp.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "m", "source": "x"}],
                                    "scoring": {"llm": {"backend": "scripted"}, **scoring}}))
    return load_config(path)


def brute_auroc(labels, scores):
    """Every (positive, negative) pair, counted one by one."""
    pairs = [(p, n) for (p, yp), (n, yn) in itertools.product(zip(scores, labels), repeat=2) if yp and not yn]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)


def test_auroc_and_balanced_accuracy_match_brute_force():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 12)
        labels = [rng.random() < 0.5 for _ in range(n)]
        labels[0], labels[1] = True, False
        scores = [rng.choice([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0]) for _ in range(n)]  # ties on purpose
        assert auroc(labels, scores) == pytest.approx(brute_auroc(labels, scores))
        tpr = sum(s > 0 for s, y in zip(scores, labels) if y) / sum(labels)
        tnr = sum(s <= 0 for s, y in zip(scores, labels) if not y) / (n - sum(labels))
        assert balanced_accuracy(labels, scores) == pytest.approx((tpr + tnr) / 2)
    assert auroc([True, True], [1.0, 2.0]) is None and balanced_accuracy([False], [0.0]) is None


def test_detection_uses_activating_and_silent_excerpts_and_leaves_the_ambiguous_out():
    # max 5 overall: 5.0 and 1.5 are activating (>= 0.2 x 5), 0.4 silent (< 0.1 x 5), 0.75 neither
    records = [record({1}, 0), record({1}, 1, 1.5), record({1}, 2, 0.75), record(set(), 3), record({1}, 4, 0.4)]
    options = load_config_defaults()
    active, silent = classify(records, options)
    assert (active, silent) == ([0, 1], [3, 4])
    judged = detection_set(records, options)
    assert [(j.excerpt_id, j.label) for j in judged] == [(0, True), (1, True), (3, False), (4, False)]
    assert judged[0].text == " ".join(WORDS) and "<<" not in judged[0].text


def test_fuzzing_marks_the_firing_tokens_and_as_many_wrong_ones():
    records = [record({1, 8}, 0), record({4}, 1), record({2, 3}, 2)]
    judged = fuzzing_set(records, load_config_defaults(), seed=3)
    assert [(j.excerpt_id, j.label) for j in judged] == [(0, True), (0, False), (1, True), (1, False),
                                                         (2, True), (2, False)]
    right, wrong = judged[0].text, judged[1].text
    assert right.count("<<") == 2 and "<<cat>>" in right and "<<sea>>" in right
    # the first excerpt's decoy marks the token before each real mark: "the cat" -> "the", "the sea" -> "the"
    assert wrong.count("<<") == 2 and "<<the>> cat" in wrong and "<<the>> sea" in wrong
    # the second's decoy: as many marks, never on a firing token
    assert judged[3].text.count("<<") == 1 and "<<a>>" not in judged[3].text
    assert judged[4].text.count("<<") == 2 and judged[5].text.count("<<") == 2


def load_config_defaults():
    from autointerp.config import ScoringSpec

    return ScoringSpec()


def neuron() -> NeuronRecord:
    """Fires on " cat" (index 1) in its top records; its random records are silent."""
    top = [record({1}, i, 5.0 - i * 0.1) for i in range(8)]
    random_records = [record(set(), 100 + i, words=QUIET) for i in range(6)]
    return NeuronRecord("m", "r", 0, 0, top, random_records)


@pytest.mark.parametrize("kind", ["detection", "fuzzing"])
def test_a_judge_scores_the_true_word_above_a_wrong_one_and_reports_what_it_saw(tmp_path, kind):
    config = scripted_config(tmp_path)
    scorer = build_scorer(kind, config, Store(tmp_path / "s.duckdb"), LoadedLLMs())
    assert scorer.name == f"{kind}:scripted:rule"
    ScriptedLLM.calls.clear()
    right, wrong = score_items(scorer, [item_of(scorer, 'the word "cat"', neuron(), "test"),
                                        item_of(scorer, 'the word "bird"', neuron(), "test")])
    assert right.value == 1.0 and wrong.value <= 0.5
    d = right.details
    # test split: top records 3 and 7, random records 102 and 105 (record i of 3 random splits: i mod 3 == 2)
    if kind == "detection":
        assert d["excerpt_ids"] == [3, 7, 102, 105] and d["labels"] == [True, True, False, False]
    else:
        assert d["excerpt_ids"] == [3, 3, 7, 7] and d["labels"] == [True, False, True, False]
    assert d["n_positive"] == 2 and d["n_negative"] == 2 and d["balanced_accuracy"] == 1.0
    assert [abs(x) for x in d["log_odds"]] == pytest.approx([2.9] * 4)
    # one request per distinct text an explanation is judged on (identical excerpts are asked once)
    judged = (detection_set if kind == "detection" else fuzzing_set)([r for _, r in neuron().judged("test")],
                                                                      config.scoring)
    asked = 2 * len({j.text for j in judged})
    assert ScriptedLLM.calls == ["judge"] * asked and asked < 2 * len(judged)
    score_items(scorer, [item_of(scorer, 'the word "cat"', neuron(), "test")])
    assert ScriptedLLM.calls == ["judge"] * asked  # cached: asked once


def test_a_set_without_silent_excerpts_gets_no_detection_score_and_says_why(tmp_path):
    config = scripted_config(tmp_path)
    scorer = build_scorer("detection", config, Store(tmp_path / "s.duckdb"), LoadedLLMs())
    all_active = ScoringItem('the word "cat"', tuple(("top", record({1}, i)) for i in range(3)))
    none_active = ScoringItem('the word "cat"', tuple(("top", record(set(), i)) for i in range(3)))
    got, nothing = score_items(scorer, [all_active, none_active])
    assert got.value is None and got.reason == "no silent excerpts"
    assert nothing.value is None and nothing.reason == "no activating excerpts"


def test_score_explanation_is_the_configured_ranking_on_plain_token_lists(tmp_path):
    """The stable entry point: (tokens, activations) pairs, silent excerpts among them or not."""
    config = scripted_config(tmp_path)
    excerpts = [([f" {w}" for w in WORDS], [5.0 if w == "cat" else 0.0 for w in WORDS]) for _ in range(3)]
    excerpts += [([f" {w}" for w in QUIET], [0.0] * len(QUIET))]
    store = Store(tmp_path / "s.duckdb")
    true = score_explanation(config, 'the word "cat"', excerpts, store)
    false = score_explanation(config, 'the word "dog"', excerpts, store)
    assert true == 1.0  # mean of detection (1.0) and fuzzing (1.0) AUROC
    # "dog" is in every activating excerpt and no silent one: detection cannot tell, fuzzing can (marks on "cat")
    assert false == pytest.approx((1.0 + 0.5) / 2)
    only_active = score_explanation(config, 'the word "cat"', excerpts[:3], store)
    assert only_active == 1.0  # detection undefined without silent excerpts: fuzzing alone


def test_the_judge_is_the_explainers_llm_unless_named_and_bad_scoring_keys_are_refused(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "m", "source": "x"}],
                                    "explainer": {"kind": "llm", "llm": {"backend": "scripted", "model": "e"}}}))
    assert load_config(path).scoring.llm == LLMChoice("scripted", ScriptedOptions(model="e"))
    for scoring, key in (({"judges": ["simulation"]}, "judges"), ({"judges": ["vibes"]}, "judges[0]"),
                         ({"judges": ["detection"], "rank_by": ["fuzzing"]}, "rank_by[0]"),
                         ({"rank_by": []}, "rank_by"), ({"window": -1}, "window"),
                         ({"silent_below": 0.5, "active_from": 0.2}, "silent_below")):
        path.write_text(yaml.safe_dump({"models": [{"name": "m", "source": "x"}], "scoring": scoring}))
        with pytest.raises(ConfigError, match=f"scoring.*{key.split('[')[0]}"):
            load_config(path)
    assert set(REGISTRY.names()) >= {"simulation", "detection", "fuzzing"}


def test_judge_scores_that_do_not_add_up_never_land(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    row = {"model": "m", "revision": "r", "layer": 0, "neuron": 1, "explainer": "e", "scorer": "detection:x",
           "sample": 0, "explanation": "cats", "auroc": 0.75, "balanced_accuracy": 0.5, "n_positive": 2,
           "n_negative": 2, "excerpt_ids": [1, 2, 3, 4], "labels": [True, True, False, False],
           "log_odds": [1.0, 0.5, -1.0, 2.0], "reason": None}
    where = {"model": "m", "revision": "r", "layer": [0], "explainer": "e", "scorer": "detection:x"}
    store.replace([Replacement("judge_scores", where, table("judge_scores", rows=[row]))])
    for bad in ({"auroc": 1.5}, {"n_positive": 3}, {"log_odds": [1.0, float("nan"), 0.0, 0.0]},
                {"labels": [True, True, False]}, {"auroc": None}):
        with pytest.raises(ValidationError, match="judge_scores"):
            store.replace([Replacement("judge_scores", where, table("judge_scores", rows=[{**row, **bad}]))])
    assert store.query("SELECT auroc FROM judge_scores").auroc.tolist() == [0.75]  # the good row stayed


def test_best_of_n_chooses_by_the_configured_judges(tmp_path):
    from autointerp.explain import Explanation
    from autointerp.explain.best_of_n import choose
    from autointerp.score import build_rankers

    config = scripted_config(tmp_path, rank_by=["detection"])
    rankers = build_rankers(config, Store(tmp_path / "s.duckdb"), LoadedLLMs())
    candidates = [Explanation(0, 0, 0, 'the word "bird"', ""), Explanation(0, 0, 1, 'the word "cat"', "")]
    chosen = choose(candidates, {(0, 0): neuron()}, rankers)
    assert [c.chosen for c in chosen] == [False, True]
    assert chosen[1].valid_score == 1.0 and chosen[0].valid_score == 0.0  # "bird": only in the silent excerpts
    assert dataclasses.asdict(chosen[1])["explanation"] == 'the word "cat"'


def test_an_answer_without_logprobs_is_read_from_its_first_word():
    from autointerp.llm.base import LOGPROB_FLOOR, answers_from_text

    assert answers_from_text(" Yes, it does.", ["yes", "no"]) == {"yes": 0.0, "no": LOGPROB_FLOOR}
    assert answers_from_text('"no"', ["yes", "no"]) == {"yes": LOGPROB_FLOOR, "no": 0.0}
    assert answers_from_text("Maybe.", ["yes", "no"]) == {"yes": LOGPROB_FLOOR, "no": LOGPROB_FLOOR}


def test_the_run_summary_has_one_row_per_explanation_with_each_judges_auroc(tmp_path):
    """Regression: a wide pivot over (layer, neuron, explainer, sample) once listed every combination of them."""
    from orchestration.cli.reports import explanation_table

    store = Store(tmp_path / "s.duckdb")
    key = {"model": "m", "revision": "r"}
    store.replace([Replacement("models", key, table("models", rows=[{**key, "n_layers": 2, "n_neurons": 9}]))],
                  checked=False)
    scores, judged = [], []
    for layer, neuron, sim, det in ((0, 1, 0.5, 0.75), (0, 2, 0.1, None), (1, 1, 0.3, 0.25), (1, 5, -0.2, 1.0)):
        scores.append({**key, "layer": layer, "neuron": neuron, "explainer": "e", "simulator": "s", "sample": 0,
                       "explanation": f"x{layer}{neuron}", "score_top_and_random": sim, "n_tokens": 10})
        judged.append({**key, "layer": layer, "neuron": neuron, "explainer": "e", "scorer": "detection:j",
                       "sample": 0, "auroc": det})
    store.replace([Replacement("scores", key, table("scores", rows=scores)),
                   Replacement("judge_scores", key, table("judge_scores", rows=judged))], checked=False)
    frame = explanation_table(store, "m", [0, 1], ("detection",)).sort_values(["layer", "neuron"])
    assert len(frame) == 4
    assert frame.detection.tolist()[:1] == [0.75] and pd.isna(frame.detection.tolist()[1])
    # the ranking is the judge's AUROC; where it is undefined, the simulation score
    assert frame["rank"].tolist() == [0.75, 0.1, 0.25, 1.0]
