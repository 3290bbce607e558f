"""Which engine should generate explanations on a CPU? The same explainer prompts through each (a benchmark).

Builds the configured explainer's prompts (its first format) for `--neurons` neurons of a store that holds their
records (e.g. eval/quality.py's), renders them with the model's chat template once, and generates one
explanation per prompt with each engine in `--engines`, greedy-free (temperature 0.7), stopping at the end of the
line as the pipeline does:

- `torch-<dtype>:<batch>`: the local backend's own generator (llm/batched.py): transformers in `dtype`
  (bfloat16/float32), `batch` completions decoded together, the shared few-shot prefix computed once;
- `llama.cpp`: llama-cpp-python in-process on the same GGUF file, 2 threads, one prompt at a time (its
  high-level API has no batched sampling; it reuses the KV of the prompt prefix it shares with the last one).

    .venv/bin/python bench/generation.py --store data/eval/quality.duckdb [--neurons 16]
        [--engines torch-bfloat16:8,torch-bfloat16:16,torch-bfloat16:1,torch-float32:8,llama.cpp]

Prints, per engine: load time, prompt and generated tokens, seconds, and explanations per hour (generation
alone: no simulation, no best-of-n). Results in bench/results/generation.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autointerp.explain.formats import REGISTRY as FORMATS  # noqa: E402
from autointerp.llm.batched import BatchedGenerator, Row  # noqa: E402
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
    with store.connect() as con:
        layers = [int(x) for x in con.execute("SELECT DISTINCT layer FROM records WHERE model = ? AND revision = ? "
                                              "ORDER BY layer", [model, revision]).fetchnumpy()["layer"]]
        for layer in layers:
            neurons = [int(x) for x in con.execute(
                "SELECT DISTINCT neuron FROM records WHERE model = ? AND revision = ? AND layer = ? ORDER BY neuron",
                [model, revision, layer]).fetchnumpy()["neuron"]]
            for record in load_neuron_records(con, model, revision, layer, neurons):
                messages = fmt.messages(record.train_top()[: options.examples])
                prefill = messages[-1]["role"] == "assistant"
                texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not prefill,
                                                           continue_final_message=prefill))
    step = max(1, len(texts) // args.neurons)  # spread over the layers
    return texts[::step][: args.neurons], (source, tokenizer)


def run_torch(dtype: str, batch: int, texts: list[str], source, tokenizer) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    started = time.monotonic()
    lm = AutoModelForCausalLM.from_pretrained(source.location, dtype=getattr(torch, dtype),
                                              **source.pretrained_kwargs()).eval()
    load_s = time.monotonic() - started
    generator = BatchedGenerator(lm, tokenizer)
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


def run_llama_cpp(texts: list[str], gguf: Path) -> dict:
    from llama_cpp import Llama

    started = time.monotonic()
    llm = Llama(str(gguf), n_ctx=4096, n_threads=2, n_batch=512, verbose=False)
    load_s = time.monotonic() - started
    prompt_tokens = generated = 0
    outputs = []
    started = time.monotonic()
    for seed, text in enumerate(texts):
        out = llm.create_completion(text, max_tokens=MAX_TOKENS, temperature=TEMPERATURE, top_p=1.0, seed=seed,
                                    stop=["\n", "<|im_end|>"])
        prompt_tokens += out["usage"]["prompt_tokens"]
        generated += out["usage"]["completion_tokens"]
        outputs.append(out["choices"][0]["text"])
    return {"load_s": load_s, "seconds": time.monotonic() - started, "prompt_tokens": prompt_tokens,
            "generated": generated, "sample": outputs[0]}


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
        if engine == "llama.cpp":
            gguf = Path(source.location) / source.pretrained_kwargs()["gguf_file"]
            result = run_llama_cpp(texts, gguf)
        else:
            dtype, batch = engine.removeprefix("torch-").split(":")
            result = run_torch(dtype, int(batch), texts, source, tokenizer)
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
