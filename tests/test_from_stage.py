"""`autointerp run --from STAGE`: later stages only, on recorded and on imported models (no config entry
needed); another simulator adds its rows without explaining again. In-process, with the scripted LLM."""

from __future__ import annotations

import yaml

from autointerp.store import Store
from orchestration.cli import main
from tests.scripted_llm import ScriptedLLM


def rows(sql: str):
    return Store.from_home().query(sql)


def test_from_explain_then_another_simulator_adds_its_rows_without_explaining_again(project, capsys):
    assert main(["run", "--model", "tiny-gpt2", "--until", "record"]) == 0
    ScriptedLLM.calls.clear()
    # layer 1 is not in neurons.layers' default (all layers), but asked for explicitly: explained as asked
    assert main(["run", "--model", "tiny-gpt2", "--layers", "1", "--from", "explain"]) == 0
    explained = rows("SELECT layer, neuron, created_at FROM explanations ORDER BY neuron")
    assert explained.layer.tolist() == [1, 1] and explained.neuron.tolist() == [0, 1]
    assert ScriptedLLM.calls.count("chat") == 2
    assert set(rows("SELECT simulator FROM scores").simulator) == {"all_at_once:scripted:rule"}

    raw = yaml.safe_load(project.read_text())
    raw["simulator"] = {"kind": "token_match"}
    project.write_text(yaml.safe_dump(raw))
    ScriptedLLM.calls.clear()
    assert main(["run", "--model", "tiny-gpt2", "--layers", "1", "--from", "simulate"]) == 0
    assert ScriptedLLM.calls == []  # nothing explained again, and token_match runs no LLM
    assert rows("SELECT layer, neuron, created_at FROM explanations ORDER BY neuron").equals(explained)
    by_simulator = rows("SELECT simulator, count(*) AS n FROM scores GROUP BY simulator ORDER BY simulator")
    assert by_simulator.simulator.tolist() == ["all_at_once:scripted:rule", "token_match:0.85/0.5"]
    assert by_simulator.n.tolist() == [2, 2]
    assert "Scores of tiny-gpt2" in capsys.readouterr().out


def test_from_explain_works_on_an_imported_model_without_a_config_entry(project, home, capsys):
    assert main(["run", "--model", "tiny-gpt2", "--layers", "1", "--until", "record"]) == 0
    assert main(["export", "--format", "neuron-explainer", "--out", str(home / "out"), "--model", "tiny-gpt2"]) == 0
    assert main(["import", "--format", "neuron-records", str(home / "out" / "collated-activations"),
                 "--model", "copied"]) == 0
    assert main(["run", "--model", "copied", "--layers", "1", "--from", "explain"]) == 0
    scored = rows("SELECT model, layer, neuron, score_top_and_random FROM scores WHERE model = 'copied'")
    assert scored.layer.tolist() == [1, 1] and scored.neuron.tolist() == [0, 1]
    # From the record stage, the imported model is not configured: one clear line.
    assert main(["run", "--model", "copied", "--until", "record"]) == 2
    assert "unknown model 'copied'" in capsys.readouterr().err
