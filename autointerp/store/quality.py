"""Great Expectations suites that guard each table, run on every write and by the Dagster asset checks.

Each suite is an SQL "audit" query that turns the rows of one scope (a model revision's layers, for one
explainer and simulator) into one flat row per record with the facts to check (is every value finite? does
the excerpt exist?), validated by a GX 1.x suite. `Store.replace` runs the suites of the tables it writes
inside its transaction, so failing rows never land; the asset checks run the same suites on stored rows.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import pandas as pd

from autointerp.corpus.excerpts import EXCERPT_TOKENS
from autointerp.errors import ValidationError
from autointerp.names import MODEL_NAME_PATTERN
from autointerp.record.columns import KINDS, STAT_COLUMNS

if TYPE_CHECKING:  # annotations only: explain/llm.py reads PROMPT_ECHO where DuckDB is not installed
    import duckdb

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

# An answer with prompt syntax in it is the explainer echoing its prompt, not an explanation.
PROMPT_ECHO = r"(<start>|<end>|\t|Explanation of neuron|the main thing this neuron does is find|\bunknown\b)"
EXPLANATION_CHARS = (2, 400)  # a chosen explanation is one sentence: shorter is no answer, longer a runaway one


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


@dataclass(frozen=True)
class Scope:
    """Which rows of a table a suite checks: a model revision, optionally some layers, an explainer, a simulator."""

    model: str
    revision: str | None  # None: every revision of the model
    layers: tuple[int, ...] | None = None
    explainer: str | None = None
    simulator: str | None = None
    scorer: str | None = None
    encoder: str | None = None

    @classmethod
    def of(cls, where: Mapping[str, Any]) -> "Scope":
        layers = where.get("layer")
        if layers is not None:
            layers = tuple(int(x) for x in (layers if isinstance(layers, (list, tuple)) else [layers]))
        return cls(where["model"], where.get("revision"), layers, where.get("explainer"), where.get("simulator"),
                   where.get("scorer"), where.get("encoder"))

    def clause(self, alias: str = "") -> tuple[str, dict[str, Any]]:
        """SQL condition and named parameters selecting the scope's rows."""
        from autointerp.store.database import where_clause  # here: explain/ reads this module's rules without DuckDB

        where: dict[str, Any] = {"model": self.model}
        if self.revision is not None:
            where["revision"] = self.revision
        if self.layers is not None:
            where["layer"] = list(self.layers)
        where.update({column: getattr(self, column) for column in ("explainer", "simulator", "scorer", "encoder")
                      if getattr(self, column) is not None})
        return where_clause(where, alias)


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


def check_models(con: duckdb.DuckDBPyConnection, scope: Scope) -> QualityReport:
    clause, params = scope.clause()
    frame = con.execute(f"SELECT model, revision, n_layers, n_neurons FROM models WHERE {clause}", params).df()
    e = _gxe()
    return validate("models", frame, [
        e.ExpectColumnValuesToMatchRegex(column="model", regex=MODEL_NAME_PATTERN),
        e.ExpectColumnValuesToBeBetween(column="n_layers", min_value=1),
        e.ExpectColumnValuesToBeBetween(column="n_neurons", min_value=1),
        e.ExpectCompoundColumnsToBeUnique(column_list=["model", "revision"]),
    ])


def check_excerpts(con: duckdb.DuckDBPyConnection, scope: Scope, tokens: int | None = None) -> QualityReport:
    """Unique excerpt ids, a string per token id; `tokens`: exactly that many tokens each (a recorded corpus,
    64; imported excerpts carry only their strings, of any length)."""
    clause, params = scope.clause()
    frame = con.execute(
        f"""SELECT excerpt_id, coalesce(len(token_ids), len(tokens)) AS n_token_ids, len(tokens) AS n_tokens,
                   token_ids IS NOT NULL AS has_ids, count(*) OVER (PARTITION BY excerpt_id) AS copies
            FROM excerpts WHERE {clause}""", params).df()
    e = _gxe()
    expectations = [
        e.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=1),
        e.ExpectColumnPairValuesToBeEqual(column_A="n_token_ids", column_B="n_tokens"),
        e.ExpectColumnValuesToBeBetween(column="copies", min_value=1, max_value=1),
        e.ExpectColumnValuesToNotBeNull(column="excerpt_id"),
    ]
    if tokens is not None:
        expectations += [e.ExpectColumnValuesToBeBetween(column="n_token_ids", min_value=tokens, max_value=tokens),
                         e.ExpectColumnValuesToBeInSet(column="has_ids", value_set=[True])]
    return validate("excerpts", frame, expectations)


