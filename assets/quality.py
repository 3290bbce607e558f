"""Great Expectations suites that guard each stage's tables.

Each check is an SQL "audit" query that turns the stored rows into one flat row per record with
the facts to check (is every value finite? does the excerpt exist?), validated by a GX 1.x suite.
The same function runs inside the write transaction (bad rows never land) and as a Dagster asset
check on the stored table (corruption after the fact is caught and blocks downstream stages).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import duckdb
import pandas as pd

from autointerp.config import RecordSpec
from autointerp.errors import ValidationError
from autointerp.explainer import PROMPT_ECHO
from autointerp.recording import EXCERPT_TOKENS, KINDS, STAT_COLUMNS, expected_counts

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


@dataclass
class QualityReport:
    suite: str
    rows: int
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        if self.passed:
            return f"{self.suite}: all expectations met on {self.rows:,} rows"
        return f"{self.suite}: {len(self.failures)} expectation(s) failed on {self.rows:,} rows: " + "; ".join(self.failures)

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise ValidationError(self.summary())


@functools.cache
def _gx_context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def validate(suite_name: str, frame: pd.DataFrame, expectations: Sequence[Any]) -> QualityReport:
    """Validate `frame` with a GX suite built from `expectations`; an empty frame fails."""
    import great_expectations as gx

    report = QualityReport(suite_name, len(frame))
    if frame.empty:
        report.failures.append("no rows")
        return report
    context = _gx_context()
    name = f"{suite_name}_{id(frame)}"
    asset = context.data_sources.add_or_update_pandas("autointerp").add_dataframe_asset(name=name)
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    suite = gx.ExpectationSuite(name=suite_name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    for result in batch.validate(suite).results:
        if not result.success:
            kwargs = {k: v for k, v in result.expectation_config.kwargs.items() if k != "batch_id"}
            sample = result.result.get("partial_unexpected_list", [])[:3]
            unexpected = result.result.get("unexpected_count", "?")
            report.failures.append(f"{result.expectation_config.type}{kwargs}: {unexpected} unexpected, e.g. {sample}")
    context.data_sources.get("autointerp").delete_asset(name)
    return report


def _gxe() -> Any:
    import great_expectations as gx

    return gx.expectations


def check_excerpts(con: duckdb.DuckDBPyConnection, model: str, revision: str) -> QualityReport:
    frame = con.execute(
        """SELECT excerpt_id, len(token_ids) AS n_token_ids, len(tokens) AS n_tokens,
                  count(*) OVER (PARTITION BY excerpt_id) AS copies
           FROM excerpts WHERE model = ? AND revision = ?""", [model, revision]).df()
    e = _gxe()
    return validate("excerpts", frame, [
        e.ExpectColumnValuesToBeBetween(column="n_token_ids", min_value=EXCERPT_TOKENS, max_value=EXCERPT_TOKENS),
        e.ExpectColumnPairValuesToBeEqual(column_A="n_token_ids", column_B="n_tokens"),
        e.ExpectColumnValuesToBeBetween(column="copies", min_value=1, max_value=1),
        e.ExpectColumnValuesToNotBeNull(column="excerpt_id"),
    ])


def check_activation_records(con: duckdb.DuckDBPyConnection, model: str, revision: str, layers: Sequence[int],
                             spec: RecordSpec, n_neurons: int) -> QualityReport:
    n_excerpts = con.execute("SELECT count(*) FROM excerpts WHERE model = ? AND revision = ?", [model, revision]).fetchone()[0]
    expected = expected_counts(spec, n_excerpts)
    layer_list = ", ".join(str(int(layer)) for layer in layers)
    # One audit row per (layer, neuron, kind): a whole model is millions of records, too many for pandas.
    frame = con.execute(
        f"""WITH audited AS (
                SELECT r.layer, r.neuron, r.kind,
                       len(r.activations) AS n_activations,
                       len(r.activations) = coalesce(len(e.token_ids), -1) AS matches_tokens,
                       len(list_filter(r.activations, lambda x: x IS NULL OR NOT isfinite(x))) = 0 AS all_finite,
                       e.excerpt_id IS NOT NULL AS excerpt_exists,
                       -- top records, and quantile records within a band, are ranked by max activation
                       r.kind = 'random' OR coalesce(r.max_activation <= lag(r.max_activation) OVER w, TRUE) AS sorted_ok,
                       r.max_activation = list_max(r.activations) AS max_matches
                FROM activation_records r
                LEFT JOIN excerpts e ON e.model = r.model AND e.revision = r.revision AND e.excerpt_id = r.excerpt_id
                WHERE r.model = $model AND r.revision = $revision AND r.layer IN ({layer_list})
                WINDOW w AS (PARTITION BY r.layer, r.neuron, r.kind, r.band ORDER BY r.rank)),
            wanted AS (
                SELECT l.layer, n.neuron::INTEGER AS neuron, k.kind, k.expected
                FROM (SELECT unnest([{layer_list}]) AS layer) l,
                     (SELECT range AS neuron FROM range($n_neurons)) n,
                     (SELECT unnest($kinds::VARCHAR[]) AS kind, unnest($expected::INTEGER[]) AS expected) k)
            SELECT w.layer, w.neuron, w.kind, w.expected, count(a.neuron) AS actual,
                   coalesce(min(a.n_activations), {EXCERPT_TOKENS}) AS min_activations,
                   coalesce(max(a.n_activations), {EXCERPT_TOKENS}) AS max_activations,
                   coalesce(bool_and(a.matches_tokens), TRUE) AS matches_tokens,
                   coalesce(bool_and(a.all_finite), TRUE) AS all_finite,
                   coalesce(bool_and(a.excerpt_exists), TRUE) AS excerpts_exist,
                   coalesce(bool_and(a.sorted_ok), TRUE) AS sorted_ok,
                   coalesce(bool_and(a.max_matches), TRUE) AS max_matches
            FROM wanted w FULL OUTER JOIN audited a ON a.layer = w.layer AND a.neuron = w.neuron AND a.kind = w.kind
            GROUP BY ALL""",
        {"model": model, "revision": revision, "n_neurons": n_neurons, "kinds": list(KINDS),
         "expected": [expected[k] for k in KINDS]}).df()
    e = _gxe()
    return validate("activation_records", frame, [
        e.ExpectColumnPairValuesToBeEqual(column_A="actual", column_B="expected"),
        e.ExpectColumnValuesToBeInSet(column="all_finite", value_set=[True]),
        e.ExpectColumnValuesToBeBetween(column="min_activations", min_value=EXCERPT_TOKENS, max_value=EXCERPT_TOKENS),
        e.ExpectColumnValuesToBeBetween(column="max_activations", min_value=EXCERPT_TOKENS, max_value=EXCERPT_TOKENS),
        e.ExpectColumnValuesToBeInSet(column="matches_tokens", value_set=[True]),
        e.ExpectColumnValuesToBeInSet(column="excerpts_exist", value_set=[True]),
        e.ExpectColumnValuesToBeInSet(column="sorted_ok", value_set=[True]),
        e.ExpectColumnValuesToBeInSet(column="max_matches", value_set=[True]),
        # rows for an unknown kind or neuron appear with no expected count
        e.ExpectColumnValuesToNotBeNull(column="expected"),
    ])


def check_neuron_stats(con: duckdb.DuckDBPyConnection, model: str, revision: str, layers: Sequence[int],
                       n_neurons: int) -> QualityReport:
    layer_list = ", ".join(str(int(layer)) for layer in layers)
    finite = " AND ".join(f"isfinite(s.{c})" for c in STAT_COLUMNS if c != "count")
    frame = con.execute(
        f"""SELECT s.layer, s.neuron, s.count, s.variance, s.frac_positive,
                  {finite} AS all_finite,
                  count(*) OVER (PARTITION BY s.layer, s.neuron) AS copies,
                  -- the largest activation seen must be the top-1 record's maximum
                  abs(s.max - t.max_activation) <= 1e-5 * greatest(1, abs(s.max)) AS max_matches_top
           FROM neuron_stats s
           LEFT JOIN activation_records t ON t.model = s.model AND t.revision = s.revision AND t.layer = s.layer
                AND t.neuron = s.neuron AND t.kind = 'top' AND t.rank = 0
           WHERE s.model = ? AND s.revision = ? AND s.layer IN ({layer_list})""", [model, revision]).df()
    e = _gxe()
    report = validate("neuron_stats", frame, [
        e.ExpectColumnValuesToBeInSet(column="all_finite", value_set=[True]),
        e.ExpectColumnValuesToBeBetween(column="variance", min_value=0),
        e.ExpectColumnValuesToBeBetween(column="frac_positive", min_value=0, max_value=1),
        e.ExpectColumnValuesToBeBetween(column="count", min_value=1),
        e.ExpectColumnValuesToBeBetween(column="copies", min_value=1, max_value=1),
        e.ExpectColumnValuesToBeInSet(column="max_matches_top", value_set=[True]),
        e.ExpectTableRowCountToEqual(value=n_neurons * len(layers)),
    ])
    return report


def _scope(model: str, revision: str, layers: Sequence[int], role_columns: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """WHERE clause and parameters selecting one run's rows of a stage table."""
    params: dict[str, Any] = {"model": model, "revision": revision, "layers": [int(x) for x in layers], **role_columns}
    clause = "model = $model AND revision = $revision AND list_contains($layers, layer)"
    clause += "".join(f" AND {column} = ${column}" for column in role_columns)
    return clause, params




