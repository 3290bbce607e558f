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
    print(f"\n{model} @ {revision} in {store}:")
    if len(frame) <= rows:
        print(frame.to_string(index=False))
        return
    print(f"recorded {len(frame)} layers x {int(frame.neurons.max()):,} neurons over {int(frame.tokens.max()):,} "
          f"tokens ({int(frame.records.sum()):,} records); max activation per layer "
          f"{frame.max_activation.min():.1f} to {frame.max_activation.max():.1f}; {int(frame.dead.sum()):,} dead "
          "(never active, not explained) (per layer: autointerp status)")


def explanation_table(store: Store, model: str, layers: list[int], rank_by: Sequence[str]) -> pd.DataFrame:
    """One row per scored explanation: the simulation score, the judges' AUROCs (columns named by scorer kind) and
    `rank`, the mean of the `rank_by` scorers' values (what best-of-n chose by; the simulation score where none
    is defined), and the unit's intruder accuracy (explanation-free) where it has one."""
    revision = queries.current_model(store, model)["revision"]
    frame = queries.scores(store, model, revision, layers).rename(columns={"score_top_and_random": "simulation"})
    judged = queries.judge_scores(store, model, revision, layers)
    if len(judged):
        # one column per judge kind (the latest scorer of a kind where there are several)
        wide = judged.groupby(["layer", "neuron", "explainer", "sample", "kind"]).auroc.last().unstack("kind")
        wide = wide.reset_index()
        frame = frame.merge(wide, on=["layer", "neuron", "explainer", "sample"], how="outer")
    intruded = queries.intruder_scores(store, model, revision, layers)
    if len(intruded) and len(frame):  # a unit's score, whatever its explanation
        frame = frame.merge(intruded[["layer", "neuron", "intruder"]], on=["layer", "neuron"], how="left")
    for kind in rank_by:
        if kind not in frame:
            frame[kind] = float("nan")
    # where no rank_by scorer is defined (not judged), the simulation score ranks it, as in the viewer
    frame["rank"] = frame[list(rank_by)].mean(axis=1, skipna=True).fillna(frame["simulation"])
    return frame


def print_scores(store: Store, model: str, layers: list[int], rank_by: Sequence[str], shown: int = 5) -> None:
    """Per-layer means of every score, then the best and the worst explanations by `rank_by`: readable for 6
    neurons or 6,000."""
    frame = explanation_table(store, model, layers, rank_by)
    if frame.empty:
        print(f"\n{model}: nothing scored in layers {layers}")
        return
    columns = [c for c in ("simulation", "detection", "fuzzing", "intruder") if c in frame]
    by_layer = frame.groupby("layer")[columns].mean()
    by_layer.insert(0, "neurons", frame.groupby("layer").size())
    ranking = " + ".join(rank_by)
    print(f"\nScores of {model} on held-out excerpts, mean by layer (docs/method.md s.7 and s.10): simulation = "
          "correlation of simulated with real activations; detection, fuzzing = AUROC of a judge's yes/no "
          "(0.5 is chance); intruder = share of intruder trials the judge got right, without an explanation "
          f"(chance 1/(shown+1)). Ranked by {ranking}.")
    print(by_layer.round(3).to_string())
    print(f"all: {len(frame)} explanations; " + ", ".join(
        f"{c} mean {frame[c].mean():.3f} (undefined {int(frame[c].isna().sum())})" for c in columns))
    ranked = frame.dropna(subset=["rank"]).sort_values(["rank", "simulation"], ascending=False)
    shown_columns = ["layer", "neuron", *columns, "explanation"]
    with pd.option_context("display.max_colwidth", 90, "display.width", 200):
        for title, rows in (("best", ranked.head(shown)), ("worst", ranked.tail(shown).iloc[::-1])):
            if len(ranked) > shown or title == "best":
                print(f"\n{title} (by {ranking}):")
                print(rows[shown_columns].round(3).to_string(index=False))


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