def check_activation_records(con: duckdb.DuckDBPyConnection, scope: Scope,
                             counts: Mapping[str, int] | None = None) -> QualityReport:
    """With `counts` (kind -> records per neuron), every neuron of the layers must have exactly that many."""
    clause, params = scope.clause("r")
    n_neurons = con.execute("SELECT n_neurons FROM models WHERE model = $model AND revision = $revision",
                            {"model": scope.model, "revision": scope.revision}).fetchone() if scope.revision else None
    layers = list(scope.layers or [])
    wanted = "SELECT NULL::INTEGER AS layer, NULL::INTEGER AS neuron, NULL AS kind, NULL::INTEGER AS expected WHERE FALSE"
    if counts is not None and n_neurons is not None:
        wanted = """SELECT l.layer, n.neuron::INTEGER AS neuron, k.kind, k.expected
                    FROM (SELECT unnest($layers) AS layer) l, (SELECT range AS neuron FROM range($n_neurons)) n,
                         (SELECT unnest($kinds::VARCHAR[]) AS kind, unnest($expected::INTEGER[]) AS expected) k"""
        params.update({"layers": layers, "n_neurons": int(n_neurons[0]), "kinds": list(counts),
                       "expected": list(counts.values())})
    # One audit row per (layer, neuron, kind): a whole model is millions of records, too many for pandas.
    frame = con.execute(
        f"""WITH audited AS (
                SELECT r.layer, r.neuron, r.kind,
                       len(r.activations) AS n_activations,
                       len(r.activations) = coalesce(len(e.tokens), -1) AS matches_tokens,
                       len(list_filter(r.activations, lambda x: x IS NULL OR NOT isfinite(x))) = 0 AS all_finite,
                       e.excerpt_id IS NOT NULL AS excerpt_exists,
                       -- top records, and quantile records within a band, are ranked by max activation
                       r.kind = 'random' OR coalesce(r.max_activation <= lag(r.max_activation) OVER w, TRUE) AS sorted_ok,
                       r.max_activation = list_max(r.activations) AS max_matches
                FROM activation_records r
                LEFT JOIN excerpts e ON e.model = r.model AND e.revision = r.revision AND e.excerpt_id = r.excerpt_id
                WHERE {clause}
                WINDOW w AS (PARTITION BY r.layer, r.neuron, r.kind, r.band ORDER BY r.rank)),
            wanted AS ({wanted})
            SELECT coalesce(w.layer, a.layer) AS layer, coalesce(w.neuron, a.neuron) AS neuron,
                   coalesce(w.kind, a.kind) AS kind, w.expected, count(a.neuron) AS actual,
                   coalesce(min(a.n_activations), 1) AS min_activations,
                   coalesce(bool_and(a.matches_tokens), TRUE) AS matches_tokens,
                   coalesce(bool_and(a.all_finite), TRUE) AS all_finite,
                   coalesce(bool_and(a.excerpt_exists), TRUE) AS excerpts_exist,
                   coalesce(bool_and(a.sorted_ok), TRUE) AS sorted_ok,
                   coalesce(bool_and(a.max_matches), TRUE) AS max_matches
            FROM wanted w FULL OUTER JOIN audited a ON a.layer = w.layer AND a.neuron = w.neuron AND a.kind = w.kind
            GROUP BY ALL""", params).df()
    e = _gxe()
    expectations = [
        e.ExpectColumnValuesToBeInSet(column="kind", value_set=list(KINDS)),
        e.ExpectColumnValuesToBeInSet(column="all_finite", value_set=[True]),
        e.ExpectColumnValuesToBeBetween(column="min_activations", min_value=1),
        e.ExpectColumnValuesToBeInSet(column="matches_tokens", value_set=[True]),
        e.ExpectColumnValuesToBeInSet(column="excerpts_exist", value_set=[True]),
        e.ExpectColumnValuesToBeInSet(column="sorted_ok", value_set=[True]),
        e.ExpectColumnValuesToBeInSet(column="max_matches", value_set=[True]),
    ]
    if counts is not None:
        expectations += [
            e.ExpectColumnPairValuesToBeEqual(column_A="actual", column_B="expected"),
            # rows for an unknown kind or neuron appear with no expected count
            e.ExpectColumnValuesToNotBeNull(column="expected"),
        ]
    return validate("activation_records", frame, expectations)


