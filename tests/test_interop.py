"""Records and explanations move to and from OpenAI's neuron_explainer files; every table copies to Parquet.

The reference structure is openai/automated-interpretability's dataclasses (neuron_explainer/activations/
activations.py and explanations/explanations.py) as fast_dataclasses serializes them, as the committed files in
that format show (tests/fixtures/neuron_explainer, with their provenance): `their_loads` below checks every
object of a written file against the fields those files carry for its "dataclass_name".
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from autointerp.errors import ImportFormatError
from autointerp.io.export import export_explanations, export_neuron_records
from autointerp.io.imports import import_explanations, import_neuron_records
from autointerp.io.parquet import export_parquet
from autointerp.llm.cache import CallResult, LLMCache
from autointerp.record.records import load_neuron_records
from autointerp.score.scoring import score_neuron
from autointerp.store import Replacement, Store, queries
from orchestration.cli import main
from tests.conftest import SCRIPTED_EXPLAINER, SCRIPTED_SIMULATOR, project_env

FIXTURES = Path(__file__).parent / "fixtures" / "neuron_explainer"


# --- their format, read off the committed files in it (tests/fixtures/neuron_explainer/README.md) ----------

def _fields_by_dataclass(*paths: Path) -> dict[str, frozenset[str]]:
    """Per "dataclass_name", the fields its objects carry in the reference-format files."""
    found: dict[str, set[str]] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if "dataclass_name" in value:
                found.setdefault(value["dataclass_name"], set()).update(value)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for path in paths:
        for line in path.read_text().splitlines():
            walk(json.loads(line))
    return {name: frozenset(fields) for name, fields in found.items()}


THEIR_FIELDS = _fields_by_dataclass(FIXTURES / "collated-activations" / "5" / "131.json",
                                    FIXTURES / "explanations" / "5" / "131.jsonl")


def their_loads(text: str) -> Any:
    """Read a file as their `loads` does (each object becomes the dataclass its "dataclass_name" names), failing on
    a dataclass their files do not have, or an object whose fields are not the ones their files carry."""
    def hook(d: dict) -> Any:
        if "dataclass_name" not in d:
            return d
        name = d["dataclass_name"]
        assert name in THEIR_FIELDS, f"their format has no dataclass {name}"
        assert set(d) == THEIR_FIELDS[name], (name, sorted(set(d) ^ THEIR_FIELDS[name]))
        return SimpleNamespace(**d)
    return json.loads(text, object_hook=hook)


def test_their_format_is_read_off_the_committed_files():
    assert THEIR_FIELDS["NeuronRecord"] == {"dataclass_name", "neuron_id", "random_sample", "random_sample_by_quantile",
                                            "quantile_boundaries", "mean", "variance", "skewness", "kurtosis",
                                            "most_positive_activation_records"}
    assert THEIR_FIELDS["ActivationRecord"] == {"dataclass_name", "tokens", "activations"}
    with pytest.raises(AssertionError, match="ActivationRecord"):
        their_loads('{"dataclass_name": "ActivationRecord", "tokens": [], "activations": [], "extra": 1}')


# --- a store recorded through the real pipeline, once for the module ---------------------------------------

@pytest.fixture(scope="module")
def recorded(tmp_path_factory, tiny_gpt2) -> Path:
    """A DuckDB store with layers 0-1 of tiny-gpt2 recorded by `autointerp run` (tests copy it)."""
    home = tmp_path_factory.mktemp("interop")
    with project_env(home, {"tiny-gpt2": tiny_gpt2}, explainer=SCRIPTED_EXPLAINER, simulator=SCRIPTED_SIMULATOR):
        assert main(["run", "--model", "tiny-gpt2", "--layers", "0-1", "--until", "record"]) == 0
    return home / "data" / "autointerp.duckdb"


@pytest.fixture
def store(recorded, tmp_path, monkeypatch) -> Store:
    copy = tmp_path / "data" / "autointerp.duckdb"
    copy.parent.mkdir()
    shutil.copy(recorded, copy)
    monkeypatch.setenv("AUTOINTERP_HOME", str(copy.parent))
    return Store(copy)


def count(store: Store, sql: str, params: list | None = None) -> int:
    return int(store.query(sql, params).iloc[0, 0])


REVISION_SQL = "SELECT revision FROM models WHERE model = ?"

# Every original record against its imported copy, matched by (layer, neuron, kind, band, rank); tokens are
# compared through each side's own excerpts, since the imported excerpt ids are synthesized.
COMPARE_RECORDS = """
WITH a AS (SELECT r.*, e.tokens FROM activation_records r JOIN excerpts e USING (model, revision, excerpt_id)
           WHERE r.model = ?),
     b AS (SELECT r.*, e.tokens FROM activation_records r JOIN excerpts e USING (model, revision, excerpt_id)
           WHERE r.model = ?)
