"""The neuron viewer: a static site built from a real store (tiny GPT-2 recorded through the CLI), checked in
headless Chromium after its scripts ran, served on 127.0.0.1, and materialized as a Dagster asset."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import urllib.request
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import dagster as dg
import markupsafe
import numpy as np
import pandas as pd
import pytest

from autointerp.errors import AutointerpError
from autointerp.store import Replacement, Store, queries
from autointerp.viewer.pages import page_name
from autointerp.viewer.server import Viewer, make_server
from autointerp.viewer.site import build_site, site_dir
from orchestration.cli import main
from tests.browser import dump_dom, screenshot
from tests.conftest import SCRIPTED_EXPLAINER, SCRIPTED_SIMULATOR, project_env

MODEL = "tiny-gpt2"
ARTIFACTS = Path(__file__).parent / "artifacts"
HOSTILE_TOKEN = "<i>&amp; x\n"  # must reach the page as text, newline shown as a glyph
HOSTILE_SHOWN = "<i>&amp; x↵"
EXPLAINER, SIMULATOR = "test:explainer@sha256:0a1b", "test:simulator"
# (neuron, sample, explanation, score_top_and_random, score_random_only, reason): values we choose, so the pages'
# content and order can be asserted exactly. Neuron 0's best explanation is sample 1, with markup in it.
EXPLAINED = [
    (0, 0, "animals and the places they sleep", 0.25, 0.1, None),
    (0, 1, 'the words "<b>cat</b>" & dog', 0.75, 0.5, None),
    (3, 0, "numbers written as words", None, None, "simulated activations are constant"),
    (5, 0, "colours", -0.2, -0.3, None),
    (7, 0, "verbs of motion", 0.9, 0.8, None),
]


# --- a store filled by a real record run, plus explanation/simulation/score rows we choose -------------


def _fill_llm_stages(store: Store, revision: str) -> None:
    key = dict(model=MODEL, revision=revision, layer=1)
    now = datetime(2025, 1, 1)
    # Neuron 0 has two candidates (best-of-n): sample 1 is the one chosen.
    explanations = pd.DataFrame([{**key, "neuron": n, "explainer": EXPLAINER, "sample": s, "explanation": text,
                                  "completion": f" {text}\n", "chosen": (n, s) != (0, 0), "created_at": now}
                                 for n, s, text, *_ in EXPLAINED])
    scores = pd.DataFrame([{**key, "neuron": n, "explainer": EXPLAINER, "simulator": SIMULATOR, "sample": s,
                            "explanation": text, "score_top_and_random": tr, "score_random_only": ro,
                            "rsquared": None if tr is None else tr - 1,
                            "absolute_dev_explained": None if tr is None else tr - 0.5, "n_tokens": 128,
                            "reason": reason} for n, s, text, tr, ro, reason in EXPLAINED])
    # Neuron 0 sample 1 simulated on its test-split excerpts (top record 3, random record 2 of 5 top / 4 random).
    test = store.query("SELECT kind, excerpt_id FROM activation_records WHERE model = ? AND layer = 1 AND neuron = 0 "
                       "AND ((kind = 'top' AND rank = 3) OR (kind = 'random' AND rank = 2))", [MODEL])
    simulations = pd.DataFrame([{**key, "neuron": 0, "explainer": EXPLAINER, "simulator": SIMULATOR, "sample": 1,
                                 "excerpt_id": int(row.excerpt_id), "kind": row.kind,
                                 "simulated": simulated_values(row.kind)} for row in test.itertuples()])
    where = {"model": MODEL, "revision": revision}
    store.replace([Replacement("explanations", where, explanations), Replacement("scores", where, scores),
                   Replacement("simulations", where, simulations)])


def simulated_values(kind: str) -> list[float]:
    return [round((i % 11) * (1.0 if kind == "top" else 0.5), 2) for i in range(64)]


def _peak(store: Store, layer: int, neuron: int) -> tuple[int, int]:
    """(excerpt_id, token position) of the argmax of the neuron's rank-0 top record, from the store."""
    row = store.query("SELECT excerpt_id, activations FROM activation_records WHERE model = ? AND layer = ? "
                      "AND neuron = ? AND kind = 'top' AND rank = 0", [MODEL, layer, neuron]).iloc[0]
    return int(row.excerpt_id), int(np.argmax(np.asarray(row.activations)))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, tiny_gpt2, tiny_llama):
    """Layers 0-1 of tiny GPT-2 recorded by `autointerp run` into a fresh home; tiny-llama configured, not recorded."""
    root = tmp_path_factory.mktemp("viewer")
    with project_env(root, {MODEL: tiny_gpt2, "tiny-llama": tiny_llama}, explainer=SCRIPTED_EXPLAINER, simulator=SCRIPTED_SIMULATOR):
        assert main(["run", "--model", MODEL, "--layers", "0-1", "--until", "record"]) == 0
        store = Store.from_home()
        revision = queries.latest_revision(store, MODEL)
        _fill_llm_stages(store, revision)
        # A token with markup and a newline, at the very token the peak marks on neuron 0's page.
        excerpt, position = _peak(store, 1, 0)
        store.execute("UPDATE excerpts SET tokens = list_concat(tokens[:?], [?], tokens[? + 2:]) "
                      "WHERE model = ? AND excerpt_id = ?", [position, HOSTILE_TOKEN, position, MODEL, excerpt])
        yield store