def check_neuron_stats(con: duckdb.DuckDBPyConnection, scope: Scope, complete: bool = False) -> QualityReport:
    """`complete`: every neuron of each layer has its row (a recording; an import may hold a subset)."""
    clause, params = scope.clause("s")
    finite = " AND ".join(f"coalesce(isfinite(s.{c}), TRUE)" for c in STAT_COLUMNS if c != "count")
    frame = con.execute(
        f"""SELECT s.layer, s.neuron, s.count, s.variance, s.frac_positive, {finite} AS all_finite,
                  count(*) OVER (PARTITION BY s.layer, s.neuron) AS copies,
                  -- the largest activation seen must be the top-1 record's maximum
                  abs(s.max - t.max_activation) <= 1e-5 * greatest(1, abs(s.max)) AS max_matches_top,
                  m.n_neurons
           FROM neuron_stats s
           JOIN models m ON m.model = s.model AND m.revision = s.revision
           LEFT JOIN activation_records t ON t.model = s.model AND t.revision = s.revision AND t.layer = s.layer
                AND t.neuron = s.neuron AND t.kind = 'top' AND t.rank = 0
           WHERE {clause}""", params).df()
    e = _gxe()
    expectations = [
        e.ExpectColumnValuesToBeInSet(column="all_finite", value_set=[True]),
        e.ExpectColumnValuesToBeBetween(column="variance", min_value=0),
        e.ExpectColumnValuesToBeBetween(column="frac_positive", min_value=0, max_value=1),
        e.ExpectColumnValuesToBeBetween(column="count", min_value=1),
        e.ExpectColumnValuesToBeBetween(column="copies", min_value=1, max_value=1),
        e.ExpectColumnValuesToBeInSet(column="max_matches_top", value_set=[True]),
    ]
    if complete and len(frame):
        expected_rows = int(frame.n_neurons.iloc[0]) * len(scope.layers or frame.layer.unique())
        expectations.append(e.ExpectTableRowCountToEqual(value=expected_rows))
    return validate("neuron_stats", frame, expectations)


def check_explanations(con: duckdb.DuckDBPyConnection, scope: Scope) -> QualityReport:
    """Chosen explanations are usable sentences, one per neuron; the other candidates (best-of-n) may be any
    text, each neuron's samples are unique."""
    clause, params = scope.clause()
    frame = con.execute(
        f"""SELECT layer, neuron, explainer, sample, explanation, coalesce(chosen, TRUE) AS chosen,
                   count(*) FILTER (WHERE coalesce(chosen, TRUE)) OVER (PARTITION BY layer, neuron, explainer)
                       AS chosen_per_neuron
            FROM explanations WHERE {clause}""", params).df()
    e = _gxe()
    report = validate("explanations", frame, [
        e.ExpectCompoundColumnsToBeUnique(column_list=["layer", "neuron", "explainer", "sample"]),
        e.ExpectColumnValuesToBeBetween(column="chosen_per_neuron", min_value=1, max_value=1),
    ])
    if report.passed:
        report = validate("explanations", frame[frame.chosen], [
            e.ExpectColumnValuesToNotBeNull(column="explanation"),
            e.ExpectColumnValueLengthsToBeBetween(column="explanation", min_value=EXPLANATION_CHARS[0],
                                                  max_value=EXPLANATION_CHARS[1]),
            e.ExpectColumnValuesToNotMatchRegex(column="explanation", regex=PROMPT_ECHO),
        ])
    return report


