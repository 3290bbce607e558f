"""The CLI's smaller commands: registering models, export/import, the viewer."""

from __future__ import annotations

import argparse
import json
import time

from autointerp.config import Config, parse_config
from autointerp.errors import AutointerpError
from autointerp.progress import format_duration
from autointerp.store import Store, queries
from autointerp.subject import Subject
from autointerp.subject.added import add_model, registry_path, remove_model
from orchestration.cli.run import dagster_instance, parse_layers
from orchestration.partitions import register_model


def manage_models(config: Config, args: argparse.Namespace) -> None:
    """`models add` checks that the source loads before registering it; `models remove` keeps its rows."""
    if args.models_command == "remove":
        if not remove_model(args.name):
            raise AutointerpError(f"'{args.name}' was not added with `autointerp models add` "
                                  f"(models in {config.path} are removed by editing it)")
        print(f"removed {args.name} from {registry_path()}; its rows stay in the store")
        return
    if any(spec.name == args.name for spec in config.models):
        raise AutointerpError(f"a model named '{args.name}' already exists (in {config.path} or {registry_path()})")
    entry = {"name": args.name, "source": args.source, "dtype": args.dtype}
    spec = parse_config({"models": [entry]}, config.path).models[0]  # the same validation as the config's models
    subject = Subject.of(spec, config.base_dir)
    info, revision = subject.info, subject.revision
    add_model(args.name, args.source, args.dtype)
    register_model(dagster_instance(), args.name, info.n_layers)
    print(f"added {args.name}: {info.architecture}, {info.n_layers} layers x {info.n_neurons} neurons, "
          f"revision {revision}\nrecord it with: autointerp run --model {args.name}")


def _viewer_settings(args: argparse.Namespace) -> dict:
    """The config's `scoring.rank_by` and `search` for the viewer; the viewer reads the store alone, so a config it
    cannot read leaves the defaults (said once)."""
    from autointerp.config import ScoringSpec, load_config
    from autointerp.config.schema import SearchSpec
    from autointerp.errors import AutointerpError

    try:
        config = load_config(args.config)
        return {"rank_by": config.scoring.rank_by, "search": config.search, "base_dir": config.base_dir}
    except AutointerpError as exc:
        print(f"warning: ranking by {' + '.join(ScoringSpec().rank_by)}: {exc}")
        return {"rank_by": ScoringSpec().rank_by, "search": SearchSpec()}


def data_command(args: argparse.Namespace) -> None:
    """`export`, `import`, `view` and `store` work on the store alone: an imported model has no config entry."""
    store = Store.from_home(read_only=args.command not in ("import", "store"))  # readers work on read-only media
    if args.command == "store":
        _copy(store, args)
    elif args.command == "view":
        from autointerp.names import check_model_name
        from autointerp.viewer.server import view

        for model in args.model or []:
            check_model_name(model, "autointerp view --model")
        view(store, args.model, args.port, not args.no_serve, args.open, only_explained=not args.all_neurons,
             **_viewer_settings(args))
    elif args.command == "import":
        from autointerp.io.imports import import_explanations, import_neuron_records

        result = (import_neuron_records(store, args.model, args.path) if args.format == "neuron-records"
                  else import_explanations(store, args.model, args.path, source=args.source))
        rows = ", ".join(f"{n:,} {table}" for table, n in result.rows.items())
        print(f"imported {result.neurons} neurons from {result.files} file(s) as {result.model} @ {result.revision}: {rows}")
    else:
        _export(store, args)


def _copy(store: Store, args: argparse.Namespace) -> None:
    from autointerp.store.copy import copy_store, target_store
    from autointerp.store.lake import LakeStore

    target = target_store(args.to, args.data_path, store.home)
    started = time.monotonic()
    copied = copy_store(store, target)
    print(f"copied {sum(c.rows for c in copied):,} rows from {store} to {target} in "
          f"{format_duration(time.monotonic() - started)}; row counts and checksums equal:")
    for c in copied:
        print(f"  {c.table:<20} {c.rows:>10,} rows  checksum {c.checksum}")
    if isinstance(target, LakeStore):
        print(f"to use it, put in the config:\n  store: {{kind: ducklake, catalog: '{target.catalog}', "
              f"data_path: '{target.path}'}}")
    else:
        print(f"to use it: AUTOINTERP_HOME={target.home}" + ("" if target.path.name == "autointerp.duckdb" else
              " with the file renamed to autointerp.duckdb"))


