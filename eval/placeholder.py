"""Which simulator placeholder lets a small local simulator follow an explanation: "unknown" or "0"?

For each concept of eval/planted.py, a synthetic neuron is made from the exact rule: activation 6 on the
concept's tokens, 0 elsewhere, over excerpts of the corpus (the default subject's tokenizer). Its test set is
5 excerpts that contain the concept and 5 random ones, as the pipeline's. The simulator is given the concept's
hand-written rule, once per placeholder, and scored as the pipeline scores (top-and-random): the rule is right
by construction, so this measures the simulator alone.

    .venv/bin/python eval/placeholder.py [--config FILE] [--concepts digits,months] [--draws 2]   # ~5 min per draw
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from autointerp.llm import llm_name  # noqa: E402
from autointerp.score.scoring import score_neuron  # noqa: E402
from autointerp.simulate import SimulationJob, build_simulator  # noqa: E402
from autointerp.store import Store  # noqa: E402
from autointerp.subject import Subject  # noqa: E402
from eval.common import RESULTS, config_of  # noqa: E402
from eval.common import parser as make_parser  # noqa: E402
from eval.planted import CONCEPTS, corpus_excerpts  # noqa: E402

PLACEHOLDERS = ("unknown", "0")


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--concepts", default=",".join(CONCEPTS))
    parser.add_argument("--draws", type=int, default=2, help="random excerpt sets per concept")
    parser.add_argument("--out", type=Path, default=RESULTS / "placeholder.json")
    args = parser.parse_args()
    unknown = sorted(set(args.concepts.split(",")) - set(CONCEPTS))
    if unknown:
        parser.error(f"--concepts: unknown {', '.join(unknown)}; known: {', '.join(CONCEPTS)}")
    config = config_of(args)
    options = config.simulator.options
    if not hasattr(options, "placeholder") or not hasattr(options, "llm"):
        parser.error(f"the config's simulator ({config.simulator.kind}) has no placeholder option: "
                     "this compares the all_at_once simulator's placeholders")
    tokenizer = Subject.of(config.models[0], config.base_dir).tokenizer()
    texts = [[tokenizer.decode([i]) for i in row] for row in corpus_excerpts(config, tokenizer, 0, 1500)]
    concepts = [CONCEPTS[name] for name in args.concepts.split(",")]
    acts = {c.name: [[6.0 if c.contains(t) else 0.0 for t in text] for text in texts] for c in concepts}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "placeholder.duckdb")  # the LLM call cache, this run's only
        # The config's simulator once per placeholder; both share one loaded LLM.
        simulators = {p: build_simulator(replace(config.simulator, options=replace(options, placeholder=p)),
                                         config.base_dir, store) for p in PLACEHOLDERS}
        for draw in range(args.draws):
            rng = random.Random(draw)
            for concept in concepts:
                name = concept.name
                hits = [i for i, a in enumerate(acts[name]) if max(a) > 0]
                chosen = rng.sample(hits, 5) + rng.sample(range(len(texts)), 5)
                real = [acts[name][i] for i in chosen]
                row = {"concept": name, "draw": draw}
                for placeholder in PLACEHOLDERS:
                    simulated = simulators[placeholder].simulate([SimulationJob(concept.rule, tuple(texts[i]))
                                                                  for i in chosen])
                    scores = score_neuron(real[:5], simulated[:5], real[5:], simulated[5:])
                    flat_real, flat_sim = np.concatenate(real), np.concatenate(simulated)
                    row[placeholder] = {"correlation": scores.score_top_and_random,
                                        "mean_on_concept": float(flat_sim[flat_real > 0].mean()),
                                        "mean_elsewhere": float(flat_sim[flat_real == 0].mean())}
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"simulator": llm_name(options.llm, config.base_dir), "rows": rows}, indent=2))
    print("\n| placeholder | mean correlation | mean on concept tokens | mean elsewhere | better in |\n"
          "| --- | --- | --- | --- | --- |")
    for p in PLACEHOLDERS:
        other = PLACEHOLDERS[1 - PLACEHOLDERS.index(p)]
        wins = sum(r[p]["correlation"] > r[other]["correlation"] for r in rows)
        print(f"| `{p}` | {np.mean([r[p]['correlation'] for r in rows]):.3f} "
              f"| {np.mean([r[p]['mean_on_concept'] for r in rows]):.2f} "
              f"| {np.mean([r[p]['mean_elsewhere'] for r in rows]):.2f} | {wins} of {len(rows)} |")


if __name__ == "__main__":
    main()
