"""Benchmark of explain + simulate + score with the local backend (a script, not a test).

Measures, on this machine:
1. neurons per hour explained + simulated + scored, end to end through the pipeline's stages, with the
   configured explainer/simulator on recorded neurons of the default subject model;
2. the all-at-once simulator (every slot of an excerpt from ONE forward pass) against one forward pass
   per token (the naive way; target: at least 10x faster);
3. the simulator with the few-shot prefix's KV cache reused across excerpts, against recomputing it;
4. the explainer with the KV of the prompts' shared few-shot prefix reused, against recomputing it.

    .venv/bin/python bench/simulate.py [--config FILE] [--neurons 4] [--excerpts 6]
        [--model embedded:qwen2.5-coder-1.5b-instruct]

Writes bench/results/simulate.json (or --out).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from autointerp.errors import ConfigError  # noqa: E402
from autointerp.explain.formats.reference import build_explainer_messages  # noqa: E402
from autointerp.fewshot import EXPLAINER_EXAMPLES, SIMULATOR_EXAMPLES  # noqa: E402
from autointerp.llm.local import LocalLLM  # noqa: E402
from autointerp.simulate.prompts import build_simulator_prompt  # noqa: E402
from autointerp.stages import Stages  # noqa: E402
from autointerp.store import Store  # noqa: E402
from eval.common import config_of, local_llm, with_llm  # noqa: E402
from eval.common import parser as make_parser  # noqa: E402


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def naive_slots(llm: LocalLLM, request: dict) -> None:
    """One forward pass per token: the prefix cache reused, the body up to each slot recomputed."""
    import copy

    prefix_ids, cache = llm._prefix_cache(request["prefix"])
    body_ids, before_slot = llm._body_tokens(request["body"], request["slots"])
    with torch.inference_mode():
        for position in before_slot:
            step_cache = copy.deepcopy(cache)
            ids = torch.tensor([body_ids[: position + 1]])
            positions = torch.arange(len(prefix_ids), len(prefix_ids) + ids.shape[1])[None]
            llm.lm(input_ids=ids, position_ids=positions, past_key_values=step_cache, use_cache=True)


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--neurons", type=int, default=4, help="neurons explained + simulated + scored end to end")
    parser.add_argument("--excerpts", type=int, default=6, help="excerpts for the simulator comparisons")
    parser.add_argument("--model", help="explainer/simulator model (default: the config's simulator)")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=12_800, help="corpus tokens recorded for the bench")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "simulate.json")
    args = parser.parse_args()

    config = config_of(args)
    # explainer = simulator = one local LLM: the simulator's, or --model (with the simulator's dtype and batch size)
    llm_choice = getattr(config.simulator.options, "llm", None)
    if llm_choice is None or (llm_choice.kind != "local" and not args.model):
        parser.error("the bench measures the local backend: the config's simulator must run a local LLM "
                     "(or pass --model)")
    if args.model:
        llm_choice = local_llm(args.model, like=llm_choice)
    try:
        explainer, simulator = with_llm(config.explainer, llm_choice), with_llm(config.simulator, llm_choice)
    except ConfigError as exc:
        parser.error(str(exc))
    # `--neurons` at random in `--layer`, whatever `neurons.layers` the config explains
    config = replace(config, corpus=replace(config.corpus, max_tokens=args.tokens), explainer=explainer,
                     simulator=simulator, neurons=replace(config.neurons, select="random", count=args.neurons,
                                                          layers=()))
    placeholder = getattr(config.simulator.options, "placeholder", "unknown")
    examples = getattr(config.explainer.options, "examples", 5)
    subject = config.models[0].name
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        stages = Stages(config, store, log=lambda _: None)
        stages.excerpts(subject)
        recording = stages.record(subject, [args.layer])
        # the LLM the stages' explainer and simulator run (loaded once into the stages' LLMs)
        (llm, load_s) = timed(lambda: stages.llms.get(llm_choice, config.base_dir))
        assert isinstance(llm, LocalLLM), type(llm)
        print(f"loaded {llm.model} ({llm.dtype}) in {load_s:.1f}s")
        records = list(stages.neuron_records(subject, recording.revision, args.layer).values())

        # 1. end to end, through the stages (each also writes its rows, as in a run)
        explained, explain_s = timed(lambda: stages.explain(subject, args.layer))
        _, simulate_s = timed(lambda: stages.simulate(subject, args.layer))
        scored, score_s = timed(lambda: stages.score(subject, args.layer))
        explanations = [row["explanation"] for row in explained.rows if row["chosen"]]
        scores = [row["score_top_and_random"] for row in scored.rows]
        per_neuron = (explain_s + simulate_s + score_s) / len(records)

        # 2 and 3: the simulator alone, on the same excerpts and explanation
        excerpts = [r for rec in records for r in rec.test_top() + rec.test_random()][: args.excerpts]
        prompts = [build_simulator_prompt(SIMULATOR_EXAMPLES, explanations[0], r.tokens,
                                          placeholder=placeholder) for r in excerpts]
        requests = [p.request for p in prompts]
        llm.slots(requests[:1])  # warm-up, and the prefix cache is filled
        _, all_at_once_s = timed(lambda: llm.slots(requests))
        _, naive_s = timed(lambda: [naive_slots(llm, r) for r in requests[:2]])
        naive_s *= len(requests) / 2  # extrapolated from two excerpts: it is slow
        llm.reuse_prefix = False
        _, no_prefix_cache_s = timed(lambda: llm.slots(requests))
        llm.reuse_prefix = True

        # 4: the explainer, whose prompts share their few-shot examples: KV of the shared prefix reused or not
        chats = [{"messages": build_explainer_messages(EXPLAINER_EXAMPLES, r.train_top()[:examples]),
                  "max_tokens": 20, "temperature": 0.0, "seed": 0} for r in records]
        llm._chat_prompt = None
        llm.chat(chats[:1])
        _, explain_reuse_s = timed(lambda: llm.chat(chats[1:]))
        llm.reuse_prefix = False
        _, explain_fresh_s = timed(lambda: llm.chat(chats[1:]))
        llm.reuse_prefix = True

    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"nproc": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "python": platform.python_version()},
        "subject": subject, "layer": args.layer, "llm": llm.model, "dtype": str(llm.dtype),
        "end_to_end": {"neurons": len(records), "explain_s": explain_s, "simulate_s": simulate_s, "score_s": score_s,
                       "seconds_per_neuron": per_neuron, "neurons_per_hour": 3600 / per_neuron,
                       "scores": scores, "explanations": explanations},
        "simulator": {"excerpts": len(requests), "all_at_once_s": all_at_once_s, "one_forward_per_token_s": naive_s,
                      "speedup_all_at_once": naive_s / all_at_once_s, "without_prefix_cache_s": no_prefix_cache_s,
                      "speedup_prefix_cache": no_prefix_cache_s / all_at_once_s},
        "explainer": {"prompts": len(chats) - 1, "new_tokens": 20, "shared_prefix_reused_s": explain_reuse_s,
                      "recomputed_s": explain_fresh_s, "speedup_prefix_reuse": explain_fresh_s / explain_reuse_s},
    }
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    e2e, sim = result["end_to_end"], result["simulator"]
    print(f"\nend to end ({llm.model}, {llm.dtype}): {e2e['neurons']} neurons, explain {explain_s:.1f}s, "
          f"simulate {simulate_s:.1f}s, score {score_s:.2f}s -> {per_neuron:.1f} s/neuron = {e2e['neurons_per_hour']:.0f} neurons/hour")
    print(f"simulator on {sim['excerpts']} excerpts: all at once {all_at_once_s:.1f}s, one forward per token "
          f"{naive_s:.1f}s (x{sim['speedup_all_at_once']:.1f}, target >= 10), without the prefix cache "
          f"{no_prefix_cache_s:.1f}s (x{sim['speedup_prefix_cache']:.1f})")
    ex = result["explainer"]
    print(f"explainer on {ex['prompts']} prompts (20 new tokens each): shared few-shot prefix reused "
          f"{explain_reuse_s:.1f}s, recomputed {explain_fresh_s:.1f}s (x{ex['speedup_prefix_reuse']:.1f})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
