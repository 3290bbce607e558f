"""What the CLI prints from the store: the recorded layers, the scores, the models, revision comparisons."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from autointerp.config import Config
from autointerp.store import Store, queries, where_clause
from autointerp.subject.added import read_registry


def print_summary(store: Store, model: str, layers: list[int], rows: int = 8) -> None:
    """What was recorded: a row per layer for a few layers, one line for many (`autointerp status` lists them)."""
    revision = queries.current_model(store, model)["revision"]
    frame = layer_summary(store, model, revision, layers)
    print(f"\n{model} @ {revision} in {store.path}:")
    if len(frame) <= rows:
        print(frame.to_string(index=False))
        return
    print(f"recorded {len(frame)} layers x {int(frame.neurons.max()):,} neurons over {int(frame.tokens.max()):,} "
          f"tokens ({int(frame.records.sum()):,} records); max activation per layer "
          f"{frame.max_activation.min():.1f} to {frame.max_activation.max():.1f}; {int(frame.dead.sum()):,} dead "
          "(never active, not explained) (per layer: autointerp status)")


def print_scores(store: Store, model: str, layers: list[int], shown: int = 5) -> None:
    """Per-layer means, then the best and the worst explanations: readable for 6 neurons or 6,000."""
    revision = queries.current_model(store, model)["revision"]
    frame = queries.scores(store, model, revision, layers)
    if frame.empty:
        print(f"\n{model}: nothing scored in layers {layers}")
        return
    by_layer = frame.groupby("layer").score_top_and_random.agg(neurons="size", mean="mean", median="median")
    print(f"\nScores of {model} (correlation of simulated with real activations on held-out excerpts, "
          "docs/method.md s.7), by layer:")
    print(by_layer.round(3).to_string())
    print(f"all: {len(frame)} explanations, mean {frame.score_top_and_random.mean():.3f}, "
          f"median {frame.score_top_and_random.median():.3f}, undefined {int(frame.score_top_and_random.isna().sum())}")
    ranked = frame.dropna(subset=["score_top_and_random"]).sort_values("score_top_and_random", ascending=False)
    columns = ["layer", "neuron", "score_top_and_random", "explanation"]
    with pd.option_context("display.max_colwidth", 100, "display.width", 180):
        for title, rows in (("best", ranked.head(shown)), ("worst", ranked.tail(shown).iloc[::-1])):
            if len(ranked) > shown or title == "best":
                print(f"\n{title}:")
                print(rows[columns].rename(columns={"score_top_and_random": "score"}).round(3).to_string(index=False))


def list_models(config: Config) -> None:
    store = Store.from_home(read_only=True)  # read commands never write
    registered = {e.get("name") for e in read_registry()}
    for spec in config.models:
        revision = queries.latest_revision(store, spec.name)
        origin = "registered" if spec.name in registered else "config"
        print(f"{spec.name}\t{origin}\t{spec.source}\t{revision or 'not recorded yet'}")


def compare(config: Config, model: str, old: str | None, new: str | None) -> None:
    from autointerp.history import compare_revisions

    config.model(model)  # an unknown name gets the list of known ones
    store = Store.from_home(read_only=True)
    frame = compare_revisions(store, model, old, new)
    known = queries.revisions(store, model)
    old, new = old or known[-2], new or known[-1]
    print(f"{model}: {old} -> {new}, {len(frame)} neurons recorded in both; "
          f"{int(frame.changed.sum())} changed what they fire on (top-excerpt overlap < 0.5)")
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(frame.round(3).to_string(index=False))


def layer_summary(store: Store, model: str, revision: str, layers: Sequence[int]) -> pd.DataFrame:
    """Per recorded layer: neurons, tokens seen, mean fraction > 0, largest activation and record count."""
    clause, params = where_clause({"model": model, "revision": revision, "layer": [int(x) for x in layers]}, "s")
    return store.query(
        f"""SELECT s.layer, count(*) AS neurons, any_value(s.count) AS tokens,
                   round(avg(s.frac_positive), 3) AS mean_frac_positive, round(max(s.max), 2) AS max_activation,
                   count(*) FILTER (WHERE s.max <= 0) AS dead,
                   (SELECT count(*) FROM activation_records r WHERE r.model = s.model AND r.revision = s.revision
                      AND r.layer = s.layer) AS records
            FROM neuron_stats s WHERE {clause}
            GROUP BY s.model, s.revision, s.layer ORDER BY s.layer""", params)