def check_explanations(con: duckdb.DuckDBPyConnection, model: str, revision: str, layers: Sequence[int],
                       explainer: str) -> QualityReport:
    clause, params = _scope(model, revision, layers, {"explainer": explainer})
    frame = con.execute(f"SELECT layer, neuron, sample, explanation FROM explanations WHERE {clause}", params).df()
    e = _gxe()
    return validate("explanations", frame, [
        e.ExpectColumnValuesToNotBeNull(column="explanation"),
        e.ExpectColumnValueLengthsToBeBetween(column="explanation", min_value=2, max_value=400),
        e.ExpectColumnValuesToNotMatchRegex(column="explanation", regex=PROMPT_ECHO),
        e.ExpectCompoundColumnsToBeUnique(column_list=["layer", "neuron", "sample"]),
    ])


def check_simulations(con: duckdb.DuckDBPyConnection, model: str, revision: str, layers: Sequence[int],
                      explainer: str, simulator: str) -> QualityReport:
    clause, params = _scope(model, revision, layers, {"explainer": explainer, "simulator": simulator})
    frame = con.execute(
        f"""SELECT s.layer, s.neuron, s.sample, s.excerpt_id, s.kind,
                  len(s.simulated) AS n_values, coalesce(len(e.token_ids), -1) AS n_tokens,
                  coalesce(list_min(s.simulated), -1) AS min_value, coalesce(list_max(s.simulated), 11) AS max_value,
                  len(list_filter(s.simulated, lambda x: x IS NULL OR NOT isfinite(x))) = 0 AS all_finite
           FROM (SELECT * FROM simulations WHERE {clause}) s
           LEFT JOIN excerpts e ON e.model = s.model AND e.revision = s.revision AND e.excerpt_id = s.excerpt_id""",
        params).df()
    e = _gxe()
    return validate("simulations", frame, [
        e.ExpectColumnPairValuesToBeEqual(column_A="n_values", column_B="n_tokens"),
        e.ExpectColumnValuesToBeBetween(column="min_value", min_value=0, max_value=10),
        e.ExpectColumnValuesToBeBetween(column="max_value", min_value=0, max_value=10),
        e.ExpectColumnValuesToBeInSet(column="all_finite", value_set=[True]),
        e.ExpectColumnValuesToBeInSet(column="kind", value_set=["top", "random"]),
        e.ExpectCompoundColumnsToBeUnique(column_list=["layer", "neuron", "sample", "excerpt_id", "kind"]),
    ])


