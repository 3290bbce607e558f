"""The pipeline's stages, one function each, for one model (and layer): what the Dagster assets, `eval/` and
`bench/` all call. Every stage reads its inputs from the store and replaces its output partition in one
transaction, checked by the table's quality suite (`store/quality.py`).

    excerpts(model)            the corpus cut into 64-token excerpts; registers the model's revision
    record(model, layers)      one forward pass: top/random/quantile records and stats of every layer
    explain(model, layer)      the selected neurons' explanations (best-of-n on the valid split)
    simulate(model, layer)     the chosen explanations simulated on the test split
    score(model, layer)        simulated vs real activations
    judge(model, layer)        the chosen explanations judged by detection and fuzzing (scoring.judges)
    intruder(model, layer)     how interpretable each selected unit is without an explanation (intruder trials)
    embed(model, layer)        the chosen explanations embedded for search by meaning (only new or changed ones)
    unit_logits(model, layers) the tokens each unit's output direction promotes and suppresses (once per revision)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Sequence

import pyarrow as pa

from autointerp.config import Config
from autointerp.corpus import EXCERPT_TOKENS, corpus_fingerprint, iter_documents, resolve_corpus_paths
from autointerp.corpus.excerpts import excerpts_table
from autointerp.errors import ModelLoadError, StoreError
from autointerp.explain import Explainer, ExplainerInput, Explanation, build_explainer
from autointerp.explain.best_of_n import choose
from autointerp.llm import LoadedLLMs
from autointerp.neurons import select_neurons
from autointerp.progress import Progress
from autointerp.record.records import NeuronRecord, load_neuron_records
from autointerp.devices import describe_device
from autointerp.record.recorder import expected_counts, record_activations, recording_batch_size
from autointerp.record.tables import records_table, stats_table
from autointerp.score import Scorer, ScoringItem, build_rankers, build_scorer, item_of, score_items
from autointerp.score.intruder import IntruderJudge, build_intruder
from autointerp.score.scoring import score_simulations
from autointerp.score.simulation import simulate_items
from autointerp.simulate import Simulation, Simulator, build_simulator
from autointerp.store import Replacement, Store, queries
from autointerp.store.schema import table
from autointerp.subject import ModelInfo, Subject

if TYPE_CHECKING:  # the sentence encoder loads on first use
    from autointerp.search import Embedded


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass
class ExcerptSet:
    model: str
    revision: str
    info: ModelInfo
    n_excerpts: int
    corpus_fingerprint: str
    dropped_stale_records: bool


@dataclass
class Recording:
    model: str
    revision: str
    layers: list[int]
    rows: int
    n_tokens: int
    seconds: float
    stats: pa.Table  # the layers' neuron_stats rows, for metadata
    shortfall: list[str] = field(default_factory=list)  # records the corpus is too small to give, said out loud
    device: str = "cpu"  # what ran the forward passes and reductions: 'cpu' or 'cuda:0 (card name)'
    batch_size: int = 0  # excerpts per forward pass (on CUDA sized from free memory)


@dataclass
class StageResult:
    """What an explain, simulate or score stage wrote for one (model, layer)."""

    model: str
    revision: str
    layer: int
    role: str  # the explainer's or simulator's name
    rows: list[dict[str, Any]] = field(default_factory=list)
    neurons: int = 0
    llm_calls_made: int = 0
    llm_calls_cached: int = 0


@dataclass
class Stages:
    config: Config
    store: Store
    log: Callable[[str], None] = print
    # simulate and score the stored explanations of this explainer (e.g. imported ones); default: the config's
    explainer_name: str | None = None
    # the LLMs the roles ask, loaded on first use: a Dagster run passes its LLMResource's, so the run owns them;
    # a script's Stages gets its own (every role of it shares one loaded model)
    llms: LoadedLLMs = field(default_factory=LoadedLLMs)

    @cached_property
    def explainer(self) -> Explainer:
        return build_explainer(self.config.explainer, self.config.base_dir, self.store, self.llms)

    @property
    def explained_by(self) -> str:
        """Whose explanations simulate and score read."""
        return self.explainer_name or self.explainer.name

    @cached_property
    def simulator(self) -> Simulator:
        return build_simulator(self.config.simulator, self.config.base_dir, self.store, self.llms)

    @cached_property
    def rankers(self) -> dict[str, Scorer]:
        """The scorers best-of-n chooses by (`scoring.rank_by`)."""
        return build_rankers(self.config, self.store, self.llms)

    @cached_property
    def intruder_scorer(self) -> IntruderJudge:
        return build_intruder(self.config, self.store, self.llms)

    @cached_property
    def judges(self) -> dict[str, Scorer]:
        return {kind: build_scorer(kind, self.config, self.store, self.llms) for kind in self.config.scoring.judges}

    # --- stage 1: record -------------------------------------------------------------------------------

    def excerpts(self, model: str) -> ExcerptSet:
        """Register the model's current revision and (re)write its excerpts in one transaction.

        If the corpus changed since this revision was last tokenized, its activation records point at
        excerpts that no longer exist, so they are deleted in the same transaction.
        """
        subject = Subject.of(self.config.model(model), self.config.base_dir)
        corpus = self.config.corpus
        paths = resolve_corpus_paths(corpus.paths, self.config.base_dir)
        fingerprint = corpus_fingerprint(paths, corpus.text_field, EXCERPT_TOKENS, corpus.max_tokens)
        revision, info = subject.revision, subject.info
        excerpts = excerpts_table(subject.tokenizer(), iter_documents(paths, corpus.text_field), corpus.max_tokens,
                                  model, revision, self.log)
        key = {"model": model, "revision": revision}
        row = table("models", rows=[{**key, "source": subject.spec.source, "architecture": info.architecture,
                                     "units": info.units, "n_layers": info.n_layers, "n_neurons": info.n_neurons,
                                     "dtype": subject.spec.dtype, "corpus_fingerprint": fingerprint,
                                     "n_excerpts": excerpts.num_rows, "registered_at": _now()}])
        previous = queries.model_row(self.store, model, revision)
        stale = previous is not None and previous["corpus_fingerprint"] != fingerprint
        replacements = [Replacement("models", key, row),
                        Replacement("excerpts", key, excerpts, expect={"tokens": EXCERPT_TOKENS})]
        if stale:
            self.log(f"corpus changed since revision {revision} was recorded: deleting its activation records")
            replacements += [Replacement("activation_records", key), Replacement("neuron_stats", key)]
        self.store.replace(replacements)
        return ExcerptSet(model, revision, info, excerpts.num_rows, fingerprint, stale)

    def record(self, model: str, layers: Sequence[int]) -> Recording:
        """Record `layers` of a configured model over its stored excerpts, in one forward pass, and replace
        those layers' rows in one transaction."""
        subject = Subject.of(self.config.model(model), self.config.base_dir)
        revision, info = subject.revision, subject.info
        bad = sorted(set(layers) - set(range(info.n_layers)))
        if bad:
            raise ModelLoadError(f"model '{model}' has {info.n_layers} layers (0-{info.n_layers - 1}); "
                                 f"no layer {', '.join(map(str, bad))}")
        without = sorted(set(layers) - set(info.unit_layers))
        if without:
            raise ModelLoadError(f"model '{model}' has no {info.units} units in layer {', '.join(map(str, without))} "
                                 f"(only in {', '.join(map(str, info.unit_layers))})")
        n_excerpts = queries.excerpt_count(self.store, model, revision)
        if n_excerpts == 0:
            raise StoreError(f"no excerpts for model '{model}' at revision {revision}: materialize `excerpts` first")
        self._require_recordable_excerpts(model, revision)
        shortfall = record_shortfall(self.config.records, n_excerpts)
        for line in shortfall:
            self.log(f"warning: {line}")
        device = subject.device()  # a missing CUDA device is a ConfigError here, before the model loads
        self.log(f"loading {model} ({subject.source.kind}, revision {revision}, {info.n_layers} layers x "
                 f"{info.n_neurons} {info.units} units) on {describe_device(device)}")
        started = time.monotonic()
        loaded = subject.load()
        batch_size = recording_batch_size(loaded, info.n_neurons, len(set(layers)), self.config.records)
        self.log(f"recording on {describe_device(device)}, {batch_size} excerpts per forward pass")
        results = record_activations(
            loaded, subject.units, layers,
            queries.iter_excerpt_batches(self.store, model, revision, batch_size),
            self.config.records, self.config.seed, info.n_neurons, n_excerpts, self.log)
        seconds = time.monotonic() - started
        ordered = [results[layer] for layer in sorted(results)]
        dead = {r.layer: int((r.stats["max"] <= 0).sum()) for r in ordered}
        if any(dead.values()):
            self.log("never active, so not explained: " + ", ".join(f"{n} units of layer {layer}"
                                                                    for layer, n in dead.items() if n))
        records, stats = records_table(model, revision, ordered), stats_table(model, revision, ordered)
        where = {"model": model, "revision": revision, "layer": sorted(results)}
        self.store.replace([
            Replacement("activation_records", where, records,
                        expect={"counts": expected_counts(self.config.records, n_excerpts)}),
            Replacement("neuron_stats", where, stats, expect={"complete": True})])
        return Recording(model, revision, sorted(results), records.num_rows, n_excerpts * EXCERPT_TOKENS, seconds,
                         stats, shortfall, describe_device(device), batch_size)

    def _require_recordable_excerpts(self, model: str, revision: str) -> None:
        """Bad data must not flow downstream, even in a run that did not evaluate the excerpts check."""
        from autointerp.errors import ValidationError
        from autointerp.store.quality import Scope, check_excerpts

        with self.store.connect() as con:
            report = check_excerpts(con, Scope(model, revision), tokens=EXCERPT_TOKENS)
        if not report.passed:
            raise ValidationError(f"upstream excerpts of '{model}' fail their check, not recording: {report.summary()}")

    # --- stages 2-4: explain, simulate, score ------------------------------------------------------------

    def neuron_records(self, model: str, revision: str, layer: int,
                       neurons: Sequence[int] | None = None) -> dict[int, NeuronRecord]:
        """The records of `neurons` of a layer (default: the config's selection), every one required."""
        if neurons is None:
            n_neurons = int(queries.current_model(self.store, model, revision)["n_neurons"])
            neurons = select_neurons(self.config.neurons, n_neurons, self.config.seed, layer,
                                     queries.dead_units(self.store, model, revision, layer))
        with self.store.connect() as con:
            records = {r.neuron: r for r in load_neuron_records(con, model, revision, layer, neurons)}
        missing = sorted(set(neurons) - set(records))
        if missing:
            raise StoreError(f"{model} layer {layer}: no activation records for neurons {missing[:10]}; "
                             "record the layer first")
        return records

    def explain(self, model: str, layer: int) -> StageResult:
        explainer = self.explainer
        revision = queries.current_model(self.store, model)["revision"]
        records = self.neuron_records(model, revision, layer)
        result = StageResult(model, revision, layer, explainer.name, neurons=len(records))
        if not records:
            return result
        calls = _CallCounter(explainer, *(self.rankers.values() if explainer.candidates > 1 else ()))
        progress = Progress(f"explaining {model} layer {layer}", len(records), "neurons", self.log)
        writes = queries.unit_logits(self.store, model, revision, layer, list(records))  # empty: not computed
        promoted = {int(row.neuron): list(row.promoted_tokens) for row in writes.itertuples()}
        inputs = [ExplainerInput.of(r, promoted.get(n, ())) for n, r in records.items()]
        candidates: list[Explanation] = []
        for lo in range(0, len(inputs), explainer.batch):
            chunk = inputs[lo:lo + explainer.batch]
            candidates += explainer.explain(chunk, self.config.seed)
            progress.advance(len(chunk) if explainer.candidates == 1 else 0)
        if explainer.candidates > 1:
            by_key = {(layer, n): r for n, r in records.items()}
            candidates = choose(candidates, by_key, self.rankers, progress.advance)
        now = _now()
        result.rows = [{"model": model, "revision": revision, "layer": e.layer, "neuron": e.neuron,
                        "explainer": explainer.name, "sample": e.sample, "explanation": e.explanation,
                        "completion": e.completion, "variant": e.variant, "valid_score": e.valid_score,
                        "chosen": e.chosen, "created_at": now} for e in candidates]
        self.store.replace([Replacement("explanations", _where(model, revision, layer, explainer=explainer.name),
                                        table("explanations", rows=result.rows))])
        calls.finish(result)
        return result

    def simulate(self, model: str, layer: int) -> StageResult:
        explainer, simulator = self.explained_by, self.simulator
        revision = queries.current_model(self.store, model)["revision"]
        explained = queries.explanations(self.store, model, revision, layer, explainer)
        result = StageResult(model, revision, layer, simulator.name)
        if explained.empty:
            raise StoreError(f"{model} layer {layer}: no explanations by {explainer}; run explain first")
        records = self.neuron_records(model, revision, layer, sorted({int(n) for n in explained.neuron}))
        calls = _CallCounter(simulator)
        progress = Progress(f"simulating {model} layer {layer}", len(explained), "neurons", self.log)
        items = list(explained.itertuples())
        for lo in range(0, len(items), simulator.batch):
            chunk = items[lo:lo + simulator.batch]
            simulated = simulate_items(simulator, [ScoringItem(e.explanation, tuple(records[int(e.neuron)].scored("test")))
                                                   for e in chunk])
            for e, excerpts in zip(chunk, simulated):
                result.rows += [{"model": model, "revision": revision, "layer": layer, "neuron": int(e.neuron),
                                 "explainer": explainer, "simulator": simulator.name, "sample": int(e.sample),
                                 "excerpt_id": int(x.record.excerpt_id or 0), "kind": x.kind,
                                 "simulated": list(x.simulated)} for x in excerpts]
            progress.advance(len(chunk))
        result.neurons = len(records)
        self.store.replace([Replacement("simulations",
                                        _where(model, revision, layer, explainer=explainer, simulator=simulator.name),
                                        table("simulations", rows=result.rows))])
        calls.finish(result)
        return result

    def score(self, model: str, layer: int) -> StageResult:
        explainer, simulator = self.explained_by, self.simulator.name
        revision = queries.current_model(self.store, model)["revision"]
        sims = queries.simulations(self.store, model, revision, layer, explainer, simulator)
        result = StageResult(model, revision, layer, simulator)
        if sims.empty:
            raise StoreError(f"{model} layer {layer}: no simulations by {simulator}; run simulate first")
        records = self.neuron_records(model, revision, layer, sorted({int(n) for n in sims.neuron}))
        real = {(n, kind, r.excerpt_id): r.activations for n, rec in records.items() for kind, r in rec.scored("test")}
        for (neuron, sample), group in sims.groupby(["neuron", "sample"], sort=True):
            simulations = [Simulation(layer, int(neuron), int(sample), int(row.excerpt_id), row.kind,
                                      tuple(row.simulated), real[(int(neuron), row.kind, int(row.excerpt_id))])
                           for row in group.itertuples()]
            scores = score_simulations(simulations)
            result.rows.append({"model": model, "revision": revision, "layer": layer, "neuron": int(neuron),
                                "explainer": explainer, "simulator": simulator, "sample": int(sample),
                                "explanation": group.explanation.iloc[0],
                                "score_top_and_random": scores.score_top_and_random,
                                "score_random_only": scores.score_random_only, "rsquared": scores.rsquared,
                                "absolute_dev_explained": scores.absolute_dev_explained,
                                "n_tokens": scores.n_tokens, "reason": scores.reason})
        result.neurons = len(records)
        self.store.replace([Replacement("scores", _where(model, revision, layer, explainer=explainer,
                                                         simulator=simulator), table("scores", rows=result.rows))])
        return result


    def judge(self, model: str, layer: int) -> StageResult:
        """Every chosen explanation of the layer through each judging scorer (`scoring.judges`), on the test
        split's top, quantile and random records; one transaction for all scorers."""
        explainer = self.explained_by
        revision = queries.current_model(self.store, model)["revision"]
        explained = queries.explanations(self.store, model, revision, layer, explainer)
        result = StageResult(model, revision, layer, "+".join(self.config.scoring.judges))
        if explained.empty:
            raise StoreError(f"{model} layer {layer}: no explanations by {explainer}; run explain first")
        records = self.neuron_records(model, revision, layer, sorted({int(n) for n in explained.neuron}))
        calls = _CallCounter(*self.judges.values())
        items = list(explained.itertuples())
        progress = Progress(f"judging {model} layer {layer}", len(items) * len(self.judges), "explanations", self.log)
        replacements = []
        now = _now()
        for scorer in self.judges.values():
            rows = []
            for e in items:
                [judged] = score_items(scorer, [item_of(scorer, e.explanation, records[int(e.neuron)], "test")])
                d = judged.details
                rows.append({"model": model, "revision": revision, "layer": layer, "neuron": int(e.neuron),
                             "explainer": explainer, "scorer": scorer.name, "sample": int(e.sample),
                             "explanation": e.explanation, "auroc": judged.value,
                             "balanced_accuracy": d["balanced_accuracy"], "n_positive": d["n_positive"],
                             "n_negative": d["n_negative"], "excerpt_ids": d["excerpt_ids"], "labels": d["labels"],
                             "log_odds": d["log_odds"], "reason": judged.reason, "created_at": now})
                progress.advance(1)
            result.rows += rows
            replacements.append(Replacement("judge_scores", _where(model, revision, layer, explainer=explainer,
                                                                    scorer=scorer.name),
                                            table("judge_scores", rows=rows)))
        result.neurons = len(records)
        if replacements:
            self.store.replace(replacements)
        calls.finish(result)
        return result

    def intruder(self, model: str, layer: int) -> StageResult:
        """The intruder score of the layer's selected units (no explanation read): `scoring.intruder_trials`
        trials each, judged by `scoring.intruder_judge`; one transaction."""
        scorer = self.intruder_scorer
        revision = queries.current_model(self.store, model)["revision"]
        records = self.neuron_records(model, revision, layer)
        result = StageResult(model, revision, layer, scorer.name, neurons=len(records))
        calls = _CallCounter(scorer)
        units = list(records.values())
        progress = Progress(f"intruder trials {model} layer {layer}", len(units), "units", self.log)
        now = _now()
        shown = self.config.scoring.intruder_shown + 1
        for lo in range(0, len(units), 8):  # a few units per call: progress moves and the cache fills as it goes
            chunk = units[lo:lo + 8]
            for unit, scored in zip(chunk, scorer.score(chunk)):
                result.rows.append({"model": model, "revision": revision, "layer": layer, "neuron": unit.neuron,
                                    "scorer": scorer.name, "accuracy": scored.accuracy,
                                    "p_intruder": scored.p_intruder, "n_trials": len(scored.picks),
                                    "n_shown": shown, "intruders": scored.intruders, "picks": scored.picks,
                                    "excerpt_ids": [i for ids in scored.excerpt_ids for i in ids],
                                    "reason": scored.reason, "created_at": now})
            progress.advance(len(chunk))
        self.store.replace([Replacement("intruder_scores", _where(model, revision, layer, scorer=scorer.name),
                                        table("intruder_scores", rows=result.rows))])
        calls.finish(result)
        return result

    # --- beside the stages: search by meaning, what units write ---------------------------------------------

    def embed(self, model: str, layer: int) -> "Embedded":
        from autointerp.search import embed_layer, encoder_of

        revision = queries.current_model(self.store, model)["revision"]
        spec = self.config.search
        return embed_layer(self.store, encoder_of(spec, self.config.base_dir), spec.encoder, model, revision, layer)

    def unit_logits(self, model: str, layers: Sequence[int]) -> list[int]:
        """Write the `unit_logits` of those `layers` the model's current revision lacks (weights do not change
        within a revision); returns the layers written."""
        from autointerp.units.output import unit_logits_table

        subject = Subject.of(self.config.model(model), self.config.base_dir)
        revision = subject.revision
        todo = [layer for layer in layers if not queries.has_unit_logits(self.store, model, revision, layer)]
        if not todo:
            return []
        loaded, tokenizer = subject.load(), subject.tokenizer()
        tables = [unit_logits_table(loaded, subject.units, layer, tokenizer, model, revision) for layer in todo]
        self.store.replace([Replacement("unit_logits", {"model": model, "revision": revision, "layer": [layer]}, t)
                            for layer, t in zip(todo, tables)])
        return todo


