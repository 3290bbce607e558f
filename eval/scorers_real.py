"""Real neurons, every scorer: does each score prefer a neuron's own explanation to another neuron's, do the
scorers agree, and does the explainer beat the top-token baseline?

Reads a store the pipeline wrote (default: the main job's, `data/autointerp.duckdb`): the chosen explanations
of the config's explainer, their stored scores (`scores`, `judge_scores`), and each neuron's records. Then, on
the same test splits and with the same scorers (the config's simulator and judges):
- shuffled: every neuron scored with another neuron's explanation (a seeded derangement within the layer);
- baseline: every neuron scored with the top_tokens explanation of its own train split (no LLM);
- pattern (with --pattern): the config's explainer again, with the `pattern` format, whose answers name the
  pattern without quoting tokens: does quoting tokens help or hurt under each scorer?
- writes (with --writes): again with the `writes` format, which also shows the tokens after the peaks and the
  unit's promoted tokens (`unit_logits`, computed here where missing): does naming what a unit says help?
Reports per scorer the mean own, shuffled and baseline values with 95% bootstrap intervals over neurons, the
gaps (own - shuffled, own - baseline), and the Spearman rank correlation between scorers on the own values.
An undefined value is left out of its mean (the count says how many remain).

    .venv/bin/python eval/scorers_real.py [--config FILE] [--db data/autointerp.duckdb] [--model NAME] [--limit N]

Writes eval/results/scorers_real.json and prints Markdown (README, Evaluation).
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from autointerp.explain import ExplainerInput, build_explainer  # noqa: E402
from autointerp.explain.top_tokens import TopTokens, TopTokensOptions  # noqa: E402
from autointerp.score import build_scorer, item_of, score_items  # noqa: E402
from autointerp.stages import Stages  # noqa: E402
from autointerp.store import Store, queries  # noqa: E402
from eval.common import RESULTS, config_of  # noqa: E402
from eval.common import parser as make_parser  # noqa: E402
from eval.quality import bootstrap, derangement  # noqa: E402
from orchestration.cli.reports import explanation_table  # noqa: E402

KINDS = ("simulation", "detection", "fuzzing")


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--db", type=Path, default=Path("data/autointerp.duckdb"))
    parser.add_argument("--model", help="default: the config's first model")
    parser.add_argument("--limit", type=int, help="at most this many neurons (spread over the layers)")
    parser.add_argument("--pattern", action="store_true", help="also explain with the pattern format")
    parser.add_argument("--writes", action="store_true", help="also explain with the writes format")
    parser.add_argument("--out", type=Path, default=RESULTS / "scorers_real.json")
    args = parser.parse_args()
    config = config_of(args)
    store = Store(args.db)
    model = args.model or config.models[0].name
    revision = queries.current_model(store, model)["revision"]
    layers = sorted(int(x) for x in queries.recorded_layers(store, model, revision).layer)
    own = explanation_table(store, model, layers, ("simulation",)).dropna(subset=["explanation"])
    own = own.sort_values(["layer", "neuron"]).drop_duplicates(["layer", "neuron"])
    if args.limit:
        own = own.groupby("layer", group_keys=False).apply(
            lambda g: g.head(max(1, args.limit // own.layer.nunique())))
    stages = Stages(config, store, log=lambda _: None)
    records = {}
    for layer, group in own.groupby("layer"):
        records.update({(int(layer), n): r for n, r in
                        stages.neuron_records(model, revision, int(layer), [int(n) for n in group.neuron]).items()})
    keys = list(zip(own.layer.astype(int), own.neuron.astype(int)))
    texts = dict(zip(keys, own.explanation))
    shuffled = {}
    for layer in sorted({k[0] for k in keys}):
        mine = [k for k in keys if k[0] == layer]
        for k, j in zip(mine, derangement(len(mine), config.seed + layer) if len(mine) > 1 else [0]):
            shuffled[k] = texts[mine[j]] if len(mine) > 1 else None
    baseline = {k: TopTokens(TopTokensOptions()).explain([ExplainerInput.of(records[k])], config.seed)[0].explanation
                for k in keys}
    compared = {"shuffled": shuffled, "baseline": baseline}
    for name in [n for n, wanted in (("pattern", args.pattern), ("writes", args.writes)) if wanted]:
        from dataclasses import replace

        explainer = build_explainer(replace(config.explainer, options=replace(config.explainer.options,
                                                                                formats=(name,))),
                                    config.base_dir, store, stages.llms)
        promoted: dict[tuple[int, int], list[str]] = {}
        if name == "writes":
            layers_used = sorted({k[0] for k in keys})
            if model in [m.name for m in config.models]:
                stages.unit_logits(model, layers_used)
            for layer in layers_used:
                rows = queries.unit_logits(store, model, revision, layer, [k[1] for k in keys if k[0] == layer])
                promoted.update({(layer, int(r.neuron)): list(r.promoted_tokens) for r in rows.itertuples()})
        inputs = [ExplainerInput.of(records[k], promoted.get(k, ())) for k in keys]
        found = [e for lo in range(0, len(inputs), explainer.batch)
                 for e in explainer.explain(inputs[lo:lo + explainer.batch], config.seed)]
        compared[name] = {(e.layer, e.neuron): e.explanation for e in found}
    scorers = {kind: build_scorer(kind, config, store, stages.llms) for kind in KINDS}
    values: dict[str, dict[str, list[float | None]]] = {kind: {} for kind in KINDS}
    seconds = {}
    for kind, scorer in scorers.items():
        started = time.monotonic()
        values[kind]["own"] = [None if pd.isna(v) else float(v) for v in own[kind]] if kind in own else \
            [r.value for r in score_items(scorer, [item_of(scorer, texts[k], records[k], "test") for k in keys])]
        for name, chosen in compared.items():
            values[kind][name] = [r.value if chosen[k] is not None else None for k, r in zip(keys, score_items(
                scorer, [item_of(scorer, chosen[k] or "", records[k], "test") for k in keys]))]
        seconds[kind] = round(time.monotonic() - started, 1)
        print(f"{kind}: {seconds[kind]} s", file=sys.stderr, flush=True)
    result = {"model": model, "revision": revision, "neurons": len(keys), "layers": sorted({k[0] for k in keys}),
              "scorers": {k: s.name for k, s in scorers.items()}, "seconds": seconds,
              "rows": [{"layer": k[0], "neuron": k[1], "explanation": texts[k], "baseline": baseline[k],
                        **{name: compared[name][k] for name in ("pattern", "writes") if name in compared},
                        **{f"{kind}_{name}": values[kind][name][i] for kind in KINDS for name in values[kind]}}
                       for i, k in enumerate(keys)]}
    result["summary"] = summary(values)
    result["agreement"] = agreement(values)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(markdown(result))


def _kept(xs: Sequence[float | None]) -> list[float]:
    return [x for x in xs if x is not None and np.isfinite(x)]


def _paired(a: Sequence[float | None], b: Sequence[float | None]) -> list[float]:
    return [x - y for x, y in zip(a, b) if x is not None and y is not None]


def summary(values: dict[str, dict[str, list[float | None]]]) -> dict[str, Any]:
    out = {}
    for kind, v in values.items():
        row: dict[str, Any] = {}
        for name in v:
            kept = _kept(v[name])
            row[name] = {"n": len(kept), "mean": float(np.mean(kept)) if kept else None,
                         "ci": bootstrap(kept) if len(kept) > 1 else None}
        for name in [n for n in v if n != "own"]:
            gap = _paired(v["own"], v[name])
            row[f"gap_{name}"] = {"n": len(gap), "mean": float(np.mean(gap)) if gap else None,
                                  "ci": bootstrap(gap) if len(gap) > 1 else None}
        out[kind] = row
    return out


def agreement(values: dict[str, dict[str, list[float | None]]]) -> dict[str, Any]:
    """Spearman rank correlation of the own values between every two scorers, on neurons both define."""
    out = {}
    kinds = list(values)
    for i, a in enumerate(kinds):
        for b in kinds[i + 1:]:
            both = [(x, y) for x, y in zip(values[a]["own"], values[b]["own"]) if x is not None and y is not None]
            rho = pd.Series([x for x, _ in both]).corr(pd.Series([y for _, y in both]), method="spearman") \
                if len(both) > 2 else None
            out[f"{a}~{b}"] = {"n": len(both), "spearman": None if rho is None or pd.isna(rho) else float(rho)}
    return out


def _fmt(cell: dict[str, Any]) -> str:
    if cell["mean"] is None:
        return "-"
    ci = f" ({cell['ci'][0]:+.3f} to {cell['ci'][1]:+.3f})" if cell.get("ci") else ""
    return f"{cell['mean']:.3f}{ci}"


def markdown(result: dict[str, Any]) -> str:
    formats = [name for name in ("pattern", "writes") if any(name in row for row in result["summary"].values())]
    lines = [f"{result['neurons']} neurons of {result['model']} (layers {result['layers']}), test splits:", "",
             "| scorer | own explanation | another neuron's (shuffled) | top_tokens baseline | own - shuffled "
             "| own - baseline |" + "".join(f" {name} format | own - {name} |" for name in formats)
             + " neurons defined |",
             "| --- " * (7 + 2 * len(formats)) + "|"]
    for kind, row in result["summary"].items():
        extra = "".join(f" {_fmt(row[name])} | {_fmt(row['gap_' + name])} |" for name in formats)
        lines.append(f"| {kind} | {_fmt(row['own'])} | {_fmt(row['shuffled'])} | {_fmt(row['baseline'])} "
                     f"| {_fmt(row['gap_shuffled'])} | {_fmt(row['gap_baseline'])} |{extra} {row['own']['n']} |")
    lines += ["", "| scorers | Spearman (own values) | neurons |", "| --- | --- | --- |"]
    for pair, a in result["agreement"].items():
        rho = "-" if a["spearman"] is None else f"{a['spearman']:.2f}"
        lines.append(f"| {pair} | {rho} | {a['n']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
