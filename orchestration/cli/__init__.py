"""`autointerp`: run the stages through Dagster, so every run shows in the Dagster UI.

    autointerp run --model NAME --layers 0,2-4 [--from record] [--until score]
    autointerp models [add NAME SOURCE | remove NAME]
    autointerp status [--model NAME] [--json]
    autointerp compare --model NAME [--old REV --new REV]
    autointerp search "TEXT" [--model NAME] [--layers 0,2-4] [--k 20]
    autointerp view --model NAME [--port 8000] [--no-serve] [--open]
    autointerp export --format neuron-explainer|parquet --out DIR [--model NAME] [--layers 0,2-4]
    autointerp import --format neuron-records|explanations PATH --model NAME
    autointerp train-sae
    autointerp train-judge
    autointerp store copy --to ducklake:CATALOG --data-path DIR
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

# Dagster flags the features we use as beta/preview at import; that is for developers, not users.
warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")

from autointerp.config import load_config  # noqa: E402
from autointerp.errors import AutointerpError  # noqa: E402
from orchestration.cli.commands import data_command, manage_models, train_judge, train_sae  # noqa: E402
from orchestration.cli.reports import compare, list_models  # noqa: E402
from orchestration.cli.run import parse_layers, run  # noqa: E402
from orchestration.stages import STAGES  # noqa: E402

__all__ = ["main", "parse_layers"]


MAX_ERROR_CHARS = 1000


def one_line(message: str) -> str:
    """One readable line, whatever the cause wrote: whitespace collapsed, bounded (an endpoint's answer or a
    failed row quoted in full can run to megabytes)."""
    text = " ".join(message.split())
    return text if len(text) <= MAX_ERROR_CHARS else f"{text[:MAX_ERROR_CHARS]}... ({len(text):,} characters)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autointerp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: $AUTOINTERP_CONFIG or the repository's autointerp.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="materialize the stages for a model's layers")
    run_parser.add_argument("--model", action="append", help="configured model name (repeatable; default: all)")
    run_parser.add_argument("--layers", help="'all' or e.g. 0,2-4 (default: record every layer, explain the layers of "
                                             "neurons.layers; given, those layers are recorded and explained)")
    run_parser.add_argument("--from", dest="start", default="record", choices=list(STAGES),
                            help="first stage to run (default: record); from explain on, any model in the store, "
                                 "imported ones included")
    run_parser.add_argument("--until", default="score", choices=list(STAGES), help="last stage to run (default: score)")
    run_parser.add_argument("--verbose", action="store_true",
                            help="also print Dagster's event stream and the libraries' own logs")
    run_parser.add_argument("--explainer", help="simulate/score the stored explanations of this explainer (e.g. "
                                                "imported:neuron-explainer) instead of the configured one's")
    models_parser = commands.add_parser("models", help="list models; `models add NAME SOURCE` registers one")
    models_commands = models_parser.add_subparsers(dest="models_command")
    add_parser = models_commands.add_parser("add", help="register a model: it becomes partitions, no code change")
    add_parser.add_argument("name")
    add_parser.add_argument("source", help="Hub id[@revision], local directory, .gguf file or package:PKG/FILE.gguf")
    add_parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    models_commands.add_parser("remove", help="unregister a model added with `models add` (its rows stay)") \
        .add_argument("name")
    status_parser = commands.add_parser("status", help="what is recorded, explained and scored, what is stale, "
                                                       "and how each stage last ran")
    status_parser.add_argument("--model", help="one model (default: every model in the store or the config)")
    status_parser.add_argument("--json", action="store_true", help="machine-readable")
    compare_parser = commands.add_parser("compare", help="explanations and scores of the same neurons across revisions")
    compare_parser.add_argument("--model", required=True)
    compare_parser.add_argument("--old", help="revision (default: the second most recent)")
    compare_parser.add_argument("--new", help="revision (default: the most recent)")
    search_parser = commands.add_parser("search", help="the units whose explanation is closest in meaning to TEXT")
    search_parser.add_argument("text", help="what to look for, in plain words")
    search_parser.add_argument("--model", action="append", help="model in the store (repeatable; default: all)")
    search_parser.add_argument("--layers", help="e.g. 0,2-4 (default: all)")
    search_parser.add_argument("--k", type=int, default=20, help="how many units (default 20)")
    view_parser = commands.add_parser("view", help="serve every recorded neuron on 127.0.0.1 (or write the static site)")
    view_parser.add_argument("--model", action="append", help="model in the store (repeatable; default: all recorded)")
    view_parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any free port)")
    view_parser.add_argument("--no-serve", action="store_true",
                             help="write the static site of the explained neurons instead, for sharing")
    view_parser.add_argument("--open", action="store_true", help="open the index in a web browser")
    view_parser.add_argument("--all-neurons", action="store_true",
                             help="--no-serve: a page for every recorded neuron, not only the explained ones (large)")
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
    commands.add_parser("train-sae", help="train the demo TopK SAE of the config's sae_training (docs/sae.md)")
    commands.add_parser("train-judge", help="train the judge of the config's judge_training (docs/method.md s.11)")
    store_parser = commands.add_parser("store", help="`store copy --to ducklake:CATALOG --data-path DIR`: move the "
                                                     "store (README, Scaling out)")
    store_commands = store_parser.add_subparsers(dest="store_command", required=True)
    copy_parser = store_commands.add_parser("copy", help="copy every table of the configured store into an empty one")
    copy_parser.add_argument("--to", required=True, help="ducklake:CATALOG (e.g. ducklake:postgres:dbname=autointerp "
                                                         "host=10.0.0.5 user=autointerp; password: $PGPASSWORD) "
                                                         "or duckdb:FILE")
    copy_parser.add_argument("--data-path", help="ducklake: the directory its Parquet files go to")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.config:  # every part of this process (the store's section, Dagster's resources) reads the same file
        os.environ["AUTOINTERP_CONFIG"] = os.path.abspath(args.config)
    try:
        if args.command in ("export", "import", "view", "store"):  # the store alone: imported models have no config entry
            data_command(args)
            return 0
        config = load_config(args.config)
        if args.command == "models" and args.models_command:
            manage_models(config, args)
        elif args.command == "models":
            list_models(config)
        elif args.command == "status":
            from orchestration.cli.status import status

            status(config, args.model, args.json)
        elif args.command == "compare":
            compare(config, args.model, args.old, args.new)
        elif args.command == "search":
            from orchestration.cli.search import search_command

            search_command(config, args.text, args.model, args.layers, args.k)
        elif args.command in ("train-sae", "train-judge"):
            from orchestration.cli.terminal import TerminalProgress, quiet_libraries

            quiet_libraries()
            display = TerminalProgress()  # the training's progress and ETA
            try:
                (train_sae if args.command == "train-sae" else train_judge)(config, " ".join(["autointerp", *argv]))
            finally:
                display.close()
        else:
            from orchestration.cli.terminal import TerminalProgress, quiet_libraries

            if not args.verbose:
                quiet_libraries()
            display = TerminalProgress()
            try:
                run(config, args.model or [m.name for m in config.models], args.layers, args.until, args.start,
                    args.explainer, args.verbose, command=" ".join(["autointerp", *argv]))
            finally:
                display.close()
    except AutointerpError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused (read-only, full, no permission): which file, and why
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {one_line(where + (exc.strerror or str(exc)))}", file=sys.stderr)
        return 2
    except Exception as exc:
        # Dagster's own storage (SQLite under DAGSTER_HOME) failing, e.g. on a full disk: one line, not its traceback
        if not type(exc).__module__.startswith(("sqlalchemy", "sqlite3")):
            raise
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        full = " (out of disk space?)" if "disk" in cause.lower() or "full" in cause.lower() else ""
        print(f"error: the Dagster instance at {os.environ.get('DAGSTER_HOME', '$DAGSTER_HOME')} could not write its "
              f"records{full}: {one_line(cause)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
