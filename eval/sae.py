"""SAE latents vs MLP neurons of the same layers: are a dictionary's latents easier to explain? (a script, not a test)

Records the config's first model (the default: SmolLM2-135M) twice over the config's corpus: with its MLP neurons,
and with the latents of an SAE (default: the demo SAE of `sae_training`, trained first with `--train` when it is
not there yet). In each of `--layers` it picks `--units` random units of each kind (fixed seed; dead latents are
never picked), explains them with the config's explainer, simulates their test split with the config's simulator
and scores them as the score stage does; an undefined score (a constant simulation) counts as 0. Means come with
95% bootstrap intervals over units, and so does the difference (latents minus neurons, units resampled
independently on each side).

    .venv/bin/python eval/sae.py [--config C] [--layers 4] [--units 12] [--sae DIR] [--train]

Results: eval/results/sae.json and a Markdown table (docs/sae.md). The store (recordings and the LLM call cache)
is kept at --store, so a re-run only pays for what changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.common import RESULTS, config_of, explain_records, explanation_scores, parser, record_neurons  # noqa: E402
from eval.quality import bootstrap  # noqa: E402
from autointerp.config import Config, NeuronSelection, UnitsChoice  # noqa: E402
from autointerp.plugins import NoOptions  # noqa: E402
from autointerp.store import Store, queries  # noqa: E402
from autointerp.units.sae import SAEOptions  # noqa: E402


def with_units(config: Config, units: UnitsChoice, name: str) -> Config:
    """The config's first model alone, as `name`, with `units` (whatever units the config gives it)."""
    subject = config.models[0]
    return replace(config, models=(replace(subject, name=name, units=units),))


def scored(config: Config, layers: Sequence[int], store: Store) -> dict[str, Any]:
    """Record, explain, simulate and score the selected units of `layers` of the config's first model."""
    started = time.monotonic()
    stages, revision, records = record_neurons(config, layers, store)
    explanations = explain_records(stages, records)
    by_key = {(r.layer, r.neuron): r for r in records}
    scores = explanation_scores(stages.simulator, explanations, by_key)
    values = [s.score_top_and_random if s.score_top_and_random is not None else 0.0 for s in scores]
    label = queries.model_row(store, config.models[0].name, revision)["units"]  # proves which units were recorded
    return {"model": config.models[0].name, "units_label": label, "revision": revision,
            "units": [[e.layer, e.neuron] for e in explanations],
            "explanations": [e.explanation for e in explanations], "scores": values,
            "seconds": round(time.monotonic() - started, 1)}


def difference_ci(a: Sequence[float], b: Sequence[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of mean(a) - mean(b), each side resampled on its own (the units differ)."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diffs = (x[rng.integers(0, len(x), size=(rounds, len(x)))].mean(1)
             - y[rng.integers(0, len(y), size=(rounds, len(y)))].mean(1))
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def markdown(rows: dict[str, dict[str, Any]], diff: tuple[float, float]) -> str:
    lines = ["| units | n | mean top-and-random (95% CI) | median | > 0.3 | time |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        s = np.asarray(r["scores"], dtype=float)
        low, high = bootstrap(s) if len(s) else (float("nan"), float("nan"))
        lines.append(f"| {name} | {len(s)} | {s.mean():.3f} ({low:.3f} to {high:.3f}) | {np.median(s):.3f} "
                     f"| {(s > 0.3).mean():.0%} | {r['seconds'] / 60:.1f} min |")
    means = [np.mean(r["scores"]) for r in rows.values()]
    lines.append(f"\nSAE latents minus MLP neurons: {means[1] - means[0]:+.3f} (95% CI {diff[0]:+.3f} to {diff[1]:+.3f})")
    return "\n".join(lines)


def add_arguments(parsed: argparse.ArgumentParser, units: int) -> None:
    """The options every SAE-vs-MLP comparison takes (this script, eval/intruder.py)."""
    parsed.add_argument("--layers", help="comma-separated (default: the layers of sae_training)")
    parsed.add_argument("--units", type=int, default=units, help="random units of each kind per layer")
    parsed.add_argument("--sae", type=Path, help="SAE directory (default: the config's sae_training.out)")
    parsed.add_argument("--format", default="saelens", choices=["saelens", "sparsify"])
    parsed.add_argument("--train", action="store_true", help="train the demo SAE first if --sae has none")
    parsed.add_argument("--store", type=Path, default=Path("data/eval/sae.duckdb"))


@dataclass
class Comparison:
    """The same model twice, with its MLP neurons and with an SAE's latents, `--units` random units of each in
    `layers`, recorded into one `store`."""

    config: Config
    layers: list[int]
    sae_dir: Path
    mlp: Config
    sae: Config
    store: Store


def comparison(args: argparse.Namespace, config: Config) -> Comparison:
    """The configs of both unit kinds from the parsed options (the SAE trained first with --train)."""
    layers = [int(x) for x in args.layers.split(",")] if args.layers else list(config.sae_training.layers)
    config = replace(config, neurons=NeuronSelection(select="random", count=args.units, layers=tuple(layers)))
    sae_dir = (args.sae or config.base_dir / config.sae_training.out).resolve()
    if args.train and not sae_dir.exists():
        from autointerp.units.train import train_dictionaries

        train_dictionaries(replace(config, sae_training=replace(config.sae_training, layers=tuple(layers))), print)
    args.store.parent.mkdir(parents=True, exist_ok=True)
    return Comparison(config, layers, sae_dir, with_units(config, UnitsChoice("mlp", NoOptions()), "mlp-neurons"),
                      with_units(config, UnitsChoice("sae", SAEOptions(str(sae_dir), args.format)), "sae-latents"),
                      Store(args.store))


def main() -> None:
    args_parser = parser(__doc__)
    add_arguments(args_parser, units=12)
    args_parser.add_argument("--out", type=Path, default=RESULTS / "sae.json")
    args = args_parser.parse_args()
    both = comparison(args, config_of(args))
    config, layers, sae_dir, store = both.config, both.layers, both.sae_dir, both.store
    neurons = scored(both.mlp, layers, store)
    print(f"MLP neurons: {len(neurons['scores'])} scored in {neurons['seconds']:.0f}s", flush=True)
    latents = scored(both.sae, layers, store)
    print(f"SAE latents: {len(latents['scores'])} scored in {latents['seconds']:.0f}s", flush=True)
    rows = {"MLP neurons": neurons, "SAE latents": latents}
    diff = difference_ci(latents["scores"], neurons["scores"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"subject": config.models[0].name, "layers": layers, "sae": str(sae_dir),
                                    "explainer": config.explainer.kind, "simulator": config.simulator.kind,
                                    "difference_ci": diff, **{k.replace(" ", "_").lower(): v for k, v in rows.items()}},
                                   indent=1))
    print("\n" + markdown(rows, diff))


if __name__ == "__main__":
    main()
