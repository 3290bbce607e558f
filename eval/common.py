"""What the evaluation scripts share: record a model through the pipeline's own functions, score, average."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from autointerp.config import Config, LLMSpec
from autointerp.excerpts import build_excerpts
from autointerp.explainer import Explanation, select_neurons
from autointerp.llm import build_llm
from autointerp.llm.base import CachedLLM
from autointerp.llm.cache import LLMCache
from autointerp.recording import record_model, write_recording
from autointerp.records import NeuronRecord, load_neuron_records
from autointerp.scoring import NeuronScores, score_neuron
from autointerp.simulator import Simulation
from autointerp.store import Store

RESULTS = Path(__file__).resolve().parent / "results"


def quiet(_: str) -> None:
    """A log sink for the pipeline's progress lines."""


def record_neurons(config: Config, layers: Sequence[int], store: Store) -> tuple[str, list[NeuronRecord]]:
    """Excerpts -> recording -> the selected neurons' records, for the config's first model, as the record
    stage does it. Returns the model's revision and the records, layer by layer."""
    subject = config.models[0].name
    build_excerpts(config, subject, store, log=quiet)
    recording = record_model(config, subject, layers, store, log=quiet)
    write_recording(store, recording)
    n_neurons = int(store.model_row(subject, recording.revision)["n_neurons"])
    records: list[NeuronRecord] = []
    with store.connect() as con:
        for layer in layers:
            records += load_neuron_records(con, subject, recording.revision, layer,
                                           select_neurons(config.neurons, n_neurons, config.seed, layer))
    return recording.revision, records


def cached_llm(spec: LLMSpec, config: Config, store: Store) -> CachedLLM:
    return CachedLLM(build_llm(spec, config.path.parent), LLMCache(store))


def neuron_scores(simulations: Sequence[Simulation], explanations: Sequence[Explanation]) -> list[NeuronScores]:
    """The scores of each explanation, from its simulations of the test split (as the score stage computes them)."""
    out = []
    for e in explanations:
        sims = [s for s in simulations if (s.layer, s.neuron, s.sample) == (e.layer, e.neuron, e.sample)]
        top = [s for s in sims if s.kind == "top"]
        rnd = [s for s in sims if s.kind == "random"]
        out.append(score_neuron([s.real for s in top], [s.simulated for s in top],
                                [s.real for s in rnd], [s.simulated for s in rnd]))
    return out


def mean(values: Sequence[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else float("nan")
