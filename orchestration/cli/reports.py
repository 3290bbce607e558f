"""What the CLI prints from the store: the recorded layers, the scores, the models, revision comparisons."""

from __future__ import annotations

import pandas as pd

from autointerp.config import Config
from autointerp.store import Store, queries
from autointerp.subject.added import read_registry


def print_summary(store: Store, model: str, layers: list[int]) -> None:
    revision = queries.current_model(store, model)["revision"]
    print(f"\n{model} @ {revision} in {store.path}:")
    print(queries.layer_summary(store, model, revision, layers).to_string(index=False))


def print_scores(store: Store, model: str, layers: list[int]) -> None:
    revision = queries.current_model(store, model)["revision"]
    frame = queries.scores(store, model, revision, layers)
    frame = frame.assign(score=frame.score_top_and_random.round(3), random_only=frame.score_random_only.round(3))
    print("\nExplanations and scores (correlation of simulated with real activations, docs/method.md s.7):")
    with pd.option_context("display.max_colwidth", 90, "display.width", 160):
        print(frame[["layer", "neuron", "score", "random_only", "explanation"]].to_string(index=False))


def list_models(config: Config) -> None:
    store = Store.from_home()
    registered = {e.get("name") for e in read_registry()}
    for spec in config.models:
        revision = queries.latest_revision(store, spec.name)
        origin = "registered" if spec.name in registered else "config"
        print(f"{spec.name}\t{origin}\t{spec.source}\t{revision or 'not recorded yet'}")


def compare(config: Config, model: str, old: str | None, new: str | None) -> None:
    from autointerp.history import compare_revisions

    config.model(model)  # an unknown name gets the list of known ones
    store = Store.from_home()
    frame = compare_revisions(store, model, old, new)
    known = queries.revisions(store, model)
    old, new = old or known[-2], new or known[-1]
    print(f"{model}: {old} -> {new}, {len(frame)} neurons recorded in both; "
          f"{int(frame.changed.sum())} changed what they fire on (top-excerpt overlap < 0.5)")
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(frame.round(3).to_string(index=False))
