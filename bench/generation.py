"""Which engine should generate explanations on a CPU? The same explainer prompts through each (a benchmark).

Builds the configured explainer's prompts (its first format) for `--neurons` neurons of a store that holds their
records (e.g. eval/quality.py's), renders them with the model's chat template once, and generates one
explanation per prompt with each engine in `--engines`, greedy-free (temperature 0.7), stopping at the end of the
line as the pipeline does:

- `torch-<dtype>:<batch>`: the local backend's own generator (llm/batched.py): transformers in `dtype`
  (bfloat16/float32), `batch` completions decoded together, the shared few-shot prefix computed once;
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autointerp.explain.formats import REGISTRY as FORMATS  # noqa: E402
from autointerp.llm.batched import BatchedGenerator, Row  # noqa: E402
from autointerp.llm.llamacpp import LlamaCppGenerator  # noqa: E402
from autointerp.store import Store, queries  # noqa: E402
from autointerp.subject.sources import load_tokenizer, resolve_source  # noqa: E402
from bench.explain import cpu_kind  # noqa: E402
from eval.common import config_of, parser  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MAX_TOKENS, TEMPERATURE = 60, 0.7


def prompts(args, config) -> tuple[list[str], object]:
    """The explainer's prompts for the first `--neurons` neurons the store holds, as chat-template text."""
    from autointerp.record.records import load_neuron_records

    options = config.explainer.options
    source = resolve_source(options.llm.options.model, config.base_dir)
    tokenizer = load_tokenizer(source)
    fmt = FORMATS.get(options.formats[0]).factory()
    store = Store(args.store, read_only=True)
    model = config.models[0].name
    revision = queries.current_model(store, model)["revision"]
    texts: list[str] = []
    per_layer = max(1, -(-args.neurons // 6))
    with store.connect() as con:
        layers = [int(x) for x in con.execute("SELECT DISTINCT layer FROM activation_records WHERE model = ? AND "
                                              "revision = ? ORDER BY layer", [model, revision]).fetchnumpy()["layer"]]
        rng = random.Random(0)
        for layer in layers:
            width = con.execute("SELECT max(neuron) + 1 FROM neuron_stats WHERE model = ? AND revision = ? AND "
                                "layer = ?", [model, revision, layer]).fetchone()[0]
            for record in load_neuron_records(con, model, revision, layer, rng.sample(range(width), per_layer)):
                messages = fmt.messages(record.train_top()[: options.examples])
                prefill = messages[-1]["role"] == "assistant"
                texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not prefill,
                                                           continue_final_message=prefill))
    step = max(1, len(texts) // args.neurons)  # spread over the layers
    return texts[::step][: args.neurons], (source, tokenizer)


def run_engine(engine: str, texts: list[str], source, tokenizer) -> dict:
    """Generate with the local backend's own generators (batched transformers, or llama.cpp one at a time)."""
    started = time.monotonic()
    if engine == "llama.cpp":
        generator = LlamaCppGenerator(Path(source.location) / source.gguf_file, tokenizer)
        batch = 1
    else:
        import torch
        from transformers import AutoModelForCausalLM

        dtype, batch_text = engine.removeprefix("torch-").split(":")
        batch = int(batch_text)
        lm = AutoModelForCausalLM.from_pretrained(source.location, dtype=getattr(torch, dtype),
                                                  **source.pretrained_kwargs()).eval()
        generator = BatchedGenerator(lm, tokenizer)
    load_s = time.monotonic() - started
    rows = [Row(tokenizer(t, add_special_tokens=False)["input_ids"], seed, TEMPERATURE, 1.0, MAX_TOKENS)
            for seed, t in enumerate(texts)]
    order = sorted(range(len(rows)), key=lambda k: len(rows[k].ids))
    outputs: dict[int, str] = {}
    started = time.monotonic()
    for lo in range(0, len(order), batch):
        chunk = order[lo:lo + batch]
        for k, (ids, _) in zip(chunk, generator.generate([rows[k] for k in chunk])):
            outputs[k] = tokenizer.decode(ids, skip_special_tokens=True)
    seconds = time.monotonic() - started
    t = generator.timings
    return {"load_s": load_s, "seconds": seconds, "prompt_tokens": t.prompt_tokens, "generated": t.generated_tokens,
            "split_s": {"prefix": t.prefix_s, "prefill": t.prefill_s, "decode": t.decode_s},
            "sample": outputs[0]}


def main() -> None:
    args_parser = parser(__doc__)
    args_parser.add_argument("--store", type=Path, required=True, help="a store holding recorded neurons")
    args_parser.add_argument("--neurons", type=int, default=16)
    args_parser.add_argument("--engines", default="torch-bfloat16:8,torch-bfloat16:16,torch-bfloat16:1,"
                                                   "torch-float32:8,llama.cpp")
    args_parser.add_argument("--out", type=Path, default=RESULTS / "generation.json")
    args = args_parser.parse_args()
    config = config_of(args)
    texts, (source, tokenizer) = prompts(args, config)
    results = {}
    for engine in args.engines.split(","):
        print(f"{engine}: generating {len(texts)} explanations ...", file=sys.stderr, flush=True)
        result = run_engine(engine, texts, source, tokenizer)
        result["explanations_per_hour"] = len(texts) / result["seconds"] * 3600
        results[engine] = result
        print(f"  {result['seconds']:.0f} s, {result['explanations_per_hour']:.0f}/hour; e.g. {result['sample']!r}",
              file=sys.stderr, flush=True)
    report = {"cpu": cpu_kind(), "prompts": len(texts), "max_tokens": MAX_TOKENS, "engines": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\n{report['cpu']}; {len(texts)} explainer prompts\n\n"
          "| engine | load | prompt tokens | generated | seconds | explanations/hour |\n|---|---|---|---|---|---|")
    for engine, r in results.items():
        print(f"| {engine} | {r['load_s']:.0f} s | {r['prompt_tokens']:,} | {r['generated']:,} | {r['seconds']:.0f} | "
              f"{r['explanations_per_hour']:.0f} |")


if __name__ == "__main__":
    main()
