"""`autointerp`: run the stages through Dagster, so every run shows in the Dagster UI.

    autointerp run --model NAME --layers 0,2-4 --until score
    autointerp models
    autointerp view --model NAME [--port 8000] [--no-serve] [--open]
    autointerp export --format neuron-explainer|parquet --out DIR [--model NAME] [--layers 0,2-4]
    autointerp import --format neuron-records|explanations PATH --model NAME
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd

from autointerp.config import Config, load_config
from autointerp.errors import AutointerpError
from autointerp.registry import add_model, read_registry, registry_path, remove_model
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
        os.environ["DAGSTER_HOME"] = str((default_home() / "dagster").resolve())
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():  # these machines are offline: no telemetry, no sign-up dialog in the UI
        settings.write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    return dg.DagsterInstance.get()


def run(config: Config, models: Sequence[str], layer_spec: str, until: str) -> None:
    import dagster as dg

    from autointerp.subject import describe_model, resolve_source
    from orchestration.definitions import ASSETS, CHECKS, RESOURCES
    from orchestration.partitions import contiguous_ranges, model_layer_key, register_model

    started = time.monotonic()
    plans = []
    for name in models:  # validate everything before the first run starts
        spec = config.model(name)
        info = describe_model(resolve_source(spec.source, config.path.parent))
        plans.append((name, info, parse_layers(layer_spec, info.n_layers)))
    instance = dagster_instance()
    print(f"Dagster instance: {os.environ['DAGSTER_HOME']}  (see the runs with: dagster dev -w workspace.yaml)")
    definitions = [*ASSETS, *CHECKS]
    stages = list(STAGES)[: list(STAGES).index(until) + 1]
    for name, info, layers in plans:
        register_model(instance, name, info.n_layers)
        explained = explain_layers(config, layers) if until != "record" else []
        print(f"{name}: {info.architecture}, {info.n_layers} layers x {info.n_neurons} neurons; "
              f"recording layers {_ranges_text(layers)}; stages {', '.join(stages)}"
              + (f"; explaining layers {_ranges_text(explained)} (neurons.layers)" if until != "record" else ""))
        _materialize(dg, definitions, RESOURCES, instance, ["excerpts"], partition_key=name)
        # One run per contiguous range of layers: a single forward pass records all of them (and stops after
        # the deepest). The LLM stages then run per range of the layers to explain, in this process, so a
        # local LLM is loaded once.
        for keys, chosen in ((STAGES["record"], layers),
                             ([key for stage in stages[1:] for key in STAGES[stage]], explained)):
            for first, last in contiguous_ranges(chosen) if keys else []:
                if first == last:  # a single partition: its check results are recorded per partition
                    _materialize(dg, definitions, RESOURCES, instance, keys,
                                 partition_key=str(model_layer_key(name, first)))
                    continue
                _materialize(dg, definitions, RESOURCES, instance, keys, tags={
                    "dagster/asset_partition_range_start": str(model_layer_key(name, first)),
                    "dagster/asset_partition_range_end": str(model_layer_key(name, last)),
                })
        print_summary(Store.from_home(), name, layers)
        if "score" in stages and explained:
            print_scores(Store.from_home(), name, explained)
            _materialize(dg, definitions, RESOURCES, instance, ["neuron_viewer"], partition_key=name)
            from autointerp.viewer import site_dir

            print(f"\nNeuron viewer: {(site_dir(name) / 'index.html').resolve()}\n"
                  f"  serve it with: autointerp view --model {name}   (http://127.0.0.1:8000)")
    from autointerp.progress import format_duration

    print(f"\ndone in {format_duration(time.monotonic() - started)}")


def explain_layers(config: Config, layers: list[int]) -> list[int]:
    """The recorded layers whose neurons are explained: `neurons.layers` of the config, or all of them."""
    from autointerp.explainer import layer_selected

    return [layer for layer in layers if layer_selected(config.neurons, layer)]


def _ranges_text(layers: list[int]) -> str:
    from orchestration.partitions import contiguous_ranges

    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in contiguous_ranges(layers)) or "none"


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
    registered = {e.get("name") for e in read_registry()}
    for spec in config.models:
        revision = store.latest_revision(spec.name) if store.path.exists() else None
        origin = "registered" if spec.name in registered else "config"
        print(f"{spec.name}\t{origin}\t{spec.source}\t{revision or 'not recorded yet'}")


def manage_models(config: Config, args: argparse.Namespace) -> None:
    """`models add` checks that the source loads before registering it; `models remove` keeps its rows."""
    from autointerp.config import parse_config
    from autointerp.subject import describe_model, model_revision, resolve_source
    from orchestration.partitions import register_model

    if args.models_command == "remove":
        if not remove_model(args.name):
            raise AutointerpError(f"'{args.name}' was not added with `autointerp models add` "
                                  f"(models in {config.path} are removed by editing it)")
        print(f"removed {args.name} from {registry_path()}; its rows stay in the store")
        return
    if any(spec.name == args.name for spec in config.models):
        raise AutointerpError(f"a model named '{args.name}' already exists (in {config.path} or {registry_path()})")
    entry = {"name": args.name, "source": args.source, "dtype": args.dtype}
    parse_config({"models": [entry]}, config.path)  # the same validation as the config's models
    source = resolve_source(args.source, config.path.parent)
    info, revision = describe_model(source), model_revision(source)
    add_model(args.name, args.source, args.dtype)
    register_model(dagster_instance(), args.name, info.n_layers)
    print(f"added {args.name}: {info.architecture}, {info.n_layers} layers x {info.n_neurons} neurons, "
          f"revision {revision}\nrecord it with: autointerp run --model {args.name}")


def compare(config: Config, model: str, old: str | None, new: str | None) -> None:
    from autointerp.history import compare_revisions, revisions

    config.model(model)  # an unknown name gets the list of known ones
    store = Store.from_home()
    frame = compare_revisions(store, model, old, new)
    known = revisions(store, model)
    old, new = old or known[-2], new or known[-1]
    print(f"{model}: {old} -> {new}, {len(frame)} neurons recorded in both; "
          f"{int(frame.changed.sum())} changed what they fire on (top-excerpt overlap < 0.5)")
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(frame.round(3).to_string(index=False))


def interop(args: argparse.Namespace) -> None:
    """`export` and `import`: OpenAI neuron_explainer files and Parquet (autointerp/interop.py)."""
    from autointerp import interop as io

    store = Store.from_home()
    if args.command == "import":
        result = (io.import_neuron_records(store, args.model, args.path) if args.format == "neuron-records"
                  else io.import_explanations(store, args.model, args.path, source=args.source))
        rows = ", ".join(f"{n:,} {table}" for table, n in result.rows.items())
        print(f"imported {result.neurons} neurons from {result.files} file(s) as {result.model} @ {result.revision}: {rows}")
        return
    if not store.path.exists():
        raise AutointerpError(f"no store at {store.path}: nothing to export")
    if args.format == "parquet":
        counts = io.export_parquet(store, args.out)
        print(f"wrote {len(counts)} Parquet files to {args.out}: " + ", ".join(f"{t} ({n:,} rows)" for t, n in counts.items()))
        return
    models = [args.model] if args.model else store.query("SELECT DISTINCT model FROM models ORDER BY model").model.tolist()
    if len(models) != 1:
        raise AutointerpError(f"--model is needed: the store has models {', '.join(models) or '(none)'}")
    revision = io.resolve_revision(store, models[0], None)
    layers = parse_layers(args.layers, int(store.model_row(models[0], revision)["n_layers"])) if args.layers else None
    records = io.export_neuron_records(store, models[0], args.out, revision, layers)
    explained = io.export_explanations(store, models[0], args.out, revision, layers)
    print(f"{models[0]} @ {revision}: wrote {len(records)} neuron records and {len(explained)} explanation files "
          f"under {args.out}")


def main(argv: Sequence[str] | None = None) -> int:
    # Dagster flags the features we use as beta/preview at import; that is for developers, not users.
    warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")
    parser = argparse.ArgumentParser(prog="autointerp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: $AUTOINTERP_CONFIG or the repository's autointerp.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="materialize the stages for a model's layers")
    run_parser.add_argument("--model", action="append", help="configured model name (repeatable; default: all)")
    run_parser.add_argument("--layers", default="all", help="'all' (default) or e.g. 0,2-4")
    run_parser.add_argument("--until", default="score", choices=list(STAGES), help="last stage to run (default: score)")
    models_parser = commands.add_parser("models", help="list models; `models add NAME SOURCE` registers one")
    models_commands = models_parser.add_subparsers(dest="models_command")
    add_parser = models_commands.add_parser("add", help="register a model: it becomes partitions, no code change")
    add_parser.add_argument("name")
    add_parser.add_argument("source", help="Hub id[@revision], local directory, .gguf file or package:PKG/FILE.gguf")
    add_parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    models_commands.add_parser("remove", help="unregister a model added with `models add` (its rows stay)") \
        .add_argument("name")
    compare_parser = commands.add_parser("compare", help="explanations and scores of the same neurons across revisions")
    compare_parser.add_argument("--model", required=True)
    compare_parser.add_argument("--old", help="revision (default: the second most recent)")
    compare_parser.add_argument("--new", help="revision (default: the most recent)")
    view_parser = commands.add_parser("view", help="(re)build the neuron viewer site and serve it on 127.0.0.1")
    view_parser.add_argument("--model", action="append", help="model in the store (repeatable; default: all recorded)")
    view_parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any free port)")
    view_parser.add_argument("--no-serve", action="store_true", help="only build the site and print its path")
    view_parser.add_argument("--open", action="store_true", help="open the index in a web browser")
    view_parser.add_argument("--all-neurons", action="store_true",
                             help="a page for every recorded neuron, not only the explained ones (large)")
    export_parser = commands.add_parser("export", help="write the store as OpenAI neuron_explainer files or Parquet")
    export_parser.add_argument("--format", required=True, choices=["neuron-explainer", "parquet"])
    export_parser.add_argument("--out", required=True, help="output directory")
    export_parser.add_argument("--model", help="neuron-explainer: the model to export (default: the only one)")
    export_parser.add_argument("--layers", help="neuron-explainer: e.g. 0,2-4 (default: every recorded layer)")
    import_parser = commands.add_parser("import", help="land OpenAI neuron_explainer files as a model's rows")
    import_parser.add_argument("--format", required=True, choices=["neuron-records", "explanations"])
    import_parser.add_argument("path", help="a file, or a directory searched recursively")
    import_parser.add_argument("--model", required=True, help="the model name the rows land under")
    import_parser.add_argument("--source", default="neuron-explainer",
                               help="explanations: the explainer/simulator are named imported:SOURCE")
    args = parser.parse_args(argv)
    try:
        if args.command in ("export", "import"):  # work on the store alone: no config needed
            interop(args)
            return 0
        if args.command == "view":  # reads the store alone: imported models have no config entry
            from autointerp.viewer import view, viewable_models

            store = Store.from_home()
            view(store, args.model or viewable_models(store), args.port, not args.no_serve, args.open,
                 only_explained=not args.all_neurons)
            return 0
        config = load_config(args.config)
        if args.command == "models" and args.models_command:
            manage_models(config, args)
        elif args.command == "models":
            list_models(config)
        elif args.command == "compare":
            compare(config, args.model, args.old, args.new)
        else:
            run(config, args.model or [m.name for m in config.models], args.layers, args.until)
    except AutointerpError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever the cause wrote
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
