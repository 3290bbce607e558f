"""NeuronRecord files as OpenAI published them carry no quantile samples, and may lack random records or
statistics: such an import runs the whole pipeline, the viewer included (every page renders)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from autointerp.store import Store
from autointerp.viewer.server import Viewer
from orchestration.cli import main
from tests.conftest import WORDS


def minimal_record(layer: int, neuron: int, with_random: bool, seed: int) -> dict:
    """Only the keys their loader requires: no quantile samples, no boundaries, no moments."""
    rng = random.Random(seed)

    def record(peak: float) -> dict:
        tokens = [rng.choice(WORDS) for _ in range(16)]
        activations = [0.0] * 16
        activations[rng.randrange(16)] = peak
        return {"dataclass_name": "ActivationRecord", "tokens": tokens, "activations": activations}

    return {"dataclass_name": "NeuronRecord",
            "neuron_id": {"dataclass_name": "NeuronId", "layer_index": layer, "neuron_index": neuron},
            "most_positive_activation_records": [record(5.0 - i * 0.4) for i in range(8)],
            "random_sample": [record(0.5) for _ in range(6)] if with_random else []}


def write_records(root: Path) -> Path:
    for neuron, with_random in ((0, True), (1, False)):
        path = root / "records" / "0" / f"{neuron}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(minimal_record(0, neuron, with_random, seed=neuron)))
    return root / "records"


def test_imported_records_without_quantiles_random_records_or_stats_run_through_the_viewer(project, home, capsys):
    assert main(["import", "--format", "neuron-records", str(write_records(home)), "--model", "bare"]) == 0
    assert main(["run", "--model", "bare", "--layers", "0", "--from", "explain"]) == 0, capsys.readouterr().err
    store = Store.from_home()
    assert sorted(store.query("SELECT neuron FROM explanations WHERE model = 'bare' AND chosen").neuron) == [0, 1]
    stats = store.query("SELECT quantile_boundaries, variance FROM neuron_stats WHERE model = 'bare'")
    assert stats.quantile_boundaries.isna().all() and stats.variance.isna().all()  # what this import lacks
    site = home / "data" / "viewer" / "bare"
    assert (site / "neurons" / "0-0.html").is_file() and (site / "neurons" / "0-1.html").is_file()
    viewer = Viewer(store)  # the served pages: rendered from the store per request
    for page in ("index.html", "layers/0.html", "neurons/0-0.html", "neurons/0-1.html"):
        assert "</html>" in viewer.render(f"/bare/{page}"), page
    stats = viewer.render("/bare/neurons/0-1.html").split('id="stats"')[1].split("</dl>")[0]
    assert "nan" not in stats.lower() and stats.count("not stored") == 2  # token count and band edges


def test_the_served_viewer_answers_head_and_each_page_under_one_address_only(project, home):
    import http.client
    import threading

    from autointerp.viewer.server import make_server

    assert main(["import", "--format", "neuron-records", str(write_records(home)), "--model", "bare"]) == 0
    server = make_server(Viewer(Store.from_home(read_only=True)), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def ask(method: str, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        connection.request(method, path)
        response = connection.getresponse()
        answer = response.status, response.read()
        connection.close()
        return answer

    try:
        status, body = ask("GET", "/bare/neurons/0-1.html")
        assert status == 200 and body
        assert ask("HEAD", "/bare/neurons/0-1.html") == (200, b"")
        assert ask("HEAD", "/bare/neurons/0-9.html")[0] == 404
        for alias in ("/bare/neurons/0-01.html", "/bare/neurons/00-1.html", "/bare/neurons/0-%EF%BC%91.html",
                      "/bare/layers/00.html", "/bare/layers/%EF%BC%90.html"):  # %EF%BC%91: a full-width 1
            assert ask("GET", alias)[0] == 404, alias
    finally:
        server.shutdown()
        server.server_close()
