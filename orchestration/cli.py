"""`autointerp`: run the stages through Dagster, so every run shows in the Dagster UI.

    autointerp run --model NAME --layers 0,2-4 --until score
    autointerp models
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from autointerp.config import Config, load_config
from autointerp.errors import AutointerpError
from autointerp.store import Store, default_home

# Each stage and the assets it materializes, in pipeline order.
STAGES = {
    "record": ["activation_records", "neuron_stats"],
    "explain": ["explanations"],
    "simulate": ["simulations"],
    "score": ["scores"],
}


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """'all' or a comma list of layers and ranges: '0,2-4' -> [0, 2, 3, 4]."""
    if spec.strip() == "all":
        return list(range(n_layers))
    layers: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            lo, _, hi = part.partition("-")
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise AutointerpError(f"--layers '{spec}': '{part}' is not a layer number or a range like 2-4") from None
        if first > last:
            raise AutointerpError(f"--layers '{spec}': range '{part}' runs backwards")
        layers.update(range(first, last + 1))
    outside = sorted(layer for layer in layers if not 0 <= layer < n_layers)
    if outside:
        raise AutointerpError(f"--layers '{spec}': the model has layers 0-{n_layers - 1}; no layer {outside[0]}")
    return sorted(layers)


def dagster_instance():
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        home = (default_home() / "dagster").resolve()
        home.mkdir(parents=True, exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.get()


def run(config: Config, models: Sequence[str], layer_spec: str, until: str) -> None:
    import dagster as dg

    from autointerp.subject import describe_model, resolve_source
    from orchestration.definitions import ASSETS, CHECKS, RESOURCES
    from orchestration.partitions import contiguous_ranges, model_layer_key, register_model

    instance = dagster_instance()
    print(f"Dagster instance: {os.environ['DAGSTER_HOME']}  (see the runs with: dagster dev -w workspace.yaml)")
    plans = []
    for name in models:  # validate everything before the first run starts
        spec = config.model(name)
        info = describe_model(resolve_source(spec.source, config.path.parent))
        plans.append((name, info, parse_layers(layer_spec, info.n_layers)))
    definitions = [*ASSETS, *CHECKS]
    stages = list(STAGES)[: list(STAGES).index(until) + 1]
    keys = [key for stage in stages for key in STAGES[stage]]
    for name, info, layers in plans:
        register_model(instance, name, info.n_layers)
        print(f"{name}: {info.architecture}, {info.n_layers} layers x {info.n_neurons} neurons; "
              f"layers {layers}; stages {', '.join(stages)}")
        _materialize(dg, definitions, RESOURCES, instance, ["excerpts"], partition_key=name)
        for first, last in contiguous_ranges(layers):
            # One run per contiguous range of layers: a single forward pass records all of them, and the
            # later stages follow in the same run once the blocking checks before them pass.
            _materialize(dg, definitions, RESOURCES, instance, keys, tags={
                "dagster/asset_partition_range_start": str(model_layer_key(name, first)),
                "dagster/asset_partition_range_end": str(model_layer_key(name, last)),
            })
        print_summary(Store.from_home(), name, layers)
        if "score" in stages:
            print_scores(Store.from_home(), name, layers)


def _materialize(dg, definitions, resources, instance, keys: list[str], partition_key: str | None = None,
                 tags: dict[str, str] | None = None) -> None:
    selection = dg.AssetSelection.assets(*keys) | dg.AssetSelection.checks_for_assets(*keys)
    result = dg.materialize(definitions, selection=selection, instance=instance, resources=resources,
                            partition_key=partition_key, tags=tags, raise_on_error=False)
    if not result.success:
        raise AutointerpError(_failure_message(result))


def _failure_message(result) -> str:
    """The user's error, not Dagster's wrapping of it."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = event.step_failure_data.error
            while error.cause is not None and "AutointerpError" not in error.cls_name and error.cls_name.startswith("Dagster"):
                error = error.cause
            return f"{event.step_key} failed: {error.message.strip()}"
    return f"run {result.run_id} failed"


def print_summary(store: Store, model: str, layers: list[int]) -> None:
    revision = store.latest_revision(model)
    frame = store.query(
        """SELECT s.layer, count(*) AS neurons, any_value(s.count) AS tokens,
                  round(avg(s.frac_positive), 3) AS mean_frac_positive, round(max(s.max), 2) AS max_activation,
                  (SELECT count(*) FROM activation_records r WHERE r.model = s.model AND r.revision = s.revision
                     AND r.layer = s.layer) AS records
           FROM neuron_stats s WHERE s.model = ? AND s.revision = ? AND s.layer IN (SELECT unnest(?::INTEGER[]))
           GROUP BY s.model, s.revision, s.layer ORDER BY s.layer""", [model, revision, layers])
    print(f"\n{model} @ {revision} in {store.path}:")
    print(frame.to_string(index=False))


def print_scores(store: Store, model: str, layers: list[int]) -> None:
    frame = store.query(
        """SELECT layer, neuron, round(score_top_and_random, 3) AS score, round(score_random_only, 3) AS random_only,
                  explanation
           FROM scores WHERE model = ? AND revision = ? AND layer IN (SELECT unnest(?::INTEGER[]))
           ORDER BY layer, neuron, sample""", [model, store.latest_revision(model), layers])
    print(f"\nExplanations and scores (correlation of simulated with real activations, METHOD.md s.6):")
    with pd.option_context("display.max_colwidth", 90, "display.width", 160):
        print(frame.to_string(index=False))


def list_models(config: Config) -> None:
    store = Store.from_home()
    for spec in config.models:
        revision = store.latest_revision(spec.name) if store.path.exists() else None
        print(f"{spec.name}\t{spec.source}\t{revision or 'not recorded yet'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autointerp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: $AUTOINTERP_CONFIG or the repository's autointerp.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="materialize the stages for a model's layers")
    run_parser.add_argument("--model", action="append", help="configured model name (repeatable; default: all)")
    run_parser.add_argument("--layers", default="all", help="'all' (default) or e.g. 0,2-4")
    run_parser.add_argument("--until", default="score", choices=list(STAGES), help="last stage to run (default: score)")
    commands.add_parser("models", help="list configured models and their recorded revision")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.command == "models":
            list_models(config)
        else:
            run(config, args.model or [m.name for m in config.models], args.layers, args.until)
    except AutointerpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
