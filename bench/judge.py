"""What judging costs: detection + fuzzing of one explanation with a local model on this machine's CPUs.

A neuron made from an exact rule (the word right after "of", eval/planted.py) over corpus excerpts gives
`--per-class` activating and as many silent excerpts; detection judges each once, fuzzing each activating one
twice (right and wrong marks). Timed cold (an empty call cache, the model already loaded), per engine, for
every `--window` (tokens shown per excerpt; 0: the whole 64-token excerpt). Prefill only: no token is decoded.

    .venv/bin/python bench/judge.py [--model embedded:qwen2.5-coder-1.5b-instruct] [--engines transformers,llama.cpp]
        [--per-class 20] [--windows 24,0] [--explanations 3]

Prints a Markdown table and writes `--out` (bench/results/judge-0.5b.json and judge-1.5b.json are committed).
The aim: <= 10 s per neuron for 20 + 20 excerpts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autointerp.config import build_choice, load_config  # noqa: E402
from autointerp.llm import LoadedLLMs  # noqa: E402
from autointerp.llm.local import native_bf16_flags  # noqa: E402
from autointerp.score import ScoringItem, build_scorer, item_of, score_items  # noqa: E402
from autointerp.store import Store  # noqa: E402
from autointerp.subject import Subject  # noqa: E402
from eval.planted import corpus_excerpts  # noqa: E402
from eval.scorers import rule_neuron  # noqa: E402

EXPLANATIONS = ('the word right after "of"', 'the word "of"', "nouns that name places")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config")
    parser.add_argument("--model", default="embedded:qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--engines", default="transformers,llama.cpp")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--windows", default="24,0")
    parser.add_argument("--explanations", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "judge.json")
    args = parser.parse_args()
    config = load_config(args.config)
    tokenizer = Subject.of(config.models[0], config.base_dir).tokenizer()
    texts = [[tokenizer.decode([i]) for i in row] for row in corpus_excerpts(config, tokenizer, 0, 600)]
    record = rule_neuron("after_of", texts, random.Random(0))
    # every record is judged (not one split): the top ones activate, most random ones do not
    excerpts = tuple(("top", r) for r in record.top[:args.per_class]) + tuple(("random", r) for r in record.random)
    rows = []
    for engine in args.engines.split(","):
        llm = build_choice("llm", {"backend": "local", "model": args.model, "engine": engine}, "--engines")
        llms = LoadedLLMs()  # the engine's model, loaded once for all windows
        started = time.monotonic()
        for window in (int(w) for w in args.windows.split(",")):
            scoring = dataclasses.replace(config.scoring, llm=llm, window=window, per_class=args.per_class)
            run_config = dataclasses.replace(config, scoring=scoring)
            with tempfile.TemporaryDirectory() as tmp:
                store = Store(Path(tmp) / "bench.duckdb")
                scorers = {k: build_scorer(k, run_config, store, llms) for k in ("detection", "fuzzing")}
                # warm-up: loads the model and computes the shared few-shot prefix (every later call reuses it)
                for scorer in scorers.values():
                    score_items(scorer, [item_of(scorer, "a warm-up", record, "test")])
                load_s = time.monotonic() - started
                for explanation in EXPLANATIONS[:args.explanations]:
                    row = {"engine": engine, "window": window, "explanation": explanation, "load_s": round(load_s, 1)}
                    for kind, scorer in scorers.items():
                        item = ScoringItem(explanation, excerpts)
                        t = time.monotonic()
                        [result] = score_items(scorer, [item])
                        row[f"{kind}_s"] = round(time.monotonic() - t, 2)
                        row[f"{kind}_excerpts"] = result.details["n_positive"] + result.details["n_negative"]
                        row[f"{kind}_auroc"] = result.value
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    result = {"model": args.model, "cpu_native_bf16": native_bf16_flags(), "cpus": os.cpu_count(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(markdown(rows))


def markdown(rows: list[dict]) -> str:
    lines = ["| engine | window | excerpts judged (detection / fuzzing) | detection s | fuzzing s | per neuron s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['window'] or 'whole'} | {r['detection_excerpts']} / {r['fuzzing_excerpts']} "
                     f"| {r['detection_s']} | {r['fuzzing_s']} | {r['detection_s'] + r['fuzzing_s']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