SELECT count(*) AS matched,
       count(*) FILTER (WHERE a.activations = b.activations AND a.tokens = b.tokens
                        AND a.max_activation = b.max_activation) AS equal
FROM a JOIN b ON a.layer = b.layer AND a.neuron = b.neuron AND a.kind = b.kind
              AND a.band IS NOT DISTINCT FROM b.band AND a.rank = b.rank
"""

COMPARE_STATS = """
SELECT count(*) AS matched,
       count(*) FILTER (WHERE a.mean = b.mean AND a.variance = b.variance AND a.skewness = b.skewness
                        AND a.kurtosis = b.kurtosis AND a.quantile_boundaries = b.quantile_boundaries
                        AND abs(a.max - b.max) <= 1e-6 * greatest(1, abs(a.max))
                        AND b.count IS NULL AND b.frac_positive IS NULL) AS equal
FROM neuron_stats a JOIN neuron_stats b USING (layer, neuron) WHERE a.model = ? AND b.model = ?
"""


def test_records_round_trip_through_their_files_unchanged(store, tmp_path):
    written = export_neuron_records(store, "tiny-gpt2", tmp_path / "out")
    n_neurons = count(store, "SELECT count(*) FROM neuron_stats WHERE model = 'tiny-gpt2'")
    assert len(written) == n_neurons == 2 * 128
    assert written[0] == tmp_path / "out" / "collated-activations" / "0" / "0.json"

    # A written file is what their `loads` reads: a NeuronRecord with our records in rank order.
    theirs = their_loads((tmp_path / "out" / "collated-activations" / "1" / "7.json").read_text())
    assert theirs.dataclass_name == "NeuronRecord"
    assert (theirs.neuron_id.layer_index, theirs.neuron_id.neuron_index) == (1, 7)
    top = store.query("SELECT e.tokens, r.activations FROM activation_records r JOIN excerpts e "
                      "USING (model, revision, excerpt_id) WHERE r.layer = 1 AND r.neuron = 7 AND r.kind = 'top' "
                      "ORDER BY r.rank")
    assert [r.tokens for r in theirs.most_positive_activation_records] == [list(t) for t in top.tokens]
    assert [r.activations for r in theirs.most_positive_activation_records] == [list(a) for a in top.activations]
    assert (len(theirs.most_positive_activation_records), len(theirs.random_sample)) == (5, 4)
    assert [len(band) for band in theirs.random_sample_by_quantile] == [2, 2, 2]  # config: 3 bands x 2
    assert len(theirs.quantile_boundaries) == 4

    result = import_neuron_records(store, "roundtrip", tmp_path / "out")
    assert result.revision.startswith("import:sha256:") and result.neurons == n_neurons
    original = count(store, "SELECT count(*) FROM activation_records WHERE model = 'tiny-gpt2'")
    assert count(store, "SELECT count(*) FROM activation_records WHERE model = 'roundtrip'") == original
    matched = store.query(COMPARE_RECORDS, ["tiny-gpt2", "roundtrip"]).iloc[0]
    assert matched.matched == matched.equal == original
    stats = store.query(COMPARE_STATS, ["tiny-gpt2", "roundtrip"]).iloc[0]
    assert stats.matched == stats.equal == n_neurons
    model = store.query("SELECT * FROM models WHERE model = 'roundtrip'").iloc[0]
    assert (model.architecture, model.n_layers, model.n_neurons) == ("imported", 2, 128)
    assert model.n_excerpts == count(store, "SELECT count(*) FROM excerpts WHERE model = 'roundtrip'")
    # Distinct token sequences become excerpts: as many as the original records point at.
    assert model.n_excerpts == count(store, "SELECT count(DISTINCT e.tokens) FROM activation_records r JOIN excerpts e "
                                            "USING (model, revision, excerpt_id) WHERE r.model = 'tiny-gpt2'")

    # The stages read imported records as they read recorded ones.
    revision = queries.latest_revision(store, "roundtrip")
    with store.connect() as con:
        mine = load_neuron_records(con, "tiny-gpt2", queries.latest_revision(store, "tiny-gpt2"), 1)
        imported = load_neuron_records(con, "roundtrip", revision, 1)
    assert len(imported) == 128
    for a, b in zip(mine, imported):
        assert [(r.tokens, r.activations) for r in a.top] == [(r.tokens, r.activations) for r in b.top]
        assert [(r.tokens, r.activations) for r in a.random] == [(r.tokens, r.activations) for r in b.random]
        fake = [[x + 0.5 * (i % 3) for i, x in enumerate(r.activations)] for r in b.test_top() + b.test_random()]
        split = len(b.test_top())
        got = score_neuron([r.activations for r in b.test_top()], fake[:split],
                           [r.activations for r in b.test_random()], fake[split:])
        want = score_neuron([r.activations for r in a.test_top()], fake[:split],
                            [r.activations for r in a.test_random()], fake[split:])
        assert got == want and got.n_tokens == 2 * 64

    # Importing the same files again replaces the rows (same revision), never duplicates them.
    assert import_neuron_records(store, "roundtrip", tmp_path / "out").revision == revision
    assert count(store, "SELECT count(*) FROM activation_records WHERE model = 'roundtrip'") == original


def test_published_gpt2_file_imports_and_feeds_the_stages(tmp_path):
    store = Store(tmp_path / "store.duckdb")
    result = import_neuron_records(store, "gpt2-xl", FIXTURES / "collated-activations")
    assert (result.files, result.neurons) == (1, 1)
    with store.connect() as con:
        rows = con.execute("SELECT kind, band, count(*) AS n FROM activation_records WHERE model = 'gpt2-xl' "
                           "GROUP BY ALL ORDER BY kind, band").fetchall()
    assert [list(r) for r in rows] == [["quantile", 0, 1], ["quantile", 1, 1], ["quantile", 2, 1], ["quantile", 3, 1],
                                     ["random", None, 6], ["top", None, 8]]
    stats = store.query("SELECT * FROM neuron_stats").iloc[0]
    assert tuple(stats[c] for c in ("layer", "neuron", "mean", "variance", "skewness", "kurtosis")) == \
        (5, 131, -0.0213, 0.0405, 9.87, 131.2)
    assert stats["max"] == pytest.approx(3.87) and np.allclose(stats.quantile_boundaries, [-0.17, -0.02, 0.05, 0.91, 2.2])

    with store.connect() as con:
        [record] = load_neuron_records(con, "gpt2-xl", result.revision, 5)
    assert record.neuron == 131 and record.top[0].tokens[4] == " Paris"
    assert record.top[0].activations[4] == pytest.approx(3.87)
    # Their test split (NeuronRecord.test_activation_records) is ours: top 3 and 7, random 2 and 5.
    assert [r.tokens[3] for r in record.test_top()] == [" and", " near"]
    assert [r.tokens[4] for r in record.test_random()] == [" Boston", " more"]

    # Their scored explanations of the same neuron: explanations, scores, and simulations matched to the records.
    landed = import_explanations(store, "gpt2-xl", FIXTURES / "explanations")
    assert landed.rows == {"explanations": 2, "simulations": 4, "scores": 2}
    source = json.loads((FIXTURES / "explanations" / "5" / "131.jsonl").read_text())
    simulation = source["scored_explanations"][0]["scored_simulation"]
    scores = store.query("SELECT * FROM scores ORDER BY sample")
    first = scores.iloc[0]
    assert (first.explainer, first.explanation) == ("imported:neuron-explainer", "names of cities")
    assert first.score_top_and_random == simulation["ev_correlation_score"]
    assert first.rsquared == simulation["rsquared_score"]
    assert first.n_tokens == 4 * 8
    random_pairs = [(s["true_activations"], s["simulation"]["expected_activations"])
                    for s in simulation["scored_sequence_simulations"][2:]]
    assert first.score_random_only == pytest.approx(np.corrcoef(
        np.concatenate([a for a, _ in random_pairs]), np.concatenate([s for _, s in random_pairs]))[0, 1])
    assert first.reason is None
    # The unscored second explanation: no numbers, and the reason says why.
    assert scores.iloc[1].score_top_and_random is None or math.isnan(scores.iloc[1].score_top_and_random)
    assert "missing or undefined in the imported file" in scores.iloc[1].reason
    sims = store.query("SELECT s.kind, e.tokens, s.simulated FROM simulations s JOIN excerpts e "
                       "USING (model, revision, excerpt_id) ORDER BY s.kind DESC, s.excerpt_id")
    assert sorted(sims.kind) == ["random", "random", "top", "top"]
    by_tokens = {tuple(s["simulation"]["tokens"]): s["simulation"]["expected_activations"]
                 for s in simulation["scored_sequence_simulations"]}
    for row in sims.itertuples():
        assert np.allclose(row.simulated, by_tokens[tuple(row.tokens)])


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def published() -> dict:
    return json.loads((FIXTURES / "collated-activations" / "5" / "131.json").read_text())


def broken(change) -> dict:
    data = published()
    change(data)
    return data


MALFORMED_RECORDS = [
    ("bad JSON", '{"dataclass_name": "NeuronRecord", "neuron_id": ', "not valid JSON"),
    ("missing neuron_id", broken(lambda d: d.pop("neuron_id")), "missing key 'neuron_id'"),
    ("missing top records", broken(lambda d: d.pop("most_positive_activation_records")),
     "missing key 'most_positive_activation_records'"),
    ("missing tokens", broken(lambda d: d["random_sample"][1].pop("tokens")), "random_sample[1]: missing key 'tokens'"),
    ("length mismatch", broken(lambda d: d["most_positive_activation_records"][2]["activations"].pop()),
     "most_positive_activation_records[2]: 8 tokens but 7 activations"),
    ("text activation", broken(lambda d: d["random_sample_by_quantile"][3][0]["activations"].__setitem__(1, "0.3")),
     "random_sample_by_quantile[3][0].activations[1]: expected a number, found a string '0.3'"),
    ("null activation", broken(lambda d: d["random_sample"][0]["activations"].__setitem__(5, None)),
     "random_sample[0].activations[5]: expected a number, found null"),
    ("NaN activation", json.dumps(broken(lambda d: d["random_sample"][0]["activations"].__setitem__(2, math.nan))),
     "random_sample[0].activations[2]: nan is not a finite number"),
    ("not a record", broken(lambda d: d.__setitem__("dataclass_name", "NeuronSimulationResults")),
     "is a NeuronSimulationResults, expected a NeuronRecord"),
    ("bad layer", broken(lambda d: d["neuron_id"].__setitem__("layer_index", -1)),
     "neuron_id.layer_index: expected a non-negative integer"),
    ("moved file", broken(lambda d: d["neuron_id"].__setitem__("neuron_index", 130)),
     "says layer 5 neuron 130, but the file's path says layer 5 neuron 131"),
    # Finite in JSON, but not in the store's 32-bit columns (it would land as inf).
    ("activation beyond float32", broken(lambda d: d["random_sample"][0]["activations"].__setitem__(3, 1e300)),
     "random_sample[0].activations[3]: 1e+300 is too large for a 32-bit float"),
    ("quantile boundary beyond float32", broken(lambda d: d["quantile_boundaries"].__setitem__(0, -1e39)),
     "quantile_boundaries[0]: -1e+39 is too large for a 32-bit float"),
    ("index beyond int32", broken(lambda d: d["neuron_id"].__setitem__("layer_index", 2**31)),
     "neuron_id.layer_index: 2147483648 is too large"),
    ("more records than a rank holds", broken(lambda d: d.__setitem__(
        "random_sample", d["random_sample"][:1] * 32768)), "random_sample: 32,768 records; at most 32,767"),
    ("nested 200k deep", "[" * 200_000 + "]" * 200_000, "JSON nested too deeply"),
]


@pytest.mark.parametrize("kind,content,message", MALFORMED_RECORDS, ids=[m[0] for m in MALFORMED_RECORDS])
def test_malformed_neuron_records_are_rejected_and_nothing_lands(tmp_path, kind, content, message):
    store = Store(tmp_path / "store.duckdb")
    import_neuron_records(store, "existing", FIXTURES / "collated-activations")
    before = {t: count(store, f"SELECT count(*) FROM {t}") for t in ("models", "excerpts", "activation_records",
                                                                      "neuron_stats")}
    tree = tmp_path / "in" / "collated-activations"
    write_json(tree / "5" / "130.json", broken(lambda d: d["neuron_id"].__setitem__("neuron_index", 130)))  # valid
    bad = write_json(tree / "5" / "131.json", content)
    with pytest.raises(ImportFormatError) as error:
        import_neuron_records(store, "incoming", tmp_path / "in")
    assert str(bad) in str(error.value) and message in str(error.value), str(error.value)
    assert {t: count(store, f"SELECT count(*) FROM {t}") for t in before} == before  # not even the valid file


def test_import_rejects_a_neuron_given_twice_and_a_missing_path(tmp_path):
    store = Store(tmp_path / "store.duckdb")
    write_json(tmp_path / "a" / "x.json", published())
    write_json(tmp_path / "a" / "y.json", published())
    with pytest.raises(ImportFormatError, match=r"y\.json: layer 5 neuron 131 is also in .*x\.json"):
        import_neuron_records(store, "twice", tmp_path / "a")
    with pytest.raises(ImportFormatError, match="no such file or directory"):
        import_neuron_records(store, "nothing", tmp_path / "missing")
    assert count(store, "SELECT count(*) FROM models") == 0


def test_malformed_explanations_are_rejected_and_nothing_lands(tmp_path):
    store = Store(tmp_path / "store.duckdb")
    import_neuron_records(store, "gpt2-xl", FIXTURES / "collated-activations")
    good = (FIXTURES / "explanations" / "5" / "131.jsonl").read_text()
    for change, message in [
        (lambda d: d["scored_explanations"][0].pop("explanation"), "scored_explanations[0]: missing key 'explanation'"),
        (lambda d: d["scored_explanations"][0]["scored_simulation"]["scored_sequence_simulations"][1]
         ["true_activations"].pop(), "scored_sequence_simulations[1]: 8 tokens, 8 expected_activations and 7 "
                                     "true_activations"),
        (lambda d: d["scored_explanations"][1]["scored_simulation"].__setitem__("ev_correlation_score", "high"),
         "scored_explanations[1].scored_simulation.ev_correlation_score: expected a number, found a string"),
    ]:
        data = json.loads(good)
        change(data)
        bad = write_json(tmp_path / "in" / "5" / "131.jsonl", json.dumps(data) + "\n")
        with pytest.raises(ImportFormatError) as error:
            import_explanations(store, "gpt2-xl", tmp_path / "in")
        assert f"{bad} line 1" in str(error.value) and message in str(error.value), str(error.value)
    with pytest.raises(ImportFormatError, match="not valid JSON"):
        import_explanations(store, "gpt2-xl", write_json(tmp_path / "in" / "5" / "131.jsonl", good[:-40]))
    assert count(store, "SELECT count(*) FROM explanations") == count(store, "SELECT count(*) FROM scores") == 0


def write_explained(store: Store, layer: int = 1, neurons: tuple[int, ...] = (0, 1)) -> None:
    """Explanations, simulations and scores for recorded neurons, written as the stages write them.

    The LLM stages take minutes on this CPU (tests/test_explain_pipeline.py runs them); the files only need
    rows with known values, so the 'simulator' here is a fixed transform of the real activations.
    """
    revision = queries.latest_revision(store, "tiny-gpt2")
    with store.connect() as con:
        records = load_neuron_records(con, "tiny-gpt2", revision, layer, list(neurons))
    key = {"model": "tiny-gpt2", "revision": revision, "layer": layer, "explainer": "test:explainer"}
    explanations, simulations, scores = [], [], []
    for record in records:
        row = {**key, "neuron": record.neuron, "sample": 0}
        explanations.append({**row, "explanation": f"made-up explanation {record.neuron}", "completion": None,
                             "created_at": None})
        simulated = {}
        for kind, r in record.scored("test"):
            simulated[(kind, r.excerpt_id)] = [min(10.0, max(0.0, 3 * a + (i % 5) / 2)) for i, a in enumerate(r.activations)]
            simulations.append({**row, "simulator": "test:simulator", "excerpt_id": r.excerpt_id, "kind": kind,
                                "simulated": simulated[(kind, r.excerpt_id)]})
        result = score_neuron([r.activations for r in record.test_top()],
                              [simulated[("top", r.excerpt_id)] for r in record.test_top()],
                              [r.activations for r in record.test_random()],
                              [simulated[("random", r.excerpt_id)] for r in record.test_random()])
        scores.append({**row, "simulator": "test:simulator", "explanation": f"made-up explanation {record.neuron}",
                       **dataclasses.asdict(result)})
    store.replace([Replacement("explanations", key, pd.DataFrame(explanations)),
                   Replacement("simulations", key, pd.DataFrame(simulations)),
                   Replacement("scores", key, pd.DataFrame(scores))])


def test_exported_explanations_have_their_structure_and_come_back(store, tmp_path):
    write_explained(store)
    [path, other] = export_explanations(store, "tiny-gpt2", tmp_path / "out")
    assert path == tmp_path / "out" / "explanations" / "1" / "0.jsonl"
    lines = path.read_text().splitlines()
    assert len(lines) == 1  # their reader takes exactly one line
    results = their_loads(lines[0])
    assert results.dataclass_name == "NeuronSimulationResults"
    assert (results.neuron_id.layer_index, results.neuron_id.neuron_index) == (1, 0)
    [scored] = results.scored_explanations
    assert scored.dataclass_name == "ScoredExplanation" and scored.explanation == "made-up explanation 0"
    stored = store.query("SELECT * FROM scores WHERE neuron = 0").iloc[0]
    assert scored.scored_simulation.ev_correlation_score == stored.score_top_and_random
    assert scored.scored_simulation.rsquared_score == stored.rsquared
    sequences = scored.scored_simulation.scored_sequence_simulations
    # Top test records first, then random, each in rank order, as their viewer reads them.
    real = store.query("""SELECT r.kind, e.tokens, r.activations, s.simulated FROM simulations s
                          JOIN activation_records r USING (model, revision, layer, neuron, kind, excerpt_id)
                          JOIN excerpts e USING (model, revision, excerpt_id)
                          WHERE s.neuron = 0 ORDER BY r.kind DESC, r.rank""")
    assert real.kind.tolist() == ["top", "random"]  # 5 top -> 1 in test, 4 random -> 1 in test
    for seq, row in zip(sequences, real.itertuples()):
        assert seq.dataclass_name == "ScoredSequenceSimulation"
        assert seq.simulation.tokens == list(row.tokens)
        assert seq.true_activations == list(row.activations)
        assert seq.simulation.expected_activations == list(row.simulated)
        assert seq.simulation.activation_scale == "simulated_normalized_activations"
        assert seq.ev_correlation_score == pytest.approx(np.corrcoef(row.activations, row.simulated)[0, 1])
        assert len(seq.simulation.distribution_values) == len(seq.simulation.tokens)
    pooled = np.corrcoef(np.concatenate([s.true_activations for s in sequences]),
                         np.concatenate([s.simulation.expected_activations for s in sequences]))[0, 1]
    assert scored.scored_simulation.ev_correlation_score == pytest.approx(pooled)

    # Back in: records and explanations of the exported neurons land under a new name, simulations matched.
    export_neuron_records(store, "tiny-gpt2", tmp_path / "out", layers=[1])
    import_neuron_records(store, "roundtrip", tmp_path / "out" / "collated-activations")
    assert import_explanations(store, "roundtrip", tmp_path / "out" / "explanations").rows == \
        {"explanations": 2, "simulations": 4, "scores": 2}
    back = store.query("""SELECT a.neuron, a.score_top_and_random AS a1, b.score_top_and_random AS b1,
                                 a.score_random_only AS a2, b.score_random_only AS b2, a.rsquared AS a3, b.rsquared AS b3,
                                 a.n_tokens AS a4, b.n_tokens AS b4
                          FROM scores a JOIN scores b USING (layer, neuron, sample)
                          WHERE a.model = 'tiny-gpt2' AND b.model = 'roundtrip' ORDER BY neuron""")
    assert len(back) == 2
    for row in back.itertuples():
        assert (row.a1, row.a3, row.a4) == (row.b1, row.b3, row.b4)
        assert row.b2 == pytest.approx(row.a2, abs=1e-6)  # recomputed from the file's float values


def test_parquet_export_reads_back_with_the_tables_row_counts(store, tmp_path):
    write_explained(store)
    cache = LLMCache(store)  # creates llm_calls and stores one real (trivial) call through the cache
    cache.run("test", "echo", "complete", [{"prompt": "hi"}], lambda reqs: [CallResult({"text": "hi"}, 1, 1)])
    counts = export_parquet(store, tmp_path / "parquet")
    tables = store.query("SELECT table_name FROM duckdb_tables() ORDER BY table_name").table_name.tolist()
    assert sorted(counts) == tables and {"llm_calls", "activation_records", "scores"} <= set(tables)
    assert sorted(p.name for p in (tmp_path / "parquet").iterdir()) == sorted(f"{t}.parquet" for t in tables)
    for table in tables:
        read = pq.read_table(tmp_path / "parquet" / f"{table}.parquet")
        assert read.num_rows == counts[table] == count(store, f"SELECT count(*) FROM {table}"), table
        assert read.column_names == store.query(f"SELECT * FROM {table} LIMIT 0").columns.tolist()
    assert counts["activation_records"] > 0 and counts["llm_calls"] == 1
    read = pq.read_table(tmp_path / "parquet" / "neuron_stats.parquet").to_pandas().sort_values(["layer", "neuron"])
    stored = store.query("SELECT * FROM neuron_stats ORDER BY layer, neuron")
    assert np.array_equal(read["mean"].to_numpy(), stored["mean"].to_numpy())
    assert all(np.array_equal(a, b) for a, b in zip(read.quantile_boundaries, stored.quantile_boundaries))


def test_cli_exports_and_imports(store, tmp_path, capsys):
    assert main(["export", "--format", "neuron-explainer", "--out", str(tmp_path / "out"), "--model", "tiny-gpt2",
                 "--layers", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "collated-activations").iterdir()) == ["1"]
    assert main(["import", "--format", "neuron-records", str(tmp_path / "out"), "--model", "copy"]) == 0
    assert "imported 128 neurons from 128 file(s) as copy @ import:sha256:" in capsys.readouterr().out
    assert main(["export", "--format", "parquet", "--out", str(tmp_path / "pq")]) == 0
    assert (tmp_path / "pq" / "activation_records.parquet").exists()
    bad = write_json(tmp_path / "bad" / "1" / "3.json", '{"neuron_id": {"layer_index": 1, "neuron_index": 3}')
    assert main(["import", "--format", "neuron-records", str(bad), "--model", "bad"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}") and "not valid JSON" in err and "Traceback" not in err
    assert main(["export", "--format", "neuron-explainer", "--out", str(tmp_path / "x")]) == 2
    assert "--model is needed: the store has models copy, tiny-gpt2" in capsys.readouterr().err