def _export(store: Store, args: argparse.Namespace) -> None:
    if not store.exists():
        raise AutointerpError(f"no store at {store}: nothing to export")
    if args.format == "parquet":
        from autointerp.io.parquet import export_parquet

        counts = export_parquet(store, args.out)
        print(f"wrote {len(counts)} Parquet files to {args.out}: " + ", ".join(f"{t} ({n:,} rows)" for t, n in counts.items()))
        return
    from autointerp.io.export import export_explanations, export_neuron_records

    models = [args.model] if args.model else queries.models(store)
    if len(models) != 1:
        raise AutointerpError(f"--model is needed: the store has models {', '.join(models) or '(none)'}")
    row = queries.current_model(store, models[0])
    layers = parse_layers(args.layers, int(row["n_layers"])) if args.layers else None
    records = export_neuron_records(store, models[0], args.out, row["revision"], layers)
    explained = export_explanations(store, models[0], args.out, row["revision"], layers)
    print(f"{models[0]} @ {row['revision']}: wrote {len(records)} neuron records and {len(explained)} explanation "
          f"files under {args.out}")


def train_sae(config: Config, command: str) -> None:
    """`train-sae`: the demo SAE (config `sae_training`) as the `sae_job`, so it shows in the Dagster UI with its
    training metrics."""
    from orchestration.launch import JobLauncher
    from orchestration.definitions import build_definitions, resources

    check_sae_training(config)
    JobLauncher(build_definitions(resources(str(config.path))), dagster_instance(), command)(["sae_dictionary"])
    spec = config.sae_training
    out = (config.base_dir / spec.out).resolve()
    print(f"SAE for layers {', '.join(map(str, spec.layers))} of {spec.model or config.models[0].name} in {out}\n"
          f"explain its latents with a model whose units are `{{kind: sae, path: {spec.out}}}` (docs/sae.md)")


def train_judge(config: Config, command: str) -> None:
    """`train-judge`: the trained judge (config `judge_training`) as the `judge_job`, after the excerpts of its model
    (tokenized once, kept in the store), so it shows in the Dagster UI with its training and held-out metrics."""
    from orchestration.launch import JobLauncher
    from orchestration.definitions import build_definitions, resources

    name = config.judge_training.model or config.models[0].name
    instance = dagster_instance()
    register_model(instance, name, Subject.of(config.model(name), config.base_dir).info.n_layers)
    materialize = JobLauncher(build_definitions(resources(str(config.path))), instance, command)
    materialize(["excerpts"], partition_key=name)
    materialize(["trained_judge"])
    out = (config.base_dir / config.judge_training.out).resolve()
    info = json.loads((out / "judge.json").read_text())
    held = info["held_out"]
    print(f"trained judge in {out}: {info['steps']} steps in {format_duration(info['seconds'])}; valid correlation "
          f"{info['valid']['correlation']:.3f}; held-out families ({held['rules']} rules): true explanation above its "
          f"near-misses {held['above_near_misses']:.0%}, above the token list {held['above_token_list']:.0%}\n"
          f"use it: simulator: {{kind: trained, path: {config.judge_training.out}}} (docs/method.md s.11)")


def check_sae_training(config: Config) -> None:
    """What `sae_training` asks that only the model and the disk can refuse, refused before training starts
    (the config's own checks cannot load a model)."""
    spec = config.sae_training
    name = spec.model or config.models[0].name
    n_layers = Subject.of(config.model(name), config.base_dir).info.n_layers
    beyond = [layer for layer in spec.layers if layer >= n_layers]
    if beyond:
        raise AutointerpError(f"{config.path}: sae_training.layers {beyond}: model '{name}' has layers "
                              f"0-{n_layers - 1}")
    out = (config.base_dir / spec.out).resolve()
    if out.exists() and not out.is_dir():
        raise AutointerpError(f"{config.path}: sae_training.out {out} is a file; it must be a directory")
