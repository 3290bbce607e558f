"""Which explainer and simulator to ship: every pair, on real neurons of the default subject (a script, not a test).

Records the config's first model (the default: SmolLM2-135M) over the config's corpus, picks `--neurons` random
neurons (fixed seed) in each of `--layers`, and for every (explainer, simulator) pair below: explains each neuron
from its train split (several candidates: best-of-n on the valid split, with the pair's simulator), simulates
its test split, scores it; then simulates every neuron again with another neuron's explanation (a derangement):
an explanation that carries information scores higher on its own neuron. An undefined score (a simulation that
is constant, e.g. no quoted token occurs) counts as 0. Means come with 95% bootstrap intervals over neurons.

    .venv/bin/python eval/quality.py [--config C] [--layers 2,4,8,14,20,24,28] [--neurons 12] [--pairs ...]
        [--judge data/judge]  (adds the trained judge as the simulator `trained`, e.g. marked+trained)

Results: eval/results/quality.json and a Markdown table (README, Evaluation). The store (recordings and the LLM
call cache) is kept at --store, so a re-run only pays for what changed.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.common import RESULTS, config_of, parser, record_neurons  # noqa: E402
from autointerp.config import Config, NeuronSelection, build_choice  # noqa: E402
from autointerp.explain import ExplainerInput, Explanation, build_explainer  # noqa: E402
from autointerp.explain.best_of_n import choose  # noqa: E402
from autointerp.llm import LoadedLLMs  # noqa: E402
from autointerp.record.records import NeuronRecord  # noqa: E402
from autointerp.score import ScoringItem, score_items  # noqa: E402
from autointerp.score.simulation import SimulationScorer  # noqa: E402
from autointerp.simulate import Simulator, build_simulator  # noqa: E402
from autointerp.store import Store  # noqa: E402


def explainers(llm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The explainers compared (YAML sections), the LLM being the config's explainer's."""
    return {
        "top_tokens": {"kind": "top_tokens"},
        "listing": {"kind": "llm", "formats": ["listing"], "llm": llm},
        "marked": {"kind": "llm", "formats": ["marked"], "temperature": 0.7, "llm": {**llm, "engine": "transformers"}},
        "marked-llama.cpp": {"kind": "llm", "formats": ["marked"], "temperature": 0.7,
                             "llm": {**llm, "engine": "llama.cpp"}},
        "marked-t1": {"kind": "llm", "formats": ["marked"], "temperature": 1.0, "llm": llm},
        "marked-best-of-4": {"kind": "llm", "formats": ["marked"], "samples": 4, "temperature": 0.7, "llm": llm},
    }


def simulators(llm: dict[str, Any], judge: Path | None = None) -> dict[str, dict[str, Any]]:
    """`trained` (the judge trained here, issue 22) where `judge` is its directory."""
    return {
        "token_match": {"kind": "token_match"},
        "embedding": {"kind": "embedding"},
        "combined": {"kind": "combined"},
        "all_at_once": {"kind": "all_at_once", "placeholder": "0", "llm": llm},
        **({"trained": {"kind": "trained", "path": str(judge.resolve())}} if judge is not None else {}),
    }


DEFAULT_PAIRS = ("top_tokens+token_match,top_tokens+embedding,top_tokens+combined,marked+token_match,"
                 "marked+combined,marked-t1+combined,marked-best-of-4+combined,marked-best-of-4+token_match,"
                 "listing+combined,top_tokens+all_at_once:14,marked+all_at_once:14")


@dataclass
class PairResult:
    pair: str
    neurons: int
    own: list[float]
    shuffled: list[float]
    explanations: list[str]
    seconds: float


def derangement(n: int, seed: int) -> list[int]:
    """A permutation with no fixed point: every neuron gets someone else's explanation."""
    if n < 2:
        raise ValueError("shuffling needs at least two neurons")
    order = list(range(n))
    rng = random.Random(seed)
    while any(i == j for i, j in enumerate(order)):
        rng.shuffle(order)
    return order


def test_scores(simulator: Simulator, texts: Sequence[str], records: Sequence[NeuronRecord]) -> list[float]:
    """Top-and-random score of each text on its record's test split; undefined counts as 0. The simulator gets
    `simulator.batch` neurons per call, so an LLM simulator's answers are cached as it goes."""
    scorer, per_call = SimulationScorer(simulator), max(1, simulator.batch)
    items = [ScoringItem(text, tuple(record.scored("test"))) for text, record in zip(texts, records)]
    return [r.value or 0.0 for lo in range(0, len(items), per_call)
            for r in score_items(scorer, items[lo:lo + per_call])]


def explain(explainer: Any, simulator: Simulator, records: Sequence[NeuronRecord], seed: int) -> list[Explanation]:
    """One chosen explanation per neuron, as the explain stage chooses it, `explainer.batch` neurons per call."""
    inputs = [ExplainerInput.of(r) for r in records]
    candidates: list[Explanation] = []
    for lo in range(0, len(inputs), explainer.batch):
        candidates += explainer.explain(inputs[lo:lo + explainer.batch], seed)
    if explainer.candidates == 1:
        return candidates
    chosen = choose(candidates, {(r.layer, r.neuron): r for r in records}, {"simulation": SimulationScorer(simulator)})
    return [c for c in chosen if c.chosen]


