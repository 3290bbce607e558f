"""Search by meaning (autointerp/search.py): planted concepts found by plain words, only changes re-embedded,
the CLI and the viewer's endpoint over real HTTP."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from datetime import datetime

import pytest

from autointerp.config.schema import SearchSpec
from autointerp.search import embed_layer, encoder_of, search
from autointerp.store import Replacement, Store
from autointerp.store.schema import table
from eval.planted import CONCEPTS

ENCODER = SearchSpec().encoder
MODEL, REVISION = "planted", "rev1"
# Each planted concept asked for in plain words, as a user would, not in its rule's wording.
QUERIES = {
    "digits": "numerals 0 to 9",
    "months": "months of the year",
    "water": "rivers, lakes and the sea",
    "family": "relatives like parents and kids",
    "weekdays": "days of the week",
    "number_words": "numbers spelled out in words",
    "capitalized": "proper nouns: people's names and places",
    "after_comma": "the token that comes after a comma",
    "after_of": "what follows the word of",
    "in_parentheses": "text in brackets",
    "in_quotes": "quoted speech",
    "year": "calendar years like 1990",
    "count": "quantities and amounts",
    "second_word": "the second word in a sentence",
}
NEURON = {name: i for i, name in enumerate(CONCEPTS)}


def write_explanations(store: Store, texts: dict[int, str], revision: str = REVISION) -> None:
    n = len(texts)
    store.replace([
        Replacement("models", {"model": MODEL, "revision": revision}, table("models", rows=[{
            "model": MODEL, "revision": revision, "source": "test", "architecture": "gpt2", "units": "mlp",
            "n_layers": 1, "n_neurons": n, "registered_at": datetime.now()}]), ),
        Replacement("explanations", {"model": MODEL, "revision": revision, "layer": [0], "explainer": "planted"},
                    table("explanations", rows=[{"model": MODEL, "revision": revision, "layer": 0, "neuron": i,
                                                 "explainer": "planted", "sample": 0, "explanation": text,
                                                 "chosen": True} for i, text in texts.items()]))])


@pytest.fixture
def planted_store(tmp_path) -> Store:
    store = Store(tmp_path / "autointerp.duckdb")
    write_explanations(store, {NEURON[name]: concept.rule for name, concept in CONCEPTS.items()})
    return store


@pytest.fixture(scope="module")
def encoder():
    return encoder_of(SearchSpec(device="cpu"), None)


def test_plain_words_find_each_planted_neuron_in_the_top_3(planted_store, encoder):
    done = embed_layer(planted_store, encoder, ENCODER, MODEL, REVISION, 0)
    assert (done.embedded, done.kept, done.dropped) == (len(CONCEPTS), 0, 0)
    ranks = {}
    for name, text in QUERIES.items():
        found = search(planted_store, encoder, ENCODER, text, k=3)
        assert list(found.model.unique()) == [MODEL]
        ranks[name] = found.neuron.tolist().index(NEURON[name]) + 1 if NEURON[name] in found.neuron.tolist() else None
    assert all(ranks.values()), f"not in the top 3: {[n for n, r in ranks.items() if not r]} ({ranks})"
    # cosine of normalised vectors, best first
    found = search(planted_store, encoder, ENCODER, "months of the year", k=5)
    assert found.similarity.is_monotonic_decreasing and -1 <= found.similarity.min() <= found.similarity.max() <= 1


def test_only_changed_explanations_are_re_embedded(planted_store, encoder):
    embed_layer(planted_store, encoder, ENCODER, MODEL, REVISION, 0)
    before = planted_store.query("SELECT neuron, created_at FROM explanation_embeddings ORDER BY neuron")
    again = embed_layer(planted_store, encoder, ENCODER, MODEL, REVISION, 0)
    assert (again.embedded, again.kept, again.dropped) == (0, len(CONCEPTS), 0)
    texts = {NEURON[name]: concept.rule for name, concept in CONCEPTS.items()}
    texts[NEURON["water"]] = "the colour red and things that are red"
    write_explanations(planted_store, texts)
    changed = embed_layer(planted_store, encoder, ENCODER, MODEL, REVISION, 0)
    assert (changed.embedded, changed.kept, changed.dropped) == (1, len(CONCEPTS) - 1, 1)
    after = planted_store.query("SELECT neuron, created_at FROM explanation_embeddings ORDER BY neuron")
    moved = set(after.neuron[after.created_at != before.created_at])
    assert moved == {NEURON["water"]}
    assert search(planted_store, encoder, ENCODER, "crimson, scarlet", k=1).neuron.tolist() == [NEURON["water"]]


def test_assets_embed_and_the_cli_prints_the_closest_units_with_links(project, capsys):
    import dagster as dg

    from orchestration.cli import main
    from orchestration.partitions import register_model
    from tests.test_explain_pipeline import metadata
    from tests.test_pipeline import check_results, run

    project.write_text(project.read_text() + "viewer: {url: 'http://127.0.0.1:8000'}\n")
    with dg.instance_for_test(temp_dir=str(project.parent / "dagster")) as instance:
        register_model(instance, "tiny-gpt2", 3)
        assert run(instance, ["excerpts"], "tiny-gpt2").success
        result = run(instance, ["activation_records", "neuron_stats", "unit_logits", "explanations",
                                "explanation_embeddings"], "tiny-gpt2", layers=[1, 1])
        assert result.success and all(check_results(result).values())
        assert {"unit_logits_are_valid", "explanation_embeddings_are_valid"} <= set(check_results(result))
        assert metadata(result, "explanation_embeddings")["embedded"] == 2
        again = run(instance, ["unit_logits", "explanation_embeddings"], "tiny-gpt2", layers=[1, 1])
        assert metadata(again, "explanation_embeddings")["embedded"] == 0
        assert metadata(again, "unit_logits")["layers_written"] == {"tiny-gpt2": []}  # once per revision
    store = Store.from_home()
    [text] = store.query("SELECT explanation FROM explanations WHERE neuron = 1").explanation
    capsys.readouterr()
    assert main(["search", text, "--model", "tiny-gpt2", "--layers", "1", "--k", "1"]) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8000/tiny-gpt2/neurons/1-1.html" in out and "1.000" in out  # the same text: cosine 1
    assert main(["search", "anything", "--layers", "0"]) == 0
    assert "nothing embedded" in capsys.readouterr().out
    # the neuron page shows what the unit writes, the tokens of its unit_logits row
    from autointerp.viewer.server import Viewer

    [row] = store.query("SELECT promoted_tokens, suppressed_tokens FROM unit_logits WHERE layer = 1 AND neuron = 1")\
        .itertuples(index=False)
    page = Viewer(store).render("/tiny-gpt2/neurons/1-1.html")
    promoted = page.split('id="promoted">')[1].split("</span></div>")[0]
    assert [f">{t}<" in promoted for t in row.promoted_tokens] == [True] * len(row.promoted_tokens)
    assert 'id="suppressed"' in page


def test_the_served_viewer_searches_by_meaning_over_http(planted_store, encoder):
    from autointerp.viewer.server import Viewer, make_server

    embed_layer(planted_store, encoder, ENCODER, MODEL, REVISION, 0)
    server = make_server(Viewer(planted_store, rank_by=("simulation",)), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/search?q=months+of+the+year&k=3&model={MODEL}") as answer:
            assert answer.headers["Content-Type"] == "application/json"
            found = json.load(answer)
        assert found["query"] == "months of the year" and len(found["results"]) == 3
        assert NEURON["months"] in [r["neuron"] for r in found["results"]]
        first = found["results"][0]
        assert first["href"] == f"/{MODEL}/neurons/0-{first['neuron']}.html" and 0 < first["similarity"] <= 1
        with urllib.request.urlopen(f"{base}/{MODEL}/index.html") as page:
            assert 'id="meaning-form"' in page.read().decode()
        for bad, status in (("/search?q=", 400), ("/search?q=x&k=1000", 400), ("/search?q=x&model=nope", 404)):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + bad)
            assert refused.value.code == status, bad
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
