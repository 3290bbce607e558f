"""`dagster dev` and `dg dev` on 127.0.0.1 show the pipeline: its asset graph, partitions, checks and metadata.

One recorded project (tiny GPT-2, layers 0-1 of 3, record stage) and one `dagster dev` webserver serve the
GraphQL and the Chromium tests; its clean shutdown is a test of its own, and `dg dev` gets a short run after.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import pytest

from autointerp.store import Store
from browser import _run as run_chromium
from conftest import project_env, save_tiny_model
from orchestration.cli import main
from servers import LOOPBACK, Server, http_post_json, port_is_free, serve, wait_until_answers

pytestmark = pytest.mark.slow  # real servers and models: left out of the quick loop

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# The stages' assets and the dependencies the graph must show (the project may add more assets around them).
STAGE_DEPS = {"excerpts": set(), "activation_records": {"excerpts"}, "neuron_stats": {"excerpts"},
              "explanations": {"activation_records"}, "simulations": {"explanations"}, "scores": {"simulations"}}
GROUPS = {"excerpts": "record", "activation_records": "record", "neuron_stats": "record",
          "explanations": "explain", "simulations": "explain", "scores": "explain"}
MODEL, RECORDED_LAYERS, N_LAYERS = "tiny-gpt2", (0, 1), 3
# A closed network: no telemetry, and no "join the community" dialog over the graph.
INSTANCE_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict[str, str]:
    """A project whose record stage ran for layers 0-1: the environment that points at it."""
    root = tmp_path_factory.mktemp("dagster-ui")
    model = save_tiny_model("gpt2", root / MODEL)
    with project_env(root, {MODEL: model}, neurons={"select": "first", "count": 2}) as env:
        (root / "dagster" / "dagster.yaml").write_text(INSTANCE_YAML)
        assert main(["run", "--model", MODEL, "--layers", "0-1", "--until", "record"]) == 0
    return env


def graphql(server: Server, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    answer = json.loads(http_post_json(server.url + "/graphql", body))
    assert not answer.get("errors"), answer["errors"]
    return answer["data"]


ASSET_GRAPH = "{ assetNodes { assetKey { path } groupName isPartitioned dependencyKeys { path } } }"


def asset_graph(server: Server) -> dict[str, dict[str, Any]]:
    return {node["assetKey"]["path"][-1]: node for node in graphql(server, ASSET_GRAPH)["assetNodes"]}


def _serves_the_assets(server: Server) -> None:
    """The webserver answers before the code location has loaded: wait for the assets too."""
    wait_until_answers(server, "/server_info", 120)
    wait_until_answers(server, "/graphql?query=" + urllib.parse.quote(ASSET_GRAPH), 60,
                       ok=lambda status, body: status == 200 and b"activation_records" in body)


@pytest.fixture(scope="module")
def webserver(recorded, tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("dagster-dev") / "dagster-dev.log"
    command = lambda port: [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", LOOPBACK, "-p", str(port)]
    with serve(command, "/server_info", cwd=REPO, env={**os.environ, **recorded}, log_path=log) as server:
        _serves_the_assets(server)
        yield server


def duckdb_store(recorded: dict[str, str]) -> Store:
    return Store.from_home(recorded["AUTOINTERP_HOME"])


def test_asset_graph_runs_record_explain_simulate_score(webserver):
    nodes = asset_graph(webserver)
    assert set(STAGE_DEPS) <= set(nodes)
    deps = {name: {key["path"][-1] for key in nodes[name]["dependencyKeys"]} for name in STAGE_DEPS}
    for name, upstream in STAGE_DEPS.items():
        assert upstream <= deps[name], f"{name} depends on {deps[name]}, not on {upstream}"
    # record -> explain -> simulate -> score, and nothing skips a stage
    assert deps["scores"] & {"activation_records", "explanations"} == set()
    assert deps["simulations"] & {"activation_records"} == set()
    assert {name: nodes[name]["groupName"] for name in GROUPS} == GROUPS
    assert all(nodes[name]["isPartitioned"] for name in STAGE_DEPS)


PARTITIONS = """
query ($key: AssetKeyInput!, $partitions: [String!]!) {
  assetNodes(assetKeys: [$key]) {
    partitionKeysByDimension { name partitionKeys }
    assetPartitionStatuses {
      ... on MultiPartitionStatuses { ranges { primaryDimStartKey primaryDimEndKey
          secondaryDim { ... on DefaultPartitionStatuses { materializedPartitions failedPartitions } } } }
      ... on DefaultPartitionStatuses { materializedPartitions }
    }
    latestMaterializationByPartition(partitions: $partitions) {
      partition runId metadataEntries { label ... on IntMetadataEntry { intValue } }
    }
  }
}"""


def test_partitions_and_their_metadata(webserver, recorded):
    partitions = [f"{layer}|{MODEL}" for layer in range(N_LAYERS)]  # dimensions in alphabetical order
    [node] = graphql(webserver, PARTITIONS, {"key": {"path": ["activation_records"]},
                                             "partitions": partitions})["assetNodes"]
    assert {d["name"]: d["partitionKeys"] for d in node["partitionKeysByDimension"]} == {
        "layer": [str(layer) for layer in range(N_LAYERS)], "model": [MODEL]}
    materialized = {(layer, model)
                    for r in node["assetPartitionStatuses"]["ranges"]
                    for layer in range(int(r["primaryDimStartKey"]), int(r["primaryDimEndKey"]) + 1)
                    for model in r["secondaryDim"]["materializedPartitions"]}
    assert materialized == {(layer, MODEL) for layer in RECORDED_LAYERS}
    latest = node["latestMaterializationByPartition"]
    assert latest[2] is None  # layer 2 never recorded
    # One run recorded both layers: both partitions point at it, with the run's row count.
    assert latest[0]["runId"] == latest[1]["runId"]
    rows = {e["label"]: e.get("intValue") for e in latest[0]["metadataEntries"]}
    counted = duckdb_store(recorded).query("SELECT count(*) AS n FROM activation_records")
    assert rows["rows"] == int(counted.n[0]) > 0

    [excerpts] = graphql(webserver, PARTITIONS, {"key": {"path": ["excerpts"]}, "partitions": [MODEL]})["assetNodes"]
    assert excerpts["assetPartitionStatuses"]["materializedPartitions"] == [MODEL]
    metadata = {e["label"]: e.get("intValue") for e in excerpts["latestMaterializationByPartition"][0]["metadataEntries"]}
    stored = duckdb_store(recorded).query("SELECT count(*) AS n FROM excerpts WHERE model = ?", [MODEL])
    assert metadata["excerpts"] == int(stored.n[0]) > 0 and metadata["layers"] == N_LAYERS


CHECKS = """
query ($key: AssetKeyInput!) {
  assetNodes(assetKeys: [$key]) {
    assetChecksOrError { ... on AssetChecks { checks { name blocking executionForLatestMaterialization {
      status runId evaluation { success metadataEntries { label ... on IntMetadataEntry { intValue } } } } } } }
  }
}"""


def _checks(server: Server, asset: str) -> dict[str, dict[str, Any]]:
    [node] = graphql(server, CHECKS, {"key": {"path": [asset]}})["assetNodes"]
    return {check["name"]: check for check in node["assetChecksOrError"]["checks"]}


def test_record_checks_passed_and_explain_checks_have_not_run(webserver, recorded):
    store = duckdb_store(recorded)
    # What each check audits: every excerpt, every (layer, neuron, kind) of records, every neuron's stats.
    audited = {("excerpts", "excerpts_are_well_formed"): "SELECT count(*) FROM excerpts",
               ("activation_records", "activation_records_are_valid"):
                   "SELECT count(DISTINCT (layer, neuron, kind)) FROM activation_records",
               ("neuron_stats", "neuron_stats_are_valid"): "SELECT count(*) FROM neuron_stats"}
    for (asset, name), sql in audited.items():
        check = _checks(webserver, asset)[name]
        execution = check["executionForLatestMaterialization"]
        assert check["blocking"] and execution["status"] == "SUCCEEDED" and execution["evaluation"]["success"], check
        metadata = {e["label"]: e.get("intValue") for e in execution["evaluation"]["metadataEntries"]}
        assert metadata["rows_checked"] == int(store.query(sql).iloc[0, 0]) > 0, name
    for asset in ("explanations", "simulations", "scores"):
        for check in _checks(webserver, asset).values():
            assert check["blocking"] and check["executionForLatestMaterialization"] is None


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_asset_graph_page_in_headless_chromium(webserver):
    groups = sorted({node["groupName"] for node in asset_graph(webserver).values()})
    # The global lineage page collapses groups when there are several; `expanded` opens them
    # (group ids are "global@global:<group>" in this Dagster version).
    url = webserver.url + "/asset-groups?expanded=" + urllib.parse.quote(",".join(f"global@global:{g}" for g in groups))
    path = ARTIFACTS / "dagster-asset-graph.png"
    path.parent.mkdir(exist_ok=True)
    path.unlink(missing_ok=True)
    # One page load for the screenshot and the DOM, at a size where the graph shows whole asset cards
    # (at browser.dump_dom's default size the graph zooms out until the names are no longer drawn).
    dom = run_chromium(url, ["--dump-dom", f"--screenshot={path}", "--window-size=2400,1100"], 15000, 120).stdout
    assert _png_size(path) == (2400, 1100) and path.stat().st_size > 20_000
    assert "Global asset lineage" in dom
    assert f"{N_LAYERS} partitions" in dom  # the cards show partition counts: (model, layer) keys
    missing = [name for name in sorted(STAGE_DEPS) if name not in dom]
    assert not missing, f"the graph did not render (still loading?): no {missing} in the page"


def test_dagster_dev_stops_cleanly_on_sigint(webserver):
    report = webserver.stop()
    assert report.signal == "SIGINT" and report.returncode == 0, report
    assert not report.group_left  # the webserver, daemon and code servers went with it
    assert port_is_free(webserver.port)


def test_dg_dev_serves_the_same_project(recorded, tmp_path):
    """`dg dev` finds the code location through [tool.dg] in pyproject.toml (no workspace file)."""
    command = lambda port: [str(BIN / "dg"), "dev", "-h", LOOPBACK, "-p", str(port)]
    with serve(command, "/server_info", cwd=REPO, env={**os.environ, **recorded}, log_path=tmp_path / "dg-dev.log") as server:
        _serves_the_assets(server)
        nodes = asset_graph(server)
        assert set(STAGE_DEPS) <= set(nodes)
        assert {key["path"][-1] for key in nodes["scores"]["dependencyKeys"]} == {"simulations"}
        report = server.stop()
    assert report.signal == "SIGINT" and report.returncode == 0 and not report.group_left, report
    assert port_is_free(server.port)
