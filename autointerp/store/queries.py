"""Every read of the store's tables, in one place (the quality suites' audit queries live with the suites).

Functions take a `Store` and return plain Python values or DataFrames; the few on hot paths take an open
connection so a caller can batch them.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from autointerp.errors import StoreError
from autointerp.store.database import Store, where_clause

# --- models and revisions -----------------------------------------------------------------------------


def models(store: Store) -> list[str]:
    """Models with a registered revision, by name."""
    if not store.exists():
        return []
    return store.query("SELECT DISTINCT model FROM models ORDER BY model").model.tolist()


def model_row(store: Store, model: str, revision: str) -> dict[str, Any] | None:
    rows = store.query("SELECT * FROM models WHERE model = ? AND revision = ?", [model, revision])
    return rows.iloc[0].to_dict() if len(rows) else None


def latest_revision(store: Store, model: str) -> str | None:
    """The revision of `model` registered most recently (the one the pipeline works on)."""
    if not store.exists():
        return None
    rows = store.query("SELECT revision FROM models WHERE model = ? ORDER BY registered_at DESC LIMIT 1", [model])
    return str(rows.iloc[0, 0]) if len(rows) else None


def current_model(store: Store, model: str, revision: str | None = None) -> dict[str, Any]:
    """The `models` row of `model` at `revision` (default: its latest), or a StoreError saying what to run."""
    revision = revision or latest_revision(store, model)
    row = model_row(store, model, revision) if revision else None
    if row is None:
        known = ", ".join(models(store)) or "none"
        what = f"revision '{revision}' of model '{model}'" if revision else f"model '{model}'"
        raise StoreError(f"{what} is not in the store {store} (models there: {known}); record it first "
                         f"(`autointerp run --model {model} --until record`) or import it")
    return row


def revisions(store: Store, model: str) -> list[str]:
    """The model's revisions, oldest first."""
    return store.query("SELECT revision FROM models WHERE model = ? ORDER BY registered_at", [model]).revision.tolist()


def recorded_layers(store: Store, model: str, revision: str | None = None) -> pd.DataFrame:
    """(revision, layer) pairs with neuron stats: what has been recorded, for one revision or all."""
    sql = "SELECT DISTINCT revision, layer FROM neuron_stats WHERE model = ?"
    params: list[Any] = [model]
    if revision is not None:
        sql, params = sql + " AND revision = ?", params + [revision]
    return store.query(sql + " ORDER BY revision, layer", params)


# --- excerpts ------------------------------------------------------------------------------------------


def excerpt_count(store: Store, model: str, revision: str) -> int:
    with store.connect() as con:
        row = con.execute("SELECT count(*) FROM excerpts WHERE model = ? AND revision = ?", [model, revision]).fetchone()
    return int(row[0]) if row else 0


