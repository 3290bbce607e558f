"""Search by meaning: every chosen explanation embedded once, a query ranked against them by cosine in SQL.

The sentence encoder (`search.encoder`, all-MiniLM-L6-v2 by default) gives normalised vectors, stored as FLOAT[]
in `explanation_embeddings` with the sha256 of the text they embed: a layer's rows are re-embedded only where an
explanation's text is new or changed (a new revision has new explanations, so new rows); unchanged ones are kept.
A query is embedded by the same encoder and compared in DuckDB (`list_cosine_similarity`); a stored vector whose
hash no longer matches its explanation (changed, not yet re-embedded) is never returned.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from autointerp.config.schema import SearchSpec
from autointerp.store import Replacement, Store, queries
from autointerp.store.schema import table

if TYPE_CHECKING:
    from autointerp.simulate.embedding import Encoder


def explanation_hash(text: str) -> str:
    """The same value as DuckDB's sha256(text): search compares them in SQL."""
    return hashlib.sha256(text.encode()).hexdigest()


def encoder_of(spec: SearchSpec, base_dir: Path | None) -> "Encoder":
    from autointerp.devices import resolve_device
    from autointerp.simulate.embedding import Encoder

    return Encoder.get(spec.encoder, base_dir, resolve_device(spec.device, "search.device"))


@dataclass
class Embedded:
    """What `embed_layer` did: explanations embedded now, kept from before, and stale rows dropped."""

    model: str
    revision: str
    layer: int
    embedded: int = 0
    kept: int = 0
    dropped: int = 0


def embed_layer(store: Store, encoder: "Encoder", encoder_name: str, model: str, revision: str,
                layer: int) -> Embedded:
    """Embed the layer's chosen explanations (every explainer's) that have no current embedding by this encoder;
    rows of explanations that are gone or changed are dropped. Writes only when something changed."""
    where = {"model": model, "revision": revision, "layer": [layer], "encoder": encoder_name}
    wanted = store.query(
        """SELECT layer, neuron, explainer, sample, explanation, sha256(explanation) AS explanation_hash
           FROM explanations WHERE model = ? AND revision = ? AND layer = ? AND coalesce(chosen, TRUE)
               AND explanation IS NOT NULL ORDER BY neuron, explainer, sample""", [model, revision, layer])
    have = store.query(
        """SELECT layer, neuron, explainer, sample, explanation_hash, embedding, created_at FROM explanation_embeddings
           WHERE model = ? AND revision = ? AND layer = ? AND encoder = ?""", [model, revision, layer, encoder_name])
    key = ["layer", "neuron", "explainer", "sample", "explanation_hash"]
    kept = have.merge(wanted[key], on=key)
    todo = wanted.merge(have[key], on=key, how="left", indicator=True)
    todo = todo[todo["_merge"] == "left_only"].drop(columns="_merge")
    result = Embedded(model, revision, layer, embedded=len(todo), kept=len(kept), dropped=len(have) - len(kept))
    if not result.embedded and not result.dropped:
        return result
    vectors = encoder.embed(todo.explanation.tolist()) if len(todo) else []
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    new = todo.drop(columns="explanation").assign(embedding=[v.astype("float32").tolist() for v in vectors],
                                                  created_at=now)
    rows = pd.concat([kept, new], ignore_index=True) if len(kept) else new
    columns = {c: rows[c].tolist() for c in ["layer", "neuron", "explainer", "sample", "explanation_hash",
                                             "embedding", "created_at"]}
    data = table("explanation_embeddings", {**columns, "model": [model] * len(rows),
                                            "revision": [revision] * len(rows), "encoder": [encoder_name] * len(rows)})
    store.replace([Replacement("explanation_embeddings", where, data if len(rows) else None)])
    return result


def search(store: Store, encoder: "Encoder", encoder_name: str, text: str, models: Sequence[str] | None = None,
           layers: Sequence[int] | None = None, k: int = 20,
           rank_by: Sequence[str] = ("simulation",)) -> pd.DataFrame:
    """The `k` units whose explanation is closest in meaning to `text`, over each model's latest revision: model,
    layer, neuron, explanation, similarity (cosine), score (the viewer's ranking score), explainer, sample.
    One row per unit: its closest explanation."""
    [query] = encoder.embed([text])
    frames = []
    for model in models or queries.models(store):
        revision = queries.latest_revision(store, model)
        if revision is None:
            continue
        frame = queries.closest_explanations(store, model, revision, encoder_name, query.astype("float32").tolist(),
                                             layers, k, rank_by)
        frames.append(frame.assign(model=model, revision=revision))
    if not frames:
        return pd.DataFrame(columns=["model", "revision", "layer", "neuron", "explanation", "similarity", "score",
                                     "explainer", "sample"])
    found = pd.concat(frames, ignore_index=True).sort_values(["similarity", "model", "layer", "neuron"],
                                                             ascending=[False, True, True, True])
    return found.head(k).reset_index(drop=True)[["model", "revision", "layer", "neuron", "explanation", "similarity",
                                                 "score", "explainer", "sample"]]
