"""End-to-end rate of the configured explain -> simulate -> score stack, with a cold LLM cache (a benchmark).

Records `--layers` of the config's first model (or takes them from `--records`, a store that holds them:
e.g. eval/quality.py's), copies that store without its LLM call cache, then runs the pipeline's explain,
simulate and score stages on `--neurons` neurons spread over the layers, timing each. Prints neurons/hour,
where the time goes (prefix, prefill and decode of the explainer's generation; simulation; scoring), the
CPU kind and the dtype the LLM ran in, and peak RSS.

    .venv/bin/python bench/explain.py [--config C] [--neurons 32] [--layers 4,9,14,19,24,28] [--records STORE]

Results: bench/results/explain.json and a table on stdout.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autointerp.config import NeuronSelection  # noqa: E402
from autointerp.llm.local import native_bf16_flags  # noqa: E402
from autointerp.stages import Stages  # noqa: E402
from autointerp.store import Store  # noqa: E402
from eval.common import config_of, parser, record_neurons  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_kind() -> str:
    native = native_bf16_flags()
    return f"{os.cpu_count()} cores, {'native bf16 (' + ', '.join(native) + ')' if native else 'no native bf16'}"


def main() -> None:
    args_parser = parser(__doc__)
    args_parser.add_argument("--neurons", type=int, default=32, help="neurons in all, spread over the layers")
    args_parser.add_argument("--layers", default="4,9,14,19,24,28")
    args_parser.add_argument("--records", type=Path, help="a store holding the layers' records (copied)")
    args_parser.add_argument("--engine", choices=("auto", "transformers", "llama.cpp"), default=None,
                             help="override the local explainer LLM's engine (default: the config's)")
    args_parser.add_argument("--out", type=Path, default=RESULTS / "explain.json")
    args = args_parser.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    per_layer = -(-args.neurons // len(layers))
    config = config_of(args)
    config = replace(config, neurons=NeuronSelection(select="random", count=per_layer, layers=tuple(layers)))
    if args.engine:
        llm = config.explainer.options.llm
        config = replace(config, explainer=replace(config.explainer, options=replace(
            config.explainer.options, llm=replace(llm, options=replace(llm.options, engine=args.engine)))))
    model = config.models[0].name
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        if args.records:
            shutil.copy(args.records, store.path)
        started = time.monotonic()
        record_neurons(config, layers, store)  # recorded layers of the current revision are kept
        recording_s = time.monotonic() - started
        store.execute("DELETE FROM llm_calls")  # a cold cache: every answer is paid for
        stages = Stages(config, store, lambda line: print(line, file=sys.stderr, flush=True))
        timings: dict[str, float] = {"explain": 0.0, "simulate": 0.0, "score": 0.0}
        started = time.monotonic()
        _ = (stages.explainer, stages.simulator)  # built (names resolved) before timing; models load on first call
        neurons = 0
        for layer in layers:
            for stage in ("explain", "simulate", "score"):
                t0 = time.monotonic()
                result = getattr(stages, stage)(model, layer)
                timings[stage] += time.monotonic() - t0
            neurons += result.neurons
        total = time.monotonic() - started
    llm = getattr(getattr(stages.explainer, "llm", None), "_llm", None)
    generator = getattr(llm, "generator", None)
    split = vars(generator.timings) if generator is not None else {}
    load_s = max(0.0, timings["explain"] - sum(split.get(k, 0.0) for k in ("prefix_s", "prefill_s", "decode_s"))) \
        if split else None
    peak_mib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 0) / 1024
    result_json = {
        "cpu": cpu_kind(), "machine": platform.machine(), "explainer": stages.explainer.name,
        "simulator": stages.simulator.name, "neurons": neurons, "layers": layers,
        "engine": getattr(llm, "engine", None),
        "dtype": str(llm.dtype) if getattr(llm, "engine", None) == "transformers"
        else None,
        "recording_s": round(recording_s, 1), "stages_s": {k: round(v, 1) for k, v in timings.items()},
        "total_s": round(total, 1), "neurons_per_hour": round(neurons / total * 3600, 1),
        "neurons_per_hour_without_model_load": round(neurons / (total - (load_s or 0)) * 3600, 1),
        "generation": {k: round(v, 1) if isinstance(v, float) else v for k, v in split.items()},
        "other_explain_s (model load, parsing, best-of-n simulation)": round(load_s, 1) if load_s is not None else None,
        "peak_rss_mib": round(peak_mib),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result_json, indent=2))
    print(json.dumps(result_json, indent=2))
    g = result_json["generation"]
    print(f"\n| measure | value |\n| --- | --- |\n| CPU | {result_json['cpu']}; explainer engine {result_json['engine']} "
          f"{result_json['dtype'] or ''} |\n"
          f"| neurons | {neurons} over layers {args.layers} |\n"
          f"| explain / simulate / score | {timings['explain']:.0f} s / {timings['simulate']:.0f} s / "
          f"{timings['score']:.1f} s |\n"
          f"| of explain: prefix / prefill / decode | {g.get('prefix_s', 0):.0f} s / {g.get('prefill_s', 0):.0f} s / "
          f"{g.get('decode_s', 0):.0f} s ({g.get('prompt_tokens', 0):,} prompt tokens, "
          f"{g.get('generated_tokens', 0):,} generated, {g.get('batches', 0)} batches) |\n"
          f"| **rate** | **{result_json['neurons_per_hour']:.0f} neurons/hour** "
          f"({result_json['neurons_per_hour_without_model_load']:.0f} without loading the model) |\n"
          f"| peak RSS | {result_json['peak_rss_mib']:,} MiB |")


if __name__ == "__main__":
    main()