@pytest.fixture(scope="module")
def site(recorded) -> Path:
    return build_site(recorded, MODEL, site_dir(MODEL), only_explained=False)


# --- reading the DOM Chromium dumps (stdlib only) ------------------------------------------------------


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: "Node | None"):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list["Node"]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if ((tag is None or child.tag == tag) and (cls is None or cls in child.classes())
                        and all(child.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())):
                    found.append(child)
                found.extend(child.find_all(tag, cls, **attrs))
        return found

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> "Node":
        found = self.find_all(tag, cls, **attrs)
        assert len(found) == 1, f"expected one <{tag} class={cls} {attrs}>, found {len(found)}"
        return found[0]


class _TreeBuilder(HTMLParser):
    VOID = {"meta", "link", "br", "img", "input", "hr", "col", "source", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in self.VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def dom(url: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(dump_dom(url))
    return builder.root


def index_rows(page: Node) -> list[Node]:
    return page.find("table", id="neurons").find("tbody").find_all("tr")


def key(row: Node) -> tuple[int, int]:
    return int(row.attrs["data-layer"]), int(row.attrs["data-neuron"])


# --- the site in a browser ------------------------------------------------------------------------------


@pytest.mark.slow
def test_index_lists_the_recorded_neurons_sorted_by_score_and_filters_by_layer(recorded, site):
    recorded_neurons = recorded.query("SELECT DISTINCT layer, neuron FROM activation_records WHERE model = ?", [MODEL])
    assert len(recorded_neurons) == 2 * 128
    page = dom(site.as_uri())
    rows = index_rows(page)
    assert sorted(map(key, rows)) == sorted(zip(recorded_neurons.layer, recorded_neurons.neuron))
    assert page.find("body").attrs.get("data-ready") == "1"  # the script ran

    # Default order (set by the script; the HTML is written in layer/neuron order): best score descending,
    # neurons without a score after them in layer/neuron order.
    best = recorded.query("SELECT layer, neuron, max(score_top_and_random) AS score FROM scores WHERE model = ? "
                          "GROUP BY layer, neuron HAVING score IS NOT NULL ORDER BY score DESC", [MODEL])
    expected_top = list(zip(best.layer, best.neuron))
    assert expected_top == [(1, 7), (1, 0), (1, 5)]
    assert [key(r) for r in rows[:3]] == expected_top
    assert [key(r) for r in rows[3:]] == sorted(set(map(key, rows)) - set(expected_top))
    score_header = next(th for th in page.find_all("th") if th.attrs.get("data-key") == "score")
    assert score_header.attrs.get("aria-sort") == "descending"
    assert rows[1].find("td", cls="expl").text() == 'the words "<b>cat</b>" & dog'  # neuron 0's best, as text
    assert rows[1].find_all("b") == []

    # Sorting by another column, and the layer filter, through the URL.
    by_max = index_rows(dom(site.as_uri() + "?sort=max&dir=asc&layer=0"))
    stats = recorded.query("SELECT neuron, max FROM neuron_stats WHERE model = ? AND layer = 0 ORDER BY max, neuron", [MODEL])
    shown = [r for r in by_max if "hidden" not in r.attrs]
    assert [key(r) for r in shown] == [(0, int(n)) for n in stats.neuron]
    assert all(key(r)[0] == 1 for r in by_max if "hidden" in r.attrs) and len(by_max) - len(shown) == 128


@pytest.mark.slow
def test_a_neuron_page_shows_its_explanations_scores_and_heat_maps(recorded, site):
    page = dom((site.parent / "neurons" / "1-0.html").as_uri())
    best = recorded.query("SELECT explanation FROM scores WHERE model = ? AND layer = 1 AND neuron = 0 "
                          "ORDER BY score_top_and_random DESC LIMIT 1", [MODEL]).explanation[0]
    assert page.find(id="best-explanation").find("span", cls="explanation").text() == best == 'the words "<b>cat</b>" & dog'
    table_rows = page.find("table", id="explanations").find("tbody").find_all("tr")
    assert [r.find("span", cls="explanation").text() for r in table_rows] == [
        'the words "<b>cat</b>" & dog', "animals and the places they sleep"]
    assert [r.find_all("td")[4].text() for r in table_rows] == ["0.750", "0.250"]

    # The peak: exactly one, in the real row of top record 0, at the argmax computed from the store.
    excerpt, position = _peak(recorded, 1, 0)
    peaks = page.find_all("span", cls="peak")
    assert len(peaks) == 1
    top0 = page.find("div", cls="excerpt", data_kind="top", data_rank="0")
    assert top0.attrs["data-excerpt"] == str(excerpt)
    real = top0.find("div", cls="real").find_all("span", cls="tok")
    assert real.index(peaks[0]) == position
    assert peaks[0].text() == HOSTILE_SHOWN  # escaped, newline visible
    assert peaks[0].attrs["style"] == "--a:1.0"  # the neuron's max: full intensity
    activations = recorded.query("SELECT activations FROM activation_records WHERE model = ? AND layer = 1 AND neuron = 0 "
                                 "AND kind = 'top' AND rank = 0", [MODEL]).activations[0]
    assert np.allclose([float(s.attrs["data-activation"]) for s in real], activations, rtol=1e-5, atol=1e-6)

    # Simulated rows under exactly the test-split excerpts that were simulated (top #3, random #2), same tokens.
    simulated = {(x.attrs["data-kind"], x.attrs["data-rank"]): x for x in page.find_all("div", cls="excerpt")
                 if x.find_all("div", cls="sim")}
    assert set(simulated) == {("top", "3"), ("random", "2")}
    for (kind, _), excerpt_node in simulated.items():
        assert "test" in excerpt_node.classes()
        real_toks = excerpt_node.find("div", cls="real").find_all("span", cls="tok")
        sim_toks = excerpt_node.find("div", cls="sim").find_all("span", cls="tok")
        assert [float(s.attrs["data-simulated"]) for s in sim_toks] == simulated_values(kind)
        assert [s.text() for s in sim_toks] == [s.text() for s in real_toks]
        assert [s.attrs["style"] for s in sim_toks][:3] == ["--a:0.0", f"--a:{0.1 if kind == 'top' else 0.05}",
                                                            f"--a:{0.2 if kind == 'top' else 0.1}"]
    n_records = recorded.query("SELECT kind, count(*) AS n FROM activation_records WHERE model = ? AND layer = 1 "
                               "AND neuron = 0 AND kind IN ('top', 'random') GROUP BY kind", [MODEL])
    assert {k: len(page.find(id=k).find_all("div", cls="excerpt")) for k in ("top", "random")} == dict(
        zip(n_records.kind, n_records.n))

    # A neuron recorded but never explained still has a page.
    unexplained = dom((site.parent / "neurons" / "0-17.html").as_uri())
    assert unexplained.find(id="best-explanation").text() == "not explained yet"
    assert len(unexplained.find_all("span", cls="peak")) == 1


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


@pytest.mark.slow
def test_screenshots_of_the_index_and_a_neuron_page(site):
    for name, url, size in [("viewer_index.png", site.as_uri(), (1400, 900)),
                            ("viewer_neuron.png", (site.parent / "neurons" / "1-0.html").as_uri(), (1400, 1600))]:
        path = screenshot(url, ARTIFACTS / name, size=size)
        assert path.stat().st_size > 10_000 and _png_size(path) == size


# --- serving ---------------------------------------------------------------------------------------------


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


@pytest.fixture(scope="module")
def served(recorded):
    """The viewer serving the recorded store (read-only, rendered per request) on 127.0.0.1."""
    server = make_server(Viewer(recorded), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _raw_status(base: str, path: str) -> int:
    """The status for a raw request path (no client-side normalisation of '..')."""
    import http.client

    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", path)
    status = connection.getresponse().status
    connection.close()
    return status


@pytest.mark.slow
def test_every_recorded_neuron_is_served_from_the_store_and_nothing_else(recorded, served):
    # A neuron recorded but never explained (the static export has no page for it): its statistics and its
    # top excerpt's peak token, as the store holds them.
    stats = recorded.query("SELECT max FROM neuron_stats WHERE model = ? AND layer = 0 AND neuron = 42", [MODEL])
    row = recorded.query("""SELECT e.tokens, r.activations FROM activation_records r JOIN excerpts e
                            USING (model, revision, excerpt_id) WHERE r.model = ? AND r.layer = 0 AND r.neuron = 42
                            AND r.kind = 'top' AND r.rank = 0""", [MODEL]).iloc[0]
    peak_token = row.tokens[int(np.argmax(np.asarray(row.activations)))]
    page = dom(f"{served}/{MODEL}/neurons/0-42.html")
    assert page.find(id="best-explanation").text() == "not explained yet"
    [peak] = page.find_all("span", cls="peak")
    assert peak.text() == peak_token.replace("\n", "↵") or peak.text() == "∅"
    assert f"{stats['max'][0]:.4f}" in page.find(id="stats").text()
    screenshot(f"{served}/{MODEL}/neurons/0-42.html", ARTIFACTS / "served_unexplained_neuron.png", size=(1400, 1400))

    # Paths outside the site answer 404, traversal included; so do neurons and models that do not exist.
    for path in ("/../autointerp.duckdb", "/%2e%2e/autointerp.duckdb", f"/{MODEL}/../../autointerp.duckdb",
                 f"/{MODEL}/neurons/../../../etc/passwd", "/autointerp.duckdb", "/ghost/index.html",
                 f"/{MODEL}/neurons/0-100000.html", f"/{MODEL}/layers/7.html", f"/{MODEL}/secret.html"):
        assert _raw_status(served, path) == 404, path
    assert _raw_status(served, f"/{MODEL}/index.html") == 200


@pytest.mark.slow
def test_the_served_index_searches_explanations_and_filters_by_layer_and_score(recorded, served):
    def visible(query: str) -> list[tuple[int, int]]:
        page = dom(f"{served}/{MODEL}/index.html?{query}")
        return sorted(key(r) for r in index_rows(page) if "hidden" not in r.attrs)

    assert visible("") == [(1, 0), (1, 3), (1, 5), (1, 7)]  # the explained neurons
    assert visible("q=verbs+of") == [(1, 7)]  # text search, case-insensitive
    assert visible("q=CAT") == [(1, 0)]
    assert visible("min=0.5") == [(1, 0), (1, 7)]  # best scores 0.75 and 0.9
    assert visible("min=-0.5&max=0.5") == [(1, 5)]  # -0.2; neuron 3 has no score
    assert visible("layer=0") == []
    screenshot(f"{served}/{MODEL}/index.html?q=cat", ARTIFACTS / "served_index_search.png", size=(1400, 700))


@pytest.mark.slow
def test_a_layer_page_lists_every_neuron_and_plots_its_distributions(recorded, served):
    page = dom(f"{served}/{MODEL}/layers/1.html")
    rows = page.find("table", id="layer-neurons").find("tbody").find_all("tr")
    assert [int(r.attrs["data-neuron"]) for r in rows] == list(range(128))
    for plot in ("score-histogram", "max-histogram"):
        assert page.find(id=plot).attrs["src"].startswith("data:image/png;base64,")
    assert rows[7].find("td", cls="expl").text() == "verbs of motion"
    screenshot(f"{served}/{MODEL}/layers/1.html", ARTIFACTS / "served_layer.png", size=(1400, 1000))


def test_autointerp_view_builds_then_serves_and_no_serve_only_builds(recorded, site, capsys):
    shutil.rmtree(site.parent)
    assert main(["view", "--model", MODEL, "--no-serve"]) == 0
    assert str(site) in capsys.readouterr().out and site.exists()

    command = [str(Path(sys.executable).parent / "autointerp"), "view", "--model", MODEL, "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        url = None
        for line in process.stdout:  # the site path, then the URL it serves
            match = re.match(r"serving (http://127\.0\.0\.1:\d+/\S+)", line)
            if match:
                url = match.group(1)
                break
        assert url and url.endswith(f"/{MODEL}/index.html"), process.stderr.read() if process.poll() else url
        status, body = _get(url)
        assert status == 200 and b'id="neurons"' in body and b'href="layers/0.html"' in body
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- Dagster ---------------------------------------------------------------------------------------------


def test_neuron_viewer_asset_materializes_with_metadata(recorded):
    from orchestration.definitions import RESOURCES, defs
    from assets.view import neuron_viewer

    index = site_dir(MODEL) / "index.html"
    before = index.stat().st_mtime_ns if index.exists() else None
    with dg.DagsterInstance.get() as instance:  # the instance the CLI run registered the partitions in
        with dg.partition_loading_context(dynamic_partitions_store=instance):
            parents = defs.resolve_asset_graph().get_parent_partition_keys_for_child(
                MODEL, dg.AssetKey("scores"), dg.AssetKey("neuron_viewer"))
        assert set(parents.partitions_subset.get_partition_keys()) == {f"{layer}|{MODEL}" for layer in range(3)}

        result = dg.materialize([neuron_viewer], partition_key=MODEL, instance=instance, resources=RESOURCES)
        assert result.success
        event = result.get_asset_materialization_events()[0]
        metadata = {k: v.value for k, v in event.materialization.metadata.items()}
        assert metadata["path"] == str(index.resolve())
        assert metadata["neurons"] == 4 and metadata["explained"] == 4  # pages for the explained neurons
        assert metadata["revision"] == queries.latest_revision(recorded, MODEL)
        assert index.stat().st_mtime_ns != before  # rebuilt
        assert instance.get_materialized_partitions(dg.AssetKey("neuron_viewer")) == {MODEL}

        # A configured model with nothing recorded: the step fails with the store's message.
        instance.add_dynamic_partitions("models", ["tiny-llama"])
        failed = dg.materialize([neuron_viewer], partition_key="tiny-llama", instance=instance, resources=RESOURCES,
                                raise_on_error=False)
        assert not failed.success
        failure = next(e for e in failed.all_events if e.is_step_failure).step_failure_data.error
        assert "model 'tiny-llama' is not in the store" in (failure.cause or failure).message


# --- bad input and atomicity -----------------------------------------------------------------------------


def test_a_model_with_nothing_recorded_gets_a_clear_error_and_no_site(recorded, tmp_path, capsys):
    out = tmp_path / "site"
    with pytest.raises(AutointerpError, match=r"model 'ghost' is not in the store .*autointerp run --model ghost"):
        build_site(recorded, "ghost", out)
    copy = Store(tmp_path / "copy.duckdb")
    shutil.copy(recorded.path, copy.path)
    revision = queries.latest_revision(recorded, MODEL)
    row = copy.query("SELECT * FROM models WHERE model = ?", [MODEL]).assign(model="empty")
    copy.replace([Replacement("models", {"model": "empty"}, row)])  # registered, never recorded
    with pytest.raises(AutointerpError, match=f"model 'empty' @ {re.escape(revision)} has no explained neurons"):
        build_site(copy, "empty", out)
    with pytest.raises(AutointerpError, match=f"model 'empty' @ {re.escape(revision)} has no activation records"):
        build_site(copy, "empty", out, only_explained=False)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".site")]

    assert main(["view", "--model", "ghost", "--no-serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model 'ghost' is not in the store") and "Traceback" not in err


def test_by_default_only_explained_neurons_get_a_page(recorded, tmp_path):
    index = build_site(recorded, MODEL, tmp_path / "site")
    explained = recorded.query("SELECT DISTINCT layer, neuron FROM explanations WHERE model = ?", [MODEL])
    pages = sorted(p.name for p in (index.parent / "neurons").glob("*.html"))
    assert len(explained) > 0 and len(pages) == len(explained)
    assert pages == sorted(Path(page_name(int(r.layer), int(r.neuron))).name for r in explained.itertuples())


def test_a_failed_rebuild_leaves_the_previous_site_whole(recorded, tmp_path):
    copy = Store(tmp_path / "copy.duckdb")
    shutil.copy(recorded.path, copy.path)
    out = tmp_path / "site"
    index = build_site(copy, MODEL, out, only_explained=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # Layer 1's records point at an excerpt that is gone: rendering fails after layer 0's pages were written.
    excerpt, _ = _peak(copy, 1, 0)
    copy.execute("DELETE FROM excerpts WHERE model = ? AND excerpt_id = ?", [MODEL, excerpt])
    with pytest.raises(AutointerpError, match=f"excerpt {excerpt} is not in the excerpts table"):
        build_site(copy, MODEL, out, only_explained=False)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and index.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site")]  # no staging left behind


def test_judge_scores_rank_explanations_and_show_on_every_page(recorded, tmp_path):
    """With detection and fuzzing AUROCs stored, the neuron page shows them beside the simulation scores, the best
    explanation is the best-ranked by scoring.rank_by (not by simulation), and the layer page has their
    histograms; the index lists them and sorts by the ranking score."""
    copy = Store(tmp_path / "copy.duckdb")
    shutil.copy(recorded.path, copy.path)
    revision = queries.latest_revision(copy, MODEL)
    # Neuron 0: sample 0 simulates worse (0.25 vs 0.75) but the judges prefer it.
    rows = [{"model": MODEL, "revision": revision, "layer": 1, "neuron": 0, "explainer": EXPLAINER,
             "scorer": f"{kind}:test", "sample": sample, "explanation": text, "auroc": auroc,
             "balanced_accuracy": 0.5, "n_positive": 1, "n_negative": 1, "excerpt_ids": [1, 2],
             "labels": [True, False], "log_odds": [1.0, 0.0], "reason": None}
            for kind, sample, text, auroc in (("detection", 0, EXPLAINED[0][2], 0.875), ("fuzzing", 0, EXPLAINED[0][2], 0.625),
                                              ("detection", 1, EXPLAINED[1][2], 0.5), ("fuzzing", 1, EXPLAINED[1][2], 0.25))]
    from autointerp.store.schema import table

    copy.replace([Replacement("judge_scores", {"model": MODEL, "revision": revision}, table("judge_scores", rows=rows))])
    viewer = Viewer(copy, rank_by=("detection", "fuzzing"))
    page = viewer.render(f"/{MODEL}/neurons/1-0.html")
    best = re.search(r'id="best-explanation".*?<span class="explanation">(.*?)</span>', page, re.S).group(1)
    assert best == EXPLAINED[0][2]  # judged best: mean AUROC 0.75 against 0.375
    assert "0.875" in page and "0.625" in page and "0.250" in page
    layer = viewer.render(f"/{MODEL}/layers/1.html")
    assert 'id="detection-histogram"' in layer and 'id="fuzzing-histogram"' in layer
    index = viewer.render(f"/{MODEL}/index.html")
    row = re.search(r'<tr data-layer="1" data-neuron="0".*?>', index, re.S).group(0)
    # the index lists the chosen explanation (sample 1) with its ranking score, the mean of its two AUROCs
    assert 'data-score="0.375"' in row and 'data-detection="0.5"' in row and 'data-simulation="0.75"' in row
    # ranked by simulation (rank_by: [simulation]) the other explanation is the best again
    by_simulation = Viewer(copy, rank_by=("simulation",)).render(f"/{MODEL}/neurons/1-0.html")
    assert re.search(r'<span class="explanation">(.*?)</span>', by_simulation.split('id="best-explanation"')[1],
                     re.S).group(1) == str(markupsafe.escape(EXPLAINED[1][2]))


def test_the_intruder_score_shows_on_the_neuron_page_and_in_the_index(recorded, tmp_path):
    copy = Store(tmp_path / "copy.duckdb")
    shutil.copy(recorded.path, copy.path)
    revision = queries.latest_revision(copy, MODEL)
    from autointerp.store.schema import table

    rows = [{"model": MODEL, "revision": revision, "layer": 1, "neuron": 0, "scorer": "intruder:test",
             "accuracy": 0.75, "p_intruder": 0.625, "n_trials": 4, "n_shown": 5, "intruders": [0, 1, 2, 3],
             "picks": [0, 1, 2, 4], "excerpt_ids": list(range(20)), "reason": None},
            {"model": MODEL, "revision": revision, "layer": 1, "neuron": 1, "scorer": "intruder:test",
             "accuracy": None, "p_intruder": None, "n_trials": 0, "n_shown": 5, "intruders": [], "picks": [],
             "excerpt_ids": [], "reason": "no silent excerpt"}]
    copy.replace([Replacement("intruder_scores", {"model": MODEL, "revision": revision, "layer": [1]},
                              table("intruder_scores", rows=rows))])
    viewer = Viewer(copy)
    scored = re.search(r'<p id="intruder">(.*?)</p>', viewer.render(f"/{MODEL}/neurons/1-0.html"), re.S).group(1)
    assert "<b>0.75</b> of 4 trials" in scored and "0.62" in scored
    assert "no intruder trial" in viewer.render(f"/{MODEL}/neurons/1-1.html")
    assert "not scored yet" in viewer.render(f"/{MODEL}/neurons/0-0.html")
    index = viewer.render(f"/{MODEL}/index.html")
    assert 'data-intruder="0.75"' in re.search(r'<tr data-layer="1" data-neuron="0".*?>', index, re.S).group(0)
    static = build_site(copy, MODEL, tmp_path / "site", only_explained=False)  # the static site says the same
    assert 'data-intruder="0.75"' in static.read_text() and "<b>0.75</b> of 4 trials" in (
        tmp_path / "site" / "neurons" / "1-0.html").read_text()