def check_simulations(con: duckdb.DuckDBPyConnection, scope: Scope) -> QualityReport:
    clause, params = scope.clause()
    frame = con.execute(
        f"""SELECT s.layer, s.neuron, s.explainer, s.simulator, s.sample, s.excerpt_id, s.kind,
                  len(s.simulated) AS n_values, coalesce(len(e.tokens), -1) AS n_tokens,
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
        e.ExpectCompoundColumnsToBeUnique(column_list=["layer", "neuron", "explainer", "simulator", "sample",
                                                       "excerpt_id", "kind"]),
    ])


def check_scores(con: duckdb.DuckDBPyConnection, scope: Scope) -> QualityReport:
    clause, params = scope.clause()
    frame = con.execute(
        f"""SELECT layer, neuron, explainer, simulator, sample, score_top_and_random, score_random_only, rsquared,
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
        e.ExpectCompoundColumnsToBeUnique(column_list=["layer", "neuron", "explainer", "simulator", "sample"]),
    ])


def check_judge_scores(con: duckdb.DuckDBPyConnection, scope: Scope) -> QualityReport:
    clause, params = scope.clause()
    frame = con.execute(
        f"""SELECT layer, neuron, explainer, scorer, sample, auroc, balanced_accuracy, n_positive, n_negative,
                  -- one judgement per excerpt shown, and as many as the two classes hold
                  len(labels) = len(log_odds) AND len(labels) = len(excerpt_ids)
                      AND len(labels) = n_positive + n_negative AS aligned,
                  list_count(list_filter(labels, lambda x: x)) = n_positive AS positives_counted,
                  list_count(list_filter(log_odds, lambda x: NOT isfinite(x))) = 0 AS finite,
                  (auroc IS NULL) = (reason IS NOT NULL) AS null_explained
           FROM judge_scores WHERE {clause}""", params).df()
    e = _gxe()
    return validate("judge_scores", frame, [
        e.ExpectColumnValuesToBeBetween(column="auroc", min_value=0, max_value=1),
        e.ExpectColumnValuesToBeBetween(column="balanced_accuracy", min_value=0, max_value=1),
        e.ExpectColumnValuesToBeBetween(column="n_positive", min_value=0),
        e.ExpectColumnValuesToBeBetween(column="n_negative", min_value=0),
        *(e.ExpectColumnValuesToBeInSet(column=c, value_set=[True])
          for c in ("aligned", "positives_counted", "finite", "null_explained")),
        e.ExpectCompoundColumnsToBeUnique(column_list=["layer", "neuron", "explainer", "scorer", "sample"]),
    ])


def check_intruder_scores(con: duckdb.DuckDBPyConnection, scope: Scope) -> QualityReport:
    """Accuracy and the intruder's probability within [0, 1] (NULL only with a reason), the accuracy the one the
    stored picks give, every pick and intruder a place shown, one row per unit and scorer."""
    clause, params = scope.clause()
    frame = con.execute(
        f"""SELECT layer, neuron, scorer, accuracy, p_intruder, n_trials, n_shown,
                  len(intruders) = n_trials AND len(picks) = n_trials
                      AND len(excerpt_ids) = n_trials * n_shown AS aligned,
                  len(list_filter(intruders || picks, lambda x: x < 0 OR x >= n_shown)) = 0 AS in_range,
                  n_trials = 0 OR abs(accuracy - len(list_filter(list_zip(intruders, picks),
                                                                 lambda x: x[1] = x[2])) / n_trials) < 1e-9
                      AS accuracy_counted,
                  (accuracy IS NULL) = (reason IS NOT NULL) AND (accuracy IS NULL) = (n_trials = 0) AS null_explained
           FROM intruder_scores WHERE {clause}""", params).df()
    e = _gxe()
    return validate("intruder_scores", frame, [
        e.ExpectColumnValuesToBeBetween(column="accuracy", min_value=0, max_value=1),
        e.ExpectColumnValuesToBeBetween(column="p_intruder", min_value=0, max_value=1),
        e.ExpectColumnValuesToBeBetween(column="n_shown", min_value=3),
        *(e.ExpectColumnValuesToBeInSet(column=c, value_set=[True])
          for c in ("aligned", "in_range", "accuracy_counted", "null_explained")),
        e.ExpectCompoundColumnsToBeUnique(column_list=["layer", "neuron", "scorer"]),
    ])