def iter_excerpt_batches(store: Store, model: str, revision: str, batch_size: int,
                         chunk: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (excerpt_ids (B,), token_ids (B, T)) in excerpt order, reading `chunk` rows per connection."""
    start = 0
    while True:
        with store.connect() as con:
            table = con.sql(
                "SELECT excerpt_id, token_ids FROM excerpts WHERE model = ? AND revision = ? "
                "AND excerpt_id >= ? ORDER BY excerpt_id LIMIT ?",
                params=[model, revision, start, chunk],
            ).to_arrow_table()
        if table.num_rows == 0:
            return
        ids = table.column("excerpt_id").to_numpy()
        tokens = np.asarray(pa.concat_arrays(table.column("token_ids").chunks).flatten()).reshape(table.num_rows, -1)
        for lo in range(0, len(ids), batch_size):
            yield ids[lo:lo + batch_size], tokens[lo:lo + batch_size]
        start = int(ids[-1]) + 1


# --- activation records --------------------------------------------------------------------------------


def _in(values: Sequence[int]) -> str:
    return f"({', '.join(str(int(v)) for v in values) or 'NULL'})"


def record_rows(con: duckdb.DuckDBPyConnection, model: str, revision: str, layer: int,
                neurons: Sequence[int] | None = None, kinds: Sequence[str] = ("top", "random")) -> list[tuple]:
    """(neuron, kind, band, rank, excerpt_id, tokens, activations) of a layer's records, by neuron, kind,
    band and rank; tokens is None where the excerpt is missing (the caller names the problem)."""
    neuron_filter = f" AND r.neuron IN {_in(neurons)}" if neurons is not None else ""
    kind_list = ", ".join(f"'{k}'" for k in kinds)
    return con.execute(
        f"""SELECT r.neuron, r.kind, r.band, r.rank, r.excerpt_id, e.tokens, r.activations
            FROM activation_records AS r
            LEFT JOIN excerpts AS e ON e.model = r.model AND e.revision = r.revision AND e.excerpt_id = r.excerpt_id
            WHERE r.model = ? AND r.revision = ? AND r.layer = ? AND r.kind IN ({kind_list}){neuron_filter}
            ORDER BY r.neuron, r.kind, r.band, r.rank""", [model, revision, layer]).fetchall()


def stats_rows(store: Store, model: str, revision: str, layer: int) -> dict[int, dict[str, Any]]:
    frame = store.query("SELECT * EXCLUDE (model, revision, layer) FROM neuron_stats "
                        "WHERE model = ? AND revision = ? AND layer = ? ORDER BY neuron", [model, revision, layer])
    return {int(row["neuron"]): row for row in frame.to_dict("records")}


def recorded_neurons(store: Store, model: str, revision: str, only_explained: bool = False) -> list[tuple[int, int]]:
    """(layer, neuron) of every neuron with top or random records (and an explanation, if `only_explained`)."""
    explained = ("AND (layer, neuron) IN (SELECT (layer, neuron) FROM explanations WHERE model = $model "
                 "AND revision = $revision)") if only_explained else ""
    frame = store.query("SELECT DISTINCT layer, neuron FROM activation_records WHERE model = $model "
                        f"AND revision = $revision AND kind IN ('top', 'random') {explained} ORDER BY layer, neuron",
                        {"model": model, "revision": revision})
    return [(int(layer), int(neuron)) for layer, neuron in zip(frame.layer, frame.neuron)]


def models_with_records(store: Store) -> list[str]:
    if not store.exists():
        return []
    return store.query("SELECT DISTINCT model FROM activation_records ORDER BY model").model.tolist()


def dead_units(store: Store, model: str, revision: str, layer: int) -> list[int]:
    """Units of a layer never active on the corpus (max activation <= 0): counted, never explained."""
    return store.query("SELECT neuron FROM neuron_stats WHERE model = ? AND revision = ? AND layer = ? AND max <= 0 "
                       "ORDER BY neuron", [model, revision, layer]).neuron.astype(int).tolist()


# --- explanations, simulations, scores -----------------------------------------------------------------


def explanations(store: Store, model: str, revision: str, layer: int, explainer: str,
                 chosen_only: bool = True) -> pd.DataFrame:
    """(neuron, sample, explanation) by `explainer` for a layer: the chosen ones, or every candidate."""
    chosen = " AND coalesce(chosen, TRUE)" if chosen_only else ""
    return store.query(f"""SELECT neuron, sample, explanation, valid_score, chosen FROM explanations
                           WHERE model = ? AND revision = ? AND layer = ? AND explainer = ?{chosen}
                           ORDER BY neuron, sample""", [model, revision, layer, explainer])


def simulations(store: Store, model: str, revision: str, layer: int, explainer: str | None = None,
                simulator: str | None = None) -> pd.DataFrame:
    """Simulated test excerpts of a layer with their explanation text, by neuron, explainer, sample, simulator."""
    where = {"model": model, "revision": revision, "layer": layer, "explainer": explainer, "simulator": simulator}
    clause, params = where_clause({k: v for k, v in where.items() if v is not None}, alias="s")
    return store.query(
        f"""SELECT s.neuron, s.explainer, s.simulator, s.sample, s.kind, s.excerpt_id, s.simulated, x.explanation
            FROM simulations s LEFT JOIN explanations x USING (model, revision, layer, neuron, explainer, sample)
            WHERE {clause}
            ORDER BY s.neuron, s.explainer, s.sample, s.simulator, s.kind, s.excerpt_id""", params)


def explanation_scores(store: Store, model: str, revision: str, layer: int,
                       rank_by: Sequence[str] = ("simulation",)) -> pd.DataFrame:
    """Every explanation of a layer with its scores (one row per simulator; none yet: NULL scores) and the
    judges' (detection, fuzzing: AUROC and balanced accuracy), best-ranked first (by `rank_by`)."""
    rank = rank_expression(rank_by)
    return store.query(f"""WITH {_JUDGED}
        SELECT neuron, explainer, sample, coalesce(x.explanation, s.explanation) AS explanation, s.simulator,
               x.valid_score, x.chosen, s.score_top_and_random, s.score_random_only, s.rsquared,
               s.absolute_dev_explained, s.n_tokens, s.reason, j.detection, j.fuzzing, j.detection_accuracy,
               j.fuzzing_accuracy, {rank} AS rank
        FROM explanations x FULL OUTER JOIN scores s USING (model, revision, layer, neuron, explainer, sample)
             LEFT JOIN judged j USING (layer, neuron, explainer, sample)
        WHERE model = $model AND revision = $revision AND layer = $layer
        ORDER BY neuron, {rank} DESC NULLS LAST, s.score_top_and_random DESC NULLS LAST, explainer, sample,
                 s.simulator""",
        {"model": model, "revision": revision, "layer": layer})


def scores(store: Store, model: str, revision: str, layers: Sequence[int] | None = None) -> pd.DataFrame:
    layer_filter = f" AND layer IN {_in(layers)}" if layers is not None else ""
    return store.query(f"""SELECT * FROM scores WHERE model = ? AND revision = ?{layer_filter}
                           ORDER BY layer, neuron, explainer, sample, simulator""", [model, revision])


def compare_revisions(store: Store, model: str, old: str, new: str, threshold: float) -> pd.DataFrame:
    """Per neuron recorded in both revisions: top-excerpt overlap, each revision's best explanation and score."""
    return store.query(
        """
        WITH top AS (
            SELECT revision, layer, neuron, list(excerpt_id) AS ids
            FROM activation_records WHERE model = $model AND kind = 'top' AND revision IN ($old, $new)
            GROUP BY revision, layer, neuron
        ), best AS (  -- each revision's best-scored explanation of a neuron
            SELECT revision, layer, neuron, explanation, score_top_and_random AS score
            FROM scores WHERE model = $model AND revision IN ($old, $new)
            QUALIFY row_number() OVER (PARTITION BY revision, layer, neuron
                                       ORDER BY score_top_and_random DESC NULLS LAST) = 1
        )
        SELECT o.layer, o.neuron,
               len(list_intersect(o.ids, n.ids)) / len(o.ids) AS top_overlap,
               bo.explanation AS explanation_old, bn.explanation AS explanation_new,
               bo.score AS score_old, bn.score AS score_new, bn.score - bo.score AS score_delta,
               len(list_intersect(o.ids, n.ids)) / len(o.ids) < $threshold AS changed
        FROM top o JOIN top n ON o.layer = n.layer AND o.neuron = n.neuron AND o.revision = $old AND n.revision = $new
        LEFT JOIN best bo ON bo.revision = $old AND bo.layer = o.layer AND bo.neuron = o.neuron
        LEFT JOIN best bn ON bn.revision = $new AND bn.layer = o.layer AND bn.neuron = o.neuron
        ORDER BY changed DESC, abs(coalesce(score_delta, 0)) DESC, o.layer, o.neuron
        """,
        {"model": model, "old": old, "new": new, "threshold": threshold})


# --- the viewer ----------------------------------------------------------------------------------------------

# The judges' AUROC per explanation, one column per kind (the latest scorer of each kind).
_JUDGED = """judged AS (
    SELECT layer, neuron, explainer, sample,
           max(auroc) FILTER (WHERE scorer LIKE 'detection:%') AS detection,
           max(auroc) FILTER (WHERE scorer LIKE 'fuzzing:%') AS fuzzing,
           max(balanced_accuracy) FILTER (WHERE scorer LIKE 'detection:%') AS detection_accuracy,
           max(balanced_accuracy) FILTER (WHERE scorer LIKE 'fuzzing:%') AS fuzzing_accuracy
    FROM judge_scores WHERE model = $model AND revision = $revision GROUP BY ALL)"""
_SCORE_COLUMNS = {"simulation": "s.score_top_and_random", "detection": "j.detection", "fuzzing": "j.fuzzing"}


def rank_expression(rank_by: Sequence[str]) -> str:
    """SQL: the mean of the `rank_by` scores that are defined, over scores s and judged j; where none is (not
    judged: imported, or judged before), the simulation score, so such explanations still rank."""
    return f"coalesce(list_avg([{', '.join(_SCORE_COLUMNS[k] for k in rank_by)}]), s.score_top_and_random)"


_BEST = """best AS (  -- each neuron's best-ranked explanation; unjudged: by simulation; unscored: its chosen one
    SELECT x.layer, x.neuron, x.explanation, {rank} AS score, s.score_top_and_random AS simulation,
           s.score_random_only AS random_only, j.detection, j.fuzzing, s.reason
    FROM explanations x LEFT JOIN scores s USING (model, revision, layer, neuron, explainer, sample)
         LEFT JOIN judged j USING (layer, neuron, explainer, sample)
    WHERE x.model = $model AND x.revision = $revision AND coalesce(x.chosen, TRUE) {layer}
    QUALIFY row_number() OVER (PARTITION BY x.layer, x.neuron ORDER BY {rank} DESC NULLS LAST,
                               s.score_top_and_random DESC NULLS LAST, x.explainer, x.sample) = 1)"""


def index_rows(store: Store, model: str, revision: str, rank_by: Sequence[str] = ("simulation",)) -> pd.DataFrame:
    """One row per explained neuron: its best explanation (by `rank_by`) and scores, its max activation and its
    intruder accuracy."""
    return store.query(f"""WITH {_JUDGED}, {_BEST.format(layer="", rank=rank_expression(rank_by))}
        SELECT b.layer, b.neuron, b.explanation, b.score, b.simulation, b.random_only, b.detection, b.fuzzing,
               b.reason, st.max AS max_activation, i.accuracy AS intruder
        FROM best b LEFT JOIN neuron_stats st ON st.model = $model AND st.revision = $revision
             AND st.layer = b.layer AND st.neuron = b.neuron
        LEFT JOIN (SELECT layer, neuron, accuracy FROM intruder_scores WHERE model = $model AND revision = $revision
                   QUALIFY row_number() OVER (PARTITION BY layer, neuron ORDER BY created_at DESC) = 1) i
             ON i.layer = b.layer AND i.neuron = b.neuron
        ORDER BY b.layer, b.neuron""", {"model": model, "revision": revision})


def layer_rows(store: Store, model: str, revision: str, layer: int,
               rank_by: Sequence[str] = ("simulation",)) -> pd.DataFrame:
    """Every recorded neuron of a layer: its stats, and its best explanation and scores where it has one."""
    return store.query(f"""WITH {_JUDGED}, {_BEST.format(layer="AND x.layer = $layer", rank=rank_expression(rank_by))}
        SELECT st.layer, st.neuron, st.max AS max_activation, st.frac_positive, b.explanation, b.score,
               b.simulation, b.random_only, b.detection, b.fuzzing, b.reason
        FROM neuron_stats st LEFT JOIN best b ON b.layer = st.layer AND b.neuron = st.neuron
        WHERE st.model = $model AND st.revision = $revision AND st.layer = $layer
        ORDER BY st.neuron""", {"model": model, "revision": revision, "layer": layer})


def judge_scores(store: Store, model: str, revision: str, layers: Sequence[int] | None = None) -> pd.DataFrame:
    """(layer, neuron, explainer, sample, kind, auroc, balanced_accuracy) of the judging scorers; `kind` is the
    scorer's name up to its first colon (detection, fuzzing)."""
    layer_filter = f" AND layer IN {_in(layers)}" if layers is not None else ""
    return store.query(f"""SELECT layer, neuron, explainer, sample, split_part(scorer, ':', 1) AS kind, auroc,
                                  balanced_accuracy
                           FROM judge_scores WHERE model = ? AND revision = ?{layer_filter}
                           ORDER BY layer, neuron, explainer, sample, kind""", [model, revision])


def intruder_scores(store: Store, model: str, revision: str, layers: Sequence[int] | None = None) -> pd.DataFrame:
    """(layer, neuron, intruder, p_intruder, n_trials): each unit's intruder accuracy (the latest scorer's)."""
    layer_filter = f" AND layer IN {_in(layers)}" if layers is not None else ""
    return store.query(f"""SELECT layer, neuron, accuracy AS intruder, p_intruder, n_trials
                           FROM intruder_scores WHERE model = ? AND revision = ?{layer_filter}
                           QUALIFY row_number() OVER (PARTITION BY layer, neuron ORDER BY created_at DESC) = 1
                           ORDER BY layer, neuron""", [model, revision])


# --- search by meaning and what units write --------------------------------------------------------------------


def closest_explanations(store: Store, model: str, revision: str, encoder: str, query: list[float],
                         layers: Sequence[int] | None, k: int, rank_by: Sequence[str]) -> pd.DataFrame:
    """The `k` units of a revision whose current chosen explanation embeds closest to `query` (normalised, the
    same encoder), one row per unit (its closest explanation), with the viewer's ranking score."""
    layer_filter = f" AND e.layer IN {_in(layers)}" if layers is not None else ""
    rank = rank_expression(rank_by)
    return store.query(f"""WITH {_JUDGED}, hits AS (
            SELECT x.layer, x.neuron, x.explainer, x.sample, x.explanation,
                   list_cosine_similarity(e.embedding, $query::FLOAT[]) AS similarity
            FROM explanation_embeddings e
            JOIN explanations x ON x.model = e.model AND x.revision = e.revision AND x.layer = e.layer
                 AND x.neuron = e.neuron AND x.explainer = e.explainer AND x.sample = e.sample
                 AND sha256(x.explanation) = e.explanation_hash  -- changed since embedded: not found until re-embedded
            WHERE e.model = $model AND e.revision = $revision AND e.encoder = $encoder{layer_filter}
            QUALIFY row_number() OVER (PARTITION BY x.layer, x.neuron ORDER BY similarity DESC, x.explainer,
                                       x.sample) = 1
            ORDER BY similarity DESC LIMIT $k)
        SELECT h.layer, h.neuron, h.explanation, h.similarity, max({rank}) AS score, h.explainer, h.sample
        FROM hits h LEFT JOIN scores s ON s.model = $model AND s.revision = $revision AND s.layer = h.layer
             AND s.neuron = h.neuron AND s.explainer = h.explainer AND s.sample = h.sample
             LEFT JOIN judged j ON j.layer = h.layer AND j.neuron = h.neuron AND j.explainer = h.explainer
             AND j.sample = h.sample
        GROUP BY ALL ORDER BY h.similarity DESC, h.layer, h.neuron""",
        {"model": model, "revision": revision, "encoder": encoder, "query": query, "k": int(k)})


def unit_logits(store: Store, model: str, revision: str, layer: int,
                neurons: Sequence[int] | None = None) -> pd.DataFrame:
    """The layer's `unit_logits` rows (of `neurons`, default all), by neuron."""
    neuron_filter = f" AND neuron IN {_in(neurons)}" if neurons is not None else ""
    return store.query(f"""SELECT * EXCLUDE (model, revision) FROM unit_logits WHERE model = ? AND revision = ?
                           AND layer = ?{neuron_filter} ORDER BY neuron""", [model, revision, layer])


def has_unit_logits(store: Store, model: str, revision: str, layer: int) -> bool:
    with store.connect() as con:
        row = con.execute("SELECT count(*) FROM unit_logits WHERE model = ? AND revision = ? AND layer = ?",
                          [model, revision, layer]).fetchone()
    return bool(row and row[0])
