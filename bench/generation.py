"""Which engine should generate explanations on a CPU? The same explainer prompts through each (a benchmark).

Builds the configured explainer's requests (its first format, its temperature and max_tokens) for `--neurons`
neurons of a store that holds their records (e.g. eval/quality.py's), and has the local backend (`LocalLLM.chat`,
as the explain stage does, without its cache) generate one explanation per request with each engine in `--engines`:

- `torch-<dtype>:<batch>`: transformers (llm/batched.py) in `dtype` (bfloat16/float32), `batch` completions
  decoded together, the shared few-shot prefix computed once;
- `llama.cpp`: the local backend's llama.cpp engine (llm/llamacpp.py) in-process on the same GGUF file, one
  prompt at a time, reusing the KV cache of the prefix a prompt shares with the last one.

    .venv/bin/python bench/generation.py --store data/eval/quality.duckdb [--neurons 16]
        [--engines torch-bfloat16:8,torch-bfloat16:16,torch-bfloat16:1,torch-float32:8,llama.cpp]

Prints, per engine: load time, prompt and generated tokens, seconds, and explanations per hour (generation
alone: no simulation, no best-of-n). Results in bench/results/generation.json.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autointerp.explain.formats import REGISTRY as FORMATS  # noqa: E402
from autointerp.llm.local import LocalLLM  # noqa: E402
from autointerp.store import Store, queries  # noqa: E402
from bench.explain import cpu_kind  # noqa: E402
from eval.common import config_of, parser  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def requests(args, config) -> list[dict]:
    """The explainer's chat requests for `--neurons` random neurons spread over the store's layers."""
    from autointerp.record.records import load_neuron_records

    options = config.explainer.options
    fmt = FORMATS.get(options.formats[0]).factory()
    store = Store(args.store, read_only=True)
    model = config.models[0].name
    revision = queries.current_model(store, model)["revision"]
    messages: list[list[dict]] = []
    per_layer = max(1, -(-args.neurons // 6))
    with store.connect() as con:
        layers = [int(x) for x in con.execute("SELECT DISTINCT layer FROM activation_records WHERE model = ? AND "
                                              "revision = ? ORDER BY layer", [model, revision]).fetchnumpy()["layer"]]
        rng = random.Random(0)
        for layer in layers:
            width = con.execute("SELECT max(neuron) + 1 FROM neuron_stats WHERE model = ? AND revision = ? AND "
                                "layer = ?", [model, revision, layer]).fetchone()[0]
            for record in load_neuron_records(con, model, revision, layer, rng.sample(range(width), per_layer)):
                messages.append(fmt.messages(record.train_top()[: options.examples]))
    step = max(1, len(messages) // args.neurons)  # spread over the layers
    return [{"messages": m, "max_tokens": options.max_tokens, "temperature": options.temperature,
             "top_p": options.top_p, "seed": seed} for seed, m in enumerate(messages[::step][: args.neurons])]


def run_engine(engine: str, todo: list[dict], config) -> dict:
    """Generate through the local backend itself (`LocalLLM.chat`), with the engine, dtype and batch asked for."""
    if engine == "llama.cpp":
        overrides = {"engine": "llama.cpp"}
    else:
        dtype, batch = engine.removeprefix("torch-").split(":")
        overrides = {"engine": "transformers", "dtype": dtype, "chat_batch": int(batch)}
    started = time.monotonic()
    llm = LocalLLM(replace(config.explainer.options.llm.options, **overrides), config.base_dir)
    load_s = time.monotonic() - started
    started = time.monotonic()
    answers = llm.chat(todo)
    seconds = time.monotonic() - started
    t = llm.generator.timings
    return {"load_s": load_s, "seconds": seconds, "prompt_tokens": t.prompt_tokens, "generated": t.generated_tokens,
            "split_s": {"prefix": t.prefix_s, "prefill": t.prefill_s, "decode": t.decode_s},
            "sample": answers[0].response[0]}


def main() -> None:
    args_parser = parser(__doc__)
    args_parser.add_argument("--store", type=Path, required=True, help="a store holding recorded neurons")
    args_parser.add_argument("--neurons", type=int, default=16)
    args_parser.add_argument("--engines", default="torch-bfloat16:8,torch-bfloat16:16,torch-bfloat16:1,"
                                                   "torch-float32:8,llama.cpp")
    args_parser.add_argument("--out", type=Path, default=RESULTS / "generation.json")
    args = args_parser.parse_args()
    config = config_of(args)
    texts = requests(args, config)
    results = {}
    for engine in args.engines.split(","):
        print(f"{engine}: generating {len(texts)} explanations ...", file=sys.stderr, flush=True)
        result = run_engine(engine, texts, config)
        result["explanations_per_hour"] = len(texts) / result["seconds"] * 3600
        results[engine] = result
        print(f"  {result['seconds']:.0f} s, {result['explanations_per_hour']:.0f}/hour; e.g. {result['sample']!r}",
              file=sys.stderr, flush=True)
    report = {"cpu": cpu_kind(), "prompts": len(texts), "max_tokens": texts[0]["max_tokens"], "engines": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\n{report['cpu']}; {len(texts)} explainer prompts\n\n"
          "| engine | load | prompt tokens | generated | seconds | explanations/hour |\n|---|---|---|---|---|---|")
    for engine, r in results.items():
        print(f"| {engine} | {r['load_s']:.0f} s | {r['prompt_tokens']:,} | {r['generated']:,} | {r['seconds']:.0f} | "
              f"{r['explanations_per_hour']:.0f} |")


if __name__ == "__main__":
    main()