def check_explanation_embeddings(con: duckdb.DuckDBPyConnection, scope: Scope) -> QualityReport:
    """Every embedding finite and of unit norm (search ranks by their dot product), one length per encoder, one
    row per explanation and encoder."""
    clause, params = scope.clause()
    frame = con.execute(
        f"""SELECT layer, neuron, explainer, sample, encoder, len(embedding) AS dims,
                  count(DISTINCT len(embedding)) OVER (PARTITION BY encoder) AS dims_per_encoder,
                  len(list_filter(embedding, lambda x: x IS NULL OR NOT isfinite(x))) = 0 AS finite,
                  abs(sqrt(list_dot_product(embedding, embedding)) - 1) < 1e-3 AS unit_norm,
                  length(explanation_hash) = 64 AS hashed
           FROM explanation_embeddings WHERE {clause}""", params).df()
    e = _gxe()
    return validate("explanation_embeddings", frame, [
        e.ExpectColumnValuesToBeBetween(column="dims", min_value=1),
        e.ExpectColumnValuesToBeBetween(column="dims_per_encoder", min_value=1, max_value=1),
        *(e.ExpectColumnValuesToBeInSet(column=c, value_set=[True]) for c in ("finite", "unit_norm", "hashed")),
        e.ExpectCompoundColumnsToBeUnique(column_list=["layer", "neuron", "explainer", "sample", "encoder"]),
    ])


def check_unit_logits(con: duckdb.DuckDBPyConnection, scope: Scope) -> QualityReport:
    """k promoted and k suppressed tokens per unit, strongest first, finite, every promoted logit above every
    suppressed one; each layer complete (one row per unit of the model)."""
    clause, params = scope.clause("u")
    frame = con.execute(
        f"""SELECT u.layer, u.neuron, m.n_neurons,
                  count(*) OVER (PARTITION BY u.layer) AS rows_in_layer,
                  len(u.promoted_ids) AS k,
                  len(u.promoted_ids) = len(u.promoted_tokens) AND len(u.promoted_ids) = len(u.promoted_logits)
                      AND len(u.promoted_ids) = len(u.suppressed_ids)
                      AND len(u.suppressed_ids) = len(u.suppressed_tokens)
                      AND len(u.suppressed_ids) = len(u.suppressed_logits) AS aligned,
                  len(list_filter(u.promoted_logits || u.suppressed_logits,
                                  lambda x: x IS NULL OR NOT isfinite(x))) = 0 AS finite,
                  u.promoted_logits = list_reverse_sort(u.promoted_logits) AS promoted_sorted,
                  u.suppressed_logits = list_sort(u.suppressed_logits) AS suppressed_sorted,
                  list_min(u.promoted_logits) >= list_max(u.suppressed_logits) AS separated
           FROM unit_logits u JOIN models m ON m.model = u.model AND m.revision = u.revision
           WHERE {clause}""", params).df()
    e = _gxe()
    return validate("unit_logits", frame, [
        e.ExpectColumnValuesToBeBetween(column="k", min_value=1),
        e.ExpectColumnPairValuesToBeEqual(column_A="rows_in_layer", column_B="n_neurons"),
        *(e.ExpectColumnValuesToBeInSet(column=c, value_set=[True])
          for c in ("aligned", "finite", "promoted_sorted", "suppressed_sorted", "separated")),
        e.ExpectCompoundColumnsToBeUnique(column_list=["layer", "neuron"]),
    ])


# table -> its suite; `Replacement.expect` supplies the suite's extra arguments.
SUITES: dict[str, Callable[..., QualityReport]] = {
    "models": check_models,
    "excerpts": check_excerpts,
    "activation_records": check_activation_records,
    "neuron_stats": check_neuron_stats,
    "explanations": check_explanations,
    "simulations": check_simulations,
    "scores": check_scores,
    "judge_scores": check_judge_scores,
    "intruder_scores": check_intruder_scores,
    "explanation_embeddings": check_explanation_embeddings,
    "unit_logits": check_unit_logits,
}


def check_replacement(con: duckdb.DuckDBPyConnection, replacement: Any) -> None:
    """Inside a write transaction: the written table's suite on the replaced scope; raises ValidationError."""
    suite = SUITES.get(replacement.table)
    if suite is not None:
        suite(con, Scope.of(replacement.where), **replacement.expect).raise_if_failed()
