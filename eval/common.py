"""What the evaluation scripts share: the `--config` option, recording through the pipeline's own stages, and
scoring the way the score stage does."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autointerp.config import Choice, Config, LLMChoice, load_config  # noqa: E402
from autointerp.errors import ConfigError  # noqa: E402
from autointerp.explain import ExplainerInput, Explanation  # noqa: E402
from autointerp.explain.best_of_n import choose  # noqa: E402
from autointerp.llm.local import LocalOptions  # noqa: E402
from autointerp.record.records import NeuronRecord  # noqa: E402
from autointerp.score import ScoringItem, score_items  # noqa: E402
from autointerp.score.scoring import NeuronScores  # noqa: E402
from autointerp.score.simulation import SimulationScorer  # noqa: E402
from autointerp.simulate import Simulator  # noqa: E402
from autointerp.stages import Stages  # noqa: E402
from autointerp.store import Store  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def quiet(_: str) -> None:
    """A log sink for the pipeline's progress lines."""


def parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the CLI's `--config` (default: $AUTOINTERP_CONFIG or the repository's file)."""
    parsed = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parsed.add_argument("--config", help="YAML config (default: $AUTOINTERP_CONFIG or the repository's autointerp.yaml)")
    return parsed


def config_of(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def record_neurons(config: Config, layers: Sequence[int], store: Store,
                   log=quiet) -> tuple[Stages, str, list[NeuronRecord]]:
    """Excerpts -> recording -> the selected neurons' records, for the config's first model, through the stages.
    Layers the store already holds for the model's current revision and corpus are not recorded again.
    Returns the stages (for explain/simulate/score), the model's revision and the records, layer by layer."""
    from autointerp.corpus import EXCERPT_TOKENS, corpus_fingerprint, resolve_corpus_paths
    from autointerp.store import queries
    from autointerp.subject import Subject

    stages = Stages(config, store, log)
    subject = config.models[0]
    revision = Subject.of(subject, config.base_dir).revision
    corpus = config.corpus
    fingerprint = corpus_fingerprint(resolve_corpus_paths(corpus.paths, config.base_dir), corpus.text_field,
                                     EXCERPT_TOKENS, corpus.max_tokens)
    row = queries.model_row(store, subject.name, revision) if store.exists() else None
    if row is None or row["corpus_fingerprint"] != fingerprint:
        stages.excerpts(subject.name)
    done = set(queries.recorded_layers(store, subject.name, revision).layer)
    missing = sorted(set(layers) - done)
    if missing:
        stages.record(subject.name, missing)
    records: list[NeuronRecord] = []
    for layer in layers:
        records += stages.neuron_records(subject.name, revision, layer).values()
    return stages, revision, records


def local_llm(model: str, like: LLMChoice | None = None) -> LLMChoice:
    """The local backend running `model`; with `like` a local choice, its dtype and batch size are kept."""
    options = like.options if like is not None and like.kind == "local" else LocalOptions()
    return LLMChoice("local", replace(options, model=model))


def judged_by(config: Config, model: str | None = None, engine: str | None = None) -> Config:
    """`config` with its judges (scoring.llm) running local `model` on `engine`; unset ones keep the config's.
    The config's own judge is the 0.5B (the main job's time); the evaluations compare the 1.5B too."""
    from autointerp.config import build_choice

    scoring = config.scoring
    if model is None and engine is None:
        return config
    llm = {"backend": "local", "model": model or getattr(scoring.llm.options, "model"),
           **({"engine": engine} if engine else {})}
    return replace(config, scoring=replace(scoring, llm=build_choice("llm", llm, "--llm")))


def with_llm(choice: Choice, llm: LLMChoice) -> Choice:
    """An explainer's or simulator's choice with another LLM, its other options kept."""
    if not hasattr(choice.options, "llm"):
        raise ConfigError(f"the {choice.kind} explainer/simulator runs no LLM to replace")
    return replace(choice, options=replace(choice.options, llm=llm))


def explain_records(stages: Stages, records: Sequence[NeuronRecord]) -> list[Explanation]:
    """The config's explainer on `records`: one explanation per neuron, chosen as the explain stage chooses it
    (best-of-n on the valid split when it draws several), in one call and without writing to the store."""
    explainer = stages.explainer
    candidates = explainer.explain([ExplainerInput.of(r) for r in records], stages.config.seed)
    if explainer.candidates == 1:
        return candidates
    by_key = {(r.layer, r.neuron): r for r in records}
    return [c for c in choose(candidates, by_key, stages.rankers) if c.chosen]


def explanation_scores(simulator: Simulator, explanations: Sequence[Explanation],
                       by_key: dict[tuple[int, int], NeuronRecord]) -> list[NeuronScores]:
    """The paper's scores of each explanation: simulated on its neuron's test split (one simulator call for all
    of them) and scored as the score stage does."""
    items = [ScoringItem(e.explanation, tuple(by_key[(e.layer, e.neuron)].scored("test"))) for e in explanations]
    return [r.details["scores"] for r in score_items(SimulationScorer(simulator), items)]


def mean(values: Sequence[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else float("nan")