def bootstrap(values: Sequence[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float)
    means = data[rng.integers(0, len(data), size=(rounds, len(data)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summary(result: PairResult) -> dict[str, Any]:
    own, shuffled = np.asarray(result.own), np.asarray(result.shuffled)
    return {"pair": result.pair, "neurons": result.neurons, "mean": float(own.mean()), "mean_ci": bootstrap(own),
            "median": float(np.median(own)), "above_0.3": float((own > 0.3).mean()),
            "shuffled": float(shuffled.mean()), "gap": float((own - shuffled).mean()),
            "gap_ci": bootstrap(own - shuffled), "seconds": round(result.seconds, 1)}


def run_pair(name: str, config: Config, store: Store, llms: LoadedLLMs, records: list[NeuronRecord],
             explainer_raw: dict, simulator_raw: dict) -> PairResult:
    started = time.monotonic()
    explainer = build_explainer(build_choice("explainer", explainer_raw, name), config.base_dir, store, llms)
    simulator = build_simulator(build_choice("simulator", simulator_raw, name), config.base_dir, store, llms)
    explained = explain(explainer, simulator, records, config.seed)
    texts = [e.explanation for e in explained]
    own = test_scores(simulator, texts, records)
    order = derangement(len(records), config.seed)
    shuffled = test_scores(simulator, [texts[j] for j in order], records)
    return PairResult(name, len(records), own, shuffled, texts, time.monotonic() - started)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| explainer + simulator | neurons | mean (95% CI) | median | > 0.3 | shuffled | gap (95% CI) | time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['neurons']} | {r['mean']:.3f} ({r['mean_ci'][0]:.3f} to {r['mean_ci'][1]:.3f}) "
                     f"| {r['median']:.3f} | {r['above_0.3']:.0%} | {r['shuffled']:.3f} | {r['gap']:+.3f} "
                     f"({r['gap_ci'][0]:+.3f} to {r['gap_ci'][1]:+.3f}) | {r['seconds'] / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    args_parser = parser(__doc__)
    args_parser.add_argument("--layers", default="2,4,8,14,20,24,28")
    args_parser.add_argument("--neurons", type=int, default=12, help="random neurons per layer")
    args_parser.add_argument("--pairs", default=DEFAULT_PAIRS,
                             help="explainer+simulator[:N] (N: only the first N neurons), comma-separated")
    args_parser.add_argument("--judge", type=Path, help="the trained judge's directory: adds the `trained` simulator")
    args_parser.add_argument("--store", type=Path, default=Path("data/eval/quality.duckdb"))
    args_parser.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    args = args_parser.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    config = config_of(args)
    config = replace(config, neurons=NeuronSelection(select="random", count=args.neurons, layers=tuple(layers)))
    llm = _raw_llm(config)
    named_explainers, named_simulators = explainers(llm), simulators(llm, args.judge)
    args.store.parent.mkdir(parents=True, exist_ok=True)
    store = Store(args.store)
    llms = LoadedLLMs()  # pairs that ask the same LLM share it
    started = time.monotonic()
    _stages, revision, records = record_neurons(config, layers, store)
    print(f"recorded layers {layers} of {config.models[0].name} @ {revision}: {len(records)} neurons "
          f"in {time.monotonic() - started:.0f}s", flush=True)
    for spec in args.pairs.split(","):
        explainer_name, _, simulator_name = spec.partition(":")[0].partition("+")
        if explainer_name not in named_explainers or simulator_name not in named_simulators:
            args_parser.error(f"--pairs {spec}: known explainers {', '.join(named_explainers)}; simulators "
                              f"{', '.join(named_simulators)} (`trained` needs --judge)")
    rows = []
    for spec in args.pairs.split(","):
        pair, _, subset = spec.partition(":")
        explainer_name, simulator_name = pair.split("+")
        # a subset is spread over the layers: every k-th neuron
        chosen = records[::max(1, len(records) // int(subset))][:int(subset)] if subset else records
        result = run_pair(pair, config, store, llms, chosen, named_explainers[explainer_name],
                          named_simulators[simulator_name])
        rows.append({**summary(result), "scores": result.own, "shuffled_scores": result.shuffled,
                     "explanations": result.explanations})
        print(markdown([rows[-1]]).splitlines()[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"subject": config.models[0].name, "revision": revision, "layers": layers,
                                    "neurons": [[r.layer, r.neuron] for r in records], "results": rows}, indent=1))
    print("\n" + markdown(rows))


def _raw_llm(config: Config) -> dict[str, Any]:
    """The config's explainer LLM as a YAML mapping (the LLM every LLM-based explainer/simulator here uses)."""
    from dataclasses import asdict

    llm = getattr(config.explainer.options, "llm", None)
    if llm is None:
        return {"backend": "local"}
    return {"backend": llm.kind, **asdict(llm.options)}


if __name__ == "__main__":
    main()
