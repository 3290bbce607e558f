"""`autointerp status`: recorded, explained, simulated and scored neurons per layer, the mean score, stale
partitions after the model changed, and the last run of each stage."""

from __future__ import annotations

import json

import pandas as pd

from autointerp.store import Store
from orchestration.cli import main
from tests.conftest import save_tiny_model


def status(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["status", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_reports_each_stage_and_staleness(project, tiny_gpt2, capsys):
    assert main(["run", "--model", "tiny-gpt2", "--layers", "0-1", "--until", "record"]) == 0
    assert main(["run", "--model", "tiny-gpt2", "--layers", "1", "--from", "explain"]) == 0
    found = status(capsys, "--model", "tiny-gpt2")
    [model] = found["models"]
    mean = Store.from_home().query("SELECT avg(score_top_and_random) AS m FROM scores").m[0]
    assert [(r["layer"], r["recorded"], r["explained"], r["simulated"], r["scored"]) for r in model["layers"]] == [
        (0, 128, 0, 0, 0), (1, 128, 2, 2, 2)]
    assert model["layers"][1]["mean_score"] == round(float(mean), 4) and model["layers"][0]["mean_score"] is None
    judged = Store.from_home().query("SELECT split_part(scorer, ':', 1) AS kind, avg(auroc) AS m FROM judge_scores "
                                     "GROUP BY ALL")
    for row in judged.itertuples():  # the judges' mean AUROC of the layer (None: undefined), beside the simulation's
        assert model["layers"][1][f"mean_{row.kind}"] == (None if pd.isna(row.m) else round(float(row.m), 4))
    assert set(judged.kind) == {"detection", "fuzzing"} and model["layers"][0]["mean_detection"] is None
    intruded = Store.from_home().query("SELECT avg(accuracy) AS m FROM intruder_scores WHERE layer = 1").m[0]
    assert model["layers"][1]["mean_intruder"] == (None if pd.isna(intruded) else round(float(intruded), 4))
    assert model["layers"][0]["mean_intruder"] is None
    # the workbench's two other parts: explanations in the search index, output sides computed (layers explained)
    counted = Store.from_home().query(
        "SELECT l.layer, (SELECT count(DISTINCT neuron) FROM explanation_embeddings e WHERE e.layer = l.layer) AS s, "
        "(SELECT count(*) FROM unit_logits u WHERE u.layer = l.layer) AS w FROM (VALUES (0), (1)) l(layer) ORDER BY 1")
    assert [(r["searchable"], r["writes"]) for r in model["layers"]] == list(zip(counted.s, counted.w))
    assert model["layers"][1]["searchable"] == 2 and model["layers"][1]["writes"] == 128
    assert not model["stale"] and model["stale_layers"] == []
    runs = {r["job"]: r for r in found["last_runs"]}
    assert runs["record_job"]["status"] == "SUCCESS" and runs["explain_job"]["status"] == "SUCCESS"
    assert runs["explain_job"]["command"] == "autointerp run --model tiny-gpt2 --layers 1 --from explain"
    assert runs["view_job"]["status"] == "SUCCESS"

    save_tiny_model("gpt2", tiny_gpt2, seed=7)  # a new checkpoint in place: everything recorded is stale
    try:
        [model] = status(capsys, "--model", "tiny-gpt2")["models"]
        assert model["stale"] and model["current_revision"] != model["latest_revision"]
        assert main(["run", "--model", "tiny-gpt2", "--layers", "0", "--until", "record"]) == 0
        [model] = status(capsys, "--model", "tiny-gpt2")["models"]
        assert not model["stale"] and model["stale_layers"] == [1]  # layer 1 is only in the old revision
        assert [r["layer"] for r in model["layers"]] == [0] and len(model["revisions"]) == 2
        assert main(["status"]) == 0 and "stale: layers [1] recorded for an older revision" in capsys.readouterr().out
    finally:
        save_tiny_model("gpt2", tiny_gpt2, seed=0)  # the session's fixture, as it was
