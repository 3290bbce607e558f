"""Which simulator follows a correct explanation? Neurons made from an exact rule, simulated from the rule.

For each concept of eval/planted.py, a synthetic neuron is made from the exact rule: activation 6 on the
concept's tokens, 0 elsewhere, over excerpts of the corpus (the default subject's tokenizer). Its test set is
5 excerpts that contain the concept and 5 random ones, as the pipeline's. Every simulator below is given the
concept's hand-written rule, and another concept's rule as a control, and scored as the pipeline scores
(top-and-random): the rule is right by construction, so this measures the simulator alone. The all-at-once LLM
simulator runs with the reference's placeholder ("unknown") and ours ("0"), its few-shot values all revealed
or, as the reference does (first_revealed_activation_indices), the first third hidden.

    .venv/bin/python eval/simulators.py [--config FILE] [--concepts digits,months] [--draws 2] [--simulators ...]

Writes eval/results/simulators.json and a Markdown table (README, Evaluation).
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from autointerp.config import build_choice  # noqa: E402
from autointerp.llm import LoadedLLMs  # noqa: E402
from autointerp.score.scoring import score_neuron  # noqa: E402
from autointerp.simulate import SimulationJob, build_simulator  # noqa: E402
from autointerp.store import Store  # noqa: E402
from autointerp.subject import Subject  # noqa: E402
from eval.common import RESULTS, config_of  # noqa: E402
from eval.common import parser as make_parser  # noqa: E402
from eval.planted import CONCEPTS, corpus_excerpts  # noqa: E402


def simulators(llm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "all_at_once unknown": {"kind": "all_at_once", "placeholder": "unknown", "llm": llm},
        "all_at_once unknown, hidden 1/3": {"kind": "all_at_once", "placeholder": "unknown", "hidden": 0.34,
                                            "llm": llm},
        "all_at_once 0": {"kind": "all_at_once", "placeholder": "0", "llm": llm},
        "all_at_once 0, hidden 1/3": {"kind": "all_at_once", "placeholder": "0", "hidden": 0.34, "llm": llm},
        "token_match": {"kind": "token_match"},
        "embedding": {"kind": "embedding"},
        "combined": {"kind": "combined"},
    }


def main() -> None:
    from eval.quality import _raw_llm

    parser = make_parser(__doc__)
    parser.add_argument("--concepts", default=",".join(CONCEPTS))
    parser.add_argument("--draws", type=int, default=2, help="random excerpt sets per concept")
    parser.add_argument("--simulators", help="comma-separated names (default: all)")
    parser.add_argument("--store", type=Path, default=Path("data/eval/simulators.duckdb"),
                        help="keeps the LLM call cache between runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "simulators.json")
    args = parser.parse_args()
    unknown = sorted(set(args.concepts.split(",")) - set(CONCEPTS))
    if unknown:
        parser.error(f"--concepts: unknown {', '.join(unknown)}; known: {', '.join(CONCEPTS)}")
    config = config_of(args)
    named = simulators(_raw_llm(config))
    chosen_names = args.simulators.split(",") if args.simulators else list(named)
    tokenizer = Subject.of(config.models[0], config.base_dir).tokenizer()
    texts = [[tokenizer.decode([i]) for i in row] for row in corpus_excerpts(config, tokenizer, 0, 1500)]
    concepts = [CONCEPTS[name] for name in args.concepts.split(",")]
    acts = {c.name: [[6.0 if label else 0.0 for label in c.labels(text)] for text in texts] for c in concepts}
    args.store.parent.mkdir(parents=True, exist_ok=True)
    store = Store(args.store)
    llms = LoadedLLMs()  # simulators that ask the same LLM share it
    built = {n: build_simulator(build_choice("simulator", named[n], n), config.base_dir, store, llms)
             for n in chosen_names}
    rows = []
    for draw in range(args.draws):
        rng = random.Random(draw)
        for c, concept in enumerate(concepts):
            hits = [i for i, a in enumerate(acts[concept.name]) if max(a) > 0]
            chosen = rng.sample(hits, 5) + rng.sample(range(len(texts)), 5)
            real = [acts[concept.name][i] for i in chosen]
            wrong = concepts[(c + 1) % len(concepts)].rule
            for name, simulator in built.items():
                started = time.monotonic()
                row: dict[str, Any] = {"concept": concept.name, "draw": draw, "simulator": name}
                for which, rule in (("true", concept.rule), ("wrong", wrong)):
                    simulated = simulator.simulate([SimulationJob(rule, tuple(texts[i])) for i in chosen])
                    scores = score_neuron(real[:5], simulated[:5], real[5:], simulated[5:])
                    flat_real, flat_sim = np.concatenate(real), np.concatenate(simulated)
                    row[which] = {"correlation": scores.score_top_and_random or 0.0,
                                  "on_concept": float(flat_sim[flat_real > 0].mean()),
                                  "elsewhere": float(flat_sim[flat_real == 0].mean())}
                row["seconds"] = round(time.monotonic() - started, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows}, indent=1))
    print("\n" + markdown(rows, chosen_names))


def markdown(rows: list[dict[str, Any]], names: list[str]) -> str:
    lines = ["| simulator | true rule: correlation | on concept tokens | elsewhere | another concept's rule | gap "
             "| seconds per neuron |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        mine = [r for r in rows if r["simulator"] == name]
        true = np.mean([r["true"]["correlation"] for r in mine])
        wrong = np.mean([r["wrong"]["correlation"] for r in mine])
        lines.append(f"| {name} | {true:.3f} | {np.mean([r['true']['on_concept'] for r in mine]):.2f} "
                     f"| {np.mean([r['true']['elsewhere'] for r in mine]):.2f} | {wrong:.3f} | {true - wrong:+.3f} "
                     f"| {np.mean([r['seconds'] for r in mine]) / 2:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
