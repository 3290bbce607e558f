"""One Arrow schema per table: the DuckDB DDL, the recorders' and importers' tables all derive from it.

Column meanings are in the README ("What you get"). `neuron` is the unit's index within its layer: an MLP
neuron, or an SAE latent when the model's units are a dictionary's.
"""

from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa

_KEY = [pa.field("model", pa.string()), pa.field("revision", pa.string())]
_UNIT = [*_KEY, pa.field("layer", pa.int32()), pa.field("neuron", pa.int32())]
_JSON = {b"duckdb_type": b"JSON"}  # stored as DuckDB JSON, carried as a string in Arrow

TABLES: dict[str, pa.Schema] = {
    "models": pa.schema([
        *_KEY, ("source", pa.string()), ("architecture", pa.string()), ("units", pa.string()),
        ("n_layers", pa.int32()), ("n_neurons", pa.int32()), ("dtype", pa.string()),
        ("corpus_fingerprint", pa.string()), ("n_excerpts", pa.int32()), ("registered_at", pa.timestamp("us"))]),
    "excerpts": pa.schema([
        *_KEY, ("excerpt_id", pa.int32()), ("doc_id", pa.int32()), ("position", pa.int32()),
        ("token_ids", pa.list_(pa.int32())), ("tokens", pa.list_(pa.string()))]),
    "activation_records": pa.schema([
        *_UNIT, ("kind", pa.string()), ("band", pa.int16()), ("rank", pa.int16()), ("excerpt_id", pa.int32()),
        ("max_activation", pa.float32()), ("activations", pa.list_(pa.float32()))]),
    "neuron_stats": pa.schema([
        *_UNIT, ("count", pa.int64()), ("mean", pa.float64()), ("variance", pa.float64()),
        ("skewness", pa.float64()), ("kurtosis", pa.float64()), ("max", pa.float64()),
        ("frac_positive", pa.float64()), ("quantile_boundaries", pa.list_(pa.float32()))]),
    "explanations": pa.schema([
        *_UNIT, ("explainer", pa.string()), ("sample", pa.int16()), ("explanation", pa.string()),
        ("completion", pa.string()), ("variant", pa.string()), ("valid_score", pa.float64()), ("chosen", pa.bool_()),
        ("created_at", pa.timestamp("us"))]),
    "simulations": pa.schema([
        *_UNIT, ("explainer", pa.string()), ("simulator", pa.string()), ("sample", pa.int16()),
        ("excerpt_id", pa.int32()), ("kind", pa.string()), ("simulated", pa.list_(pa.float32()))]),
    "scores": pa.schema([
        *_UNIT, ("explainer", pa.string()), ("simulator", pa.string()), ("sample", pa.int16()),
        ("explanation", pa.string()), ("score_top_and_random", pa.float64()), ("score_random_only", pa.float64()),
        ("rsquared", pa.float64()), ("absolute_dev_explained", pa.float64()), ("n_tokens", pa.int32()),
        ("reason", pa.string())]),
    "judge_scores": pa.schema([
        *_UNIT, ("explainer", pa.string()), ("scorer", pa.string()), ("sample", pa.int16()),
        ("explanation", pa.string()), ("auroc", pa.float64()), ("balanced_accuracy", pa.float64()),
        ("n_positive", pa.int32()), ("n_negative", pa.int32()), ("excerpt_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.bool_())), ("log_odds", pa.list_(pa.float32())), ("reason", pa.string()),
        ("created_at", pa.timestamp("us"))]),
    # How interpretable a unit is without an explanation (autointerp/score/intruder.py): per trial, where the
    # intruder was, which excerpt the judge named, and the excerpts shown in order (n_shown per trial).
    "intruder_scores": pa.schema([
        *_UNIT, ("scorer", pa.string()), ("accuracy", pa.float64()), ("p_intruder", pa.float64()),
        ("n_trials", pa.int32()), ("n_shown", pa.int32()), ("intruders", pa.list_(pa.int16())),
        ("picks", pa.list_(pa.int16())), ("excerpt_ids", pa.list_(pa.int32())), ("reason", pa.string()),
        ("created_at", pa.timestamp("us"))]),
    # One row per chosen explanation and sentence encoder, for search by meaning (autointerp/search.py): the
    # normalised embedding, and the sha256 of the text it embeds, so only changed explanations are re-embedded.
    "explanation_embeddings": pa.schema([
        *_UNIT, ("explainer", pa.string()), ("sample", pa.int16()), ("explanation_hash", pa.string()),
        ("encoder", pa.string()), ("embedding", pa.list_(pa.float32())), ("created_at", pa.timestamp("us"))]),
    # What each unit writes (autointerp/units/output.py): the tokens its output direction promotes and suppresses
    # most through the final norm and the unembedding, strongest first, with their logits.
    "unit_logits": pa.schema([
        *_UNIT, ("promoted_ids", pa.list_(pa.int32())), ("promoted_tokens", pa.list_(pa.string())),
        ("promoted_logits", pa.list_(pa.float32())), ("suppressed_ids", pa.list_(pa.int32())),
        ("suppressed_tokens", pa.list_(pa.string())), ("suppressed_logits", pa.list_(pa.float32())),
        ("created_at", pa.timestamp("us"))]),
    "llm_calls": pa.schema([
        ("key", pa.string()), ("backend", pa.string()), ("model", pa.string()), ("kind", pa.string()),
        pa.field("request", pa.string(), metadata=_JSON), pa.field("response", pa.string(), metadata=_JSON),
        ("prompt_tokens", pa.int32()), ("completion_tokens", pa.int32()), ("latency_s", pa.float64()),
        ("created_at", pa.timestamp("us"))]),
}

_DUCKDB_TYPES = {pa.string(): "VARCHAR", pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
                 pa.float32(): "FLOAT", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN",
                 pa.timestamp("us"): "TIMESTAMP"}


def duckdb_type(field: pa.Field) -> str:
    if field.metadata and b"duckdb_type" in field.metadata:
        return field.metadata[b"duckdb_type"].decode()
    if pa.types.is_list(field.type):
        return duckdb_type(pa.field(field.name, field.type.value_type)) + "[]"
    return _DUCKDB_TYPES[field.type]


def ddl(existing: Mapping[str, set[str]] | None = None) -> str:
    """The statements that create what `existing` (table -> its columns) lacks, in the schemas' column order:
    every table for a new store; for one made by an older version, the new columns (NULL in its old rows)."""
    existing = existing or {}
    statements = []
    for name, schema in TABLES.items():
        if name not in existing:
            columns = ", ".join(f'"{f.name}" {duckdb_type(f)}' for f in schema)
            statements.append(f"CREATE TABLE IF NOT EXISTS {name} ({columns});")
            continue
        statements += [f'ALTER TABLE {name} ADD COLUMN IF NOT EXISTS "{f.name}" {duckdb_type(f)};'
                       for f in schema if f.name not in existing[name]]
    return "\n".join(statements)


def table(name: str, columns: Mapping[str, Any] | None = None, rows: list[dict[str, Any]] | None = None) -> pa.Table:
    """An Arrow table of `name`'s schema from columns (arrays or lists) or from row dicts.

    Columns the caller leaves out are NULL; a column the schema lacks is an error (a typo, not data).
    """
    schema = TABLES[name]
    if rows is not None:
        unknown = {key for row in rows[:1] for key in row} - set(schema.names)
        if unknown:
            raise KeyError(f"table {name} has no column(s) {sorted(unknown)}")
        return pa.Table.from_pylist(rows, schema)
    columns = dict(columns or {})
    unknown = set(columns) - set(schema.names)
    if unknown:
        raise KeyError(f"table {name} has no column(s) {sorted(unknown)}")
    length = len(next(iter(columns.values()))) if columns else 0
    arrays = [_array(columns[f.name], f.type) if f.name in columns else pa.nulls(length, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _array(values: Any, type_: pa.DataType) -> pa.Array:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.cast(type_)
    return pa.array(values, type_)