def record_shortfall(spec: Any, n_excerpts: int) -> list[str]:
    """What the configured records ask for that a corpus of `n_excerpts` excerpts cannot give."""
    got = expected_counts(spec, n_excerpts)
    asked = {"top": (spec.top, "records.top"), "random": (spec.random, "records.random"),
             "quantile": (spec.quantile_bands * spec.per_band, "records.quantile_bands x records.per_band")}
    return [f"the corpus has {n_excerpts:,} excerpts: every neuron gets {got[kind]} {kind} records, not the "
            f"{wanted} of {key} (more text, or corpus.max_tokens, gives more)"
            for kind, (wanted, key) in asked.items() if got[kind] < wanted]


def _where(model: str, revision: str, layer: int, **roles: str) -> dict[str, Any]:
    return {"model": model, "revision": revision, "layer": [layer], **roles}


class _CallCounter:
    """LLM calls a stage made and answered from the cache (metadata: a re-run should make none)."""

    def __init__(self, *roles: Any):
        self.caches = [role.llm.cache for role in roles if getattr(role, "llm", None) is not None]
        self.start = [(c.stats.misses, c.stats.hits) for c in self.caches]

    def finish(self, result: StageResult) -> None:
        for cache, (misses, hits) in zip(self.caches, self.start):
            result.llm_calls_made += cache.stats.misses - misses
            result.llm_calls_cached += cache.stats.hits - hits