def check_scores(con: duckdb.DuckDBPyConnection, model: str, revision: str, layers: Sequence[int],
                 explainer: str, simulator: str) -> QualityReport:
    clause, params = _scope(model, revision, layers, {"explainer": explainer, "simulator": simulator})
    frame = con.execute(
        f"""SELECT layer, neuron, sample, score_top_and_random, score_random_only, rsquared,
                  absolute_dev_explained, n_tokens,
                  -- a missing score must say why
                  (score_top_and_random IS NULL OR score_random_only IS NULL OR rsquared IS NULL
                   OR absolute_dev_explained IS NULL) = (reason IS NOT NULL) AS null_explained
           FROM scores WHERE {clause}""", params).df()
    e = _gxe()
    return validate("scores", frame, [
        e.ExpectColumnValuesToBeBetween(column="score_top_and_random", min_value=-1, max_value=1),
        e.ExpectColumnValuesToBeBetween(column="score_random_only", min_value=-1, max_value=1),
        e.ExpectColumnValuesToBeBetween(column="rsquared", max_value=1),
        e.ExpectColumnValuesToBeBetween(column="absolute_dev_explained", max_value=1),
        e.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=1),
        e.ExpectColumnValuesToBeInSet(column="null_explained", value_set=[True]),
        e.ExpectCompoundColumnsToBeUnique(column_list=["layer", "neuron", "sample"]),
    ])
