"""The device check (issue 19): the project's recording, explaining and judging paths on a GPU, as JSON.

One command, no downloads: every model is built from a transformers config with random weights (no weights can
travel to a lent GPU machine), and it imports neither Dagster, DuckDB nor Great Expectations (that machine has
torch, transformers and numpy only). What it measures:

1. recording equivalence: a tiny Llama-shaped model recorded by the project's recorder (autointerp/record) on the
   CPU and on `--device`, float32, same excerpts: the largest relative error over the records and statistics
   (target <= 1e-3), and how many top-k excerpt ids agree;
2. recording throughput: the project's recorder over all 30 layers of a SmolLM2-135M-shaped model (bf16 on CUDA,
   64-token excerpts, batch from free memory), tokens/s, against a bare forward of the same batches in the same
   run (targets on CUDA: >= 300,000 tokens/s and <= 1.5x the bare forward's time);
3. explaining: the project's explain path (the `marked` prompt format's messages, LocalLLM.chat's batched
   generation with the shared few-shot prefix computed once, parsing) on a Qwen2.5-1.5B shape (target >= 20,000
   explanations/hour) and a Llama-3.1-8B shape (>= 10,000/hour), ~1,200-token prompts, 40 new tokens;
4. judging, prefill only, per neuron: the judging scorers' own excerpt sets and prompts (detection and fuzzing
   over 20 activating and 20 silent excerpts) answered by LocalLLM.judge, as the judge stage runs them: the shared
   prefix computed once, the rows prefilled in batches, yes/no log-probabilities read at the last position.

    python bench/gpu.py --device cuda --sizes full --out bench/results/gpu-h100.json   # on the GPU machine
    python bench/gpu.py --device cpu --sizes tiny                                      # the CPU demo

`--sizes tiny` shrinks every model and count so that the CPU demo runs in a minute or two: its figures show the
check works, not what a GPU does; targets are judged only for `--sizes full` on CUDA.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from autointerp.config import RecordSpec, ScoringSpec  # noqa: E402
from autointerp.devices import describe_device, free_memory, resolve_device, synchronize  # noqa: E402
from autointerp.explain import ExplainerInput  # noqa: E402
from autointerp.explain.formats import REGISTRY as FORMATS  # noqa: E402
from autointerp.explain.llm import LLMExplainer, LLMExplainerOptions, usable  # noqa: E402
from autointerp.llm.local import LocalLLM, LocalOptions  # noqa: E402
from autointerp.record.recorder import record_activations, recording_batch_size  # noqa: E402
from autointerp.record.records import ActivationRecord  # noqa: E402
from autointerp.score.judging import ANSWERS, Detection, Fuzzing, detection_set, fuzzing_set  # noqa: E402
from autointerp.units.mlp import MLPNeurons  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SEQ = 64  # tokens per excerpt, as the pipeline cuts them
NEW_TOKENS = 40
SPEC = RecordSpec()  # the pipeline's defaults: top 20, random 20, pool 100, 5 bands x 4


# --- model shapes (random weights) -------------------------------------------------------------------------------


def smollm2_135m(tiny: bool) -> Any:
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                       rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True)


def qwen25_15b(tiny: bool) -> Any:
    from transformers import Qwen2Config

    if tiny:
        return Qwen2Config(vocab_size=3000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                           tie_word_embeddings=True)
    return Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                       num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                       rope_theta=1000000.0, tie_word_embeddings=True)


def llama31_8b(tiny: bool) -> Any:
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(vocab_size=3000, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    return LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                       rope_theta=500000.0, rms_norm_eps=1e-5)


def build(config: Any, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Any:
    """A causal LM with random weights, built on `device` directly (seconds on a GPU, even at 8B)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def drop(llm: LocalLLM) -> None:
    """Free an LLM's device memory before the next shape is built: its model and every KV cache it keeps."""
    llm._lm, llm._prefix = None, None
    llm.generator.lm, llm.generator._prefix = None, None  # type: ignore[union-attr]
    release()


def release(*models: Any) -> None:
    for model in models:
        del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- 1. recording: CUDA equals CPU ---------------------------------------------------------------------------------


def excerpts(n: int, vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(excerpt ids int32 as the store returns them, token ids (n, 64)) of random text."""
    rng = np.random.default_rng(seed)
    return np.arange(n, dtype=np.int32), rng.integers(0, vocab, size=(n, SEQ), dtype=np.int64)


def batches(ids: np.ndarray, tokens: np.ndarray, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(ids[i:i + size], tokens[i:i + size]) for i in range(0, len(ids), size)]


def record(model: Any, ids: np.ndarray, tokens: np.ndarray, layers: Sequence[int], batch_size: int) -> dict:
    n_neurons = model.config.intermediate_size
    return record_activations(model, MLPNeurons(), layers, batches(ids, tokens, batch_size), SPEC, 0, n_neurons,
                              len(ids), log=lambda _: None)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|: the error relative to the array's scale (near-zero entries do not blow it up)."""
    scale = float(np.abs(b).max()) if b.size else 0.0
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a - b).max(initial=0.0))


def recording_equivalence(device: torch.device, tiny: bool) -> dict[str, Any]:
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.15)
    cpu_model = build(config, torch.device("cpu"), torch.float32)
    device_model = copy.deepcopy(cpu_model).to(device)
    ids, tokens = excerpts(256 if tiny else 2048, config.vocab_size, seed=1)
    layers = list(range(config.num_hidden_layers))
    on_cpu = record(cpu_model, ids, tokens, layers, 32)
    on_device = record(device_model, ids, tokens, layers, 64)  # another batch size: the result must not care
    errors: dict[str, float] = {}
    agree, total = 0, 0
    for layer in layers:
        a, b = on_device[layer], on_cpu[layer]
        same = a.top_ids == b.top_ids
        agree, total = agree + int(same.sum()), total + same.size
        # records compared where both kept the same excerpt (a near-tie may order two excerpts differently)
        errors[f"layer{layer}.top_acts"] = relative_error(a.top_acts[same], b.top_acts[same])
        errors[f"layer{layer}.random_acts"] = relative_error(a.random_acts, b.random_acts)
        errors[f"layer{layer}.quantile_acts"] = relative_error(a.quantile_acts, b.quantile_acts)
        for stat in ("mean", "variance", "skewness", "kurtosis", "max", "frac_positive"):
            errors[f"layer{layer}.{stat}"] = relative_error(a.stats[stat], b.stats[stat])
    worst = max(errors, key=errors.get)  # type: ignore[arg-type]
    release(cpu_model, device_model)
    return {"model": "tiny Llama (3 layers x 128 neurons), float32", "excerpts": len(ids),
            "compared": f"{describe_device(device)} vs cpu",
            "max_relative_error": errors[worst], "worst": worst, "top_ids_agreement": agree / total,
            "random_and_quantile_ids_equal": all(
                np.array_equal(on_device[layer].random_ids, on_cpu[layer].random_ids)
                and np.array_equal(on_device[layer].quantile_ids, on_cpu[layer].quantile_ids) for layer in layers),
            "target": "max_relative_error <= 1e-3", "passed": errors[worst] <= 1e-3}


# --- 2. recording throughput ------------------------------------------------------------------------------------


def timed(device: torch.device, run: Any) -> float:
    synchronize(device)
    started = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - started


def recording_throughput(device: torch.device, tiny: bool, dtype: torch.dtype) -> dict[str, Any]:
    config = smollm2_135m(tiny)
    model = build(config, device, dtype)
    layers = list(range(config.num_hidden_layers))
    n_neurons = config.intermediate_size
    batch = recording_batch_size(model, n_neurons, len(layers), SPEC)
    if device.type == "cpu":
        batch = 32  # the config's default; the CPU demo
    n_excerpts = batch * (4 if tiny else 40)
    ids, tokens = excerpts(n_excerpts, config.vocab_size, seed=2)
    warm_ids, warm_tokens = excerpts(batch, config.vocab_size, seed=3)
    record(model, warm_ids, warm_tokens, layers, batch)  # kernels, allocator

    def bare() -> None:
        with torch.inference_mode():
            for _, t in batches(ids, tokens, batch):
                model(input_ids=torch.from_numpy(t).to(device), use_cache=False, logits_to_keep=1)

    bare()
    bare_s = timed(device, bare)
    record_s = timed(device, lambda: record(model, ids, tokens, layers, batch))
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    n_tokens = n_excerpts * SEQ
    result = {"shape": "SmolLM2-135M" + (" (tiny stand-in)" if tiny else ""), "dtype": str(dtype).removeprefix("torch."),
              "layers_recorded": len(layers), "neurons_per_layer": n_neurons, "batch_size": batch,
              "tokens": n_tokens, "recorder_tokens_per_s": round(n_tokens / record_s),
              "bare_forward_tokens_per_s": round(n_tokens / bare_s), "recorder_time_over_bare": round(record_s / bare_s, 3),
              "peak_gpu_memory_gib": None if peak is None else round(peak / 2**30, 2),
              "targets": ">= 300,000 tokens/s and <= 1.5x the bare forward (CUDA, full sizes)"}
    result["passed"] = (n_tokens / record_s >= 300_000 and record_s / bare_s <= 1.5) if judged(device, tiny) else None
    release(model)
    return result


def judged(device: torch.device, tiny: bool) -> bool:
    return device.type == "cuda" and not tiny


# --- 3 and 4. explaining and judging ------------------------------------------------------------------------------


WORDS = ("the river flows into sea year ended he did not go city of water bank money market price rose fell "
         "after before during while under over with without from about against between through into onto").split()
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
          "{% if not (loop.last and m['role'] == 'assistant') %}<|im_end|>\n{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def word_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer with a ChatML template whose vocabulary covers every id of the model (random weights
    sample any id), words of English first, digits and yes/no among them. No download: built here."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    words = [*specials, *(str(d) for d in range(11)), "yes", "no", *dict.fromkeys(WORDS)]
    words += [f"w{i}" for i in range(vocab_size - len(words))]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token="<|endoftext|>", additional_special_tokens=specials[1:])
    tokenizer.chat_template = CHATML
    return tokenizer


def neurons(n: int, tokenizer: Any, records: int, seed: int) -> list[ExplainerInput]:
    """Made-up neurons: each with `records` top records of 64 words, a few tokens active."""
    rng = np.random.default_rng(seed)
    vocab = [w for w in tokenizer.get_vocab() if w.isalpha() and not w.startswith("w")] or ["the"]
    made = []
    for neuron in range(n):
        top = []
        for _ in range(records):
            tokens = tuple(" " + vocab[i] for i in rng.integers(0, len(vocab), SEQ))
            acts = np.where(rng.random(SEQ) < 0.08, rng.random(SEQ) * 10, 0.0)
            top.append(ActivationRecord(tokens, tuple(float(a) for a in acts)))
        top.sort(key=lambda r: -r.max_activation)
        made.append(ExplainerInput(0, neuron, tuple(top)))
    return made


class _Completions:
    """What LLMExplainer expects of its (cached) LLM: completions per request; here LocalLLM.chat, uncached."""

    def __init__(self, llm: LocalLLM):
        self.llm = llm

    def chat(self, requests: list[dict], keep=None) -> list[list[str]]:  # keep: the cache's rule; no cache here
        return [result.response for result in self.llm.chat(requests)]


@dataclass
class ExplainSetup:
    explainer: LLMExplainer
    llm: LocalLLM
    examples: int
    prompt_tokens: int


def explain_setup(llm: LocalLLM, target_tokens: int) -> ExplainSetup:
    """The project's LLM explainer (marked format, one sample, 40 new tokens) over `llm`, with as many top records
    as bring the prompt to about `target_tokens` tokens."""
    form = FORMATS.get("marked").factory()
    probe = neurons(1, llm.tokenizer, 20, seed=9)[0]
    examples = 1
    while examples < 20 and len(llm._prompt_ids(form.messages(probe.records[:examples]))) < target_tokens:
        examples += 1
    options = LLMExplainerOptions(llm=None, formats=("marked",), samples=1, examples=examples,  # type: ignore[arg-type]
                                  temperature=1.0, top_p=1.0, max_tokens=NEW_TOKENS, attempts=1)
    explainer = LLMExplainer.__new__(LLMExplainer)  # its constructor wants a store for the LLM cache: none here
    explainer.options, explainer.formats = options, {"marked": form}
    explainer.llm, explainer._name, explainer._batch = _Completions(llm), "bench", llm.device_batch
    return ExplainSetup(explainer, llm, examples, len(llm._prompt_ids(form.messages(probe.records[:examples]))))


def explain_throughput(shape: str, config: Any, device: torch.device, tiny: bool, n_neurons: int,
                       target: int) -> tuple[dict[str, Any], LocalLLM]:
    tokenizer = word_tokenizer(config.vocab_size)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    options = LocalOptions(device=str(device), dtype=str(dtype).removeprefix("torch."), engine="transformers",
                           chat_batch=8, device_batch=128)
    llm = LocalLLM.in_memory(build(config, device, dtype), tokenizer, options, label=shape)
    setup = explain_setup(llm, 1200 if not tiny else 400)
    inputs = neurons(n_neurons, tokenizer, setup.examples, seed=4)
    per_call = llm.rows_per_batch(setup.prompt_tokens + NEW_TOKENS) if device.type == "cuda" else llm.chat_batch
    setup.explainer.explain(inputs[:min(per_call, 8)], seed=1)  # warm-up: kernels and the few-shot prefix
    timings = llm.generator.timings
    before = copy.copy(timings)
    explanations: list[Any] = []
    synchronize(device)
    started = time.perf_counter()
    for lo in range(0, len(inputs), per_call):  # the explain stage hands the explainer `rows_per_call` at a time
        explanations += setup.explainer.explain(inputs[lo:lo + per_call], seed=2)
    synchronize(device)
    seconds = time.perf_counter() - started
    per_hour = len(inputs) / seconds * 3600
    result = {"shape": shape + (" (tiny stand-in)" if tiny else ""), "dtype": str(dtype).removeprefix("torch."),
              "neurons": len(inputs), "rows_per_batch": per_call, "records_shown": setup.examples,
              "prompt_tokens": setup.prompt_tokens, "new_tokens": NEW_TOKENS, "seconds": round(seconds, 2),
              "explanations_per_hour": round(per_hour),
              "parsed_usable": sum(usable(e.explanation) for e in explanations),
              "time_split_s": {"prefix": round(timings.prefix_s - before.prefix_s, 2),
                               "prefill": round(timings.prefill_s - before.prefill_s, 2),
                               "decode": round(timings.decode_s - before.decode_s, 2)},
              "generated_tokens": timings.generated_tokens - before.generated_tokens,
              "target": f">= {target:,} explanations/hour (CUDA, full sizes)",
              "passed": per_hour >= target if judged(device, tiny) else None}
    return result, llm


def judging(llm: LocalLLM, n_neurons: int, per_class: int = 20) -> dict[str, Any]:
    """Per neuron, the project's judging path as the judge stage runs it: detection and fuzzing excerpt sets
    (autointerp/score/judging.py) over `per_class` activating and `per_class` silent synthetic excerpts of 64
    random words, their prompts (the scorers' instructions and examples, then explanation and excerpt), answered by
    LocalLLM.judge: the shared prefix computed once, the rows prefilled in batches (sized by free memory on CUDA),
    the log-probabilities of yes and no read at the last position, no decoding."""
    rng = np.random.default_rng(5)
    vocab = [w for w in llm.tokenizer.get_vocab() if w.isalpha() and not w.startswith("w")]
    options = ScoringSpec(per_class=per_class)

    def records() -> list[ActivationRecord]:
        out = []
        for i in range(2 * per_class):
            activations = [0.0] * 64
            if i < per_class:
                activations[int(rng.integers(20, 60))] = 5.0
            out.append(ActivationRecord(tuple(" " + vocab[k] for k in rng.integers(0, len(vocab), 64)),
                                        tuple(activations), i))
        return out

    def one() -> list[float]:
        explanation = " ".join(vocab[k] for k in rng.integers(0, len(vocab), 12))
        unit = records()
        requests = [{"messages": scorer.messages(explanation, j.text), "answers": list(ANSWERS)}
                    for scorer, judged in ((Detection, detection_set(unit, options)),
                                           (Fuzzing, fuzzing_set(unit, options)))
                    for j in judged]
        return [float(a.response["yes"] - a.response["no"]) for a in llm.judge(requests)]

    one()  # warm-up
    started = time.perf_counter()
    for _ in range(n_neurons):
        log_odds = one()
    per_neuron = (time.perf_counter() - started) / n_neurons
    return {"what": "the judging scorers' path (detection + fuzzing sets and prompts, LocalLLM.judge): "
                    f"{per_class} activating + {per_class} silent excerpts per neuron, 24-token windows",
            "neurons": n_neurons, "judgements_per_neuron": len(log_odds),
            "seconds_per_neuron": round(per_neuron, 4), "neurons_per_hour": round(3600 / per_neuron),
            "log_odds_finite": bool(np.isfinite(log_odds).all())}


# --- main ----------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--sizes", choices=("tiny", "full"), default="full",
                        help="full: the shapes the targets are for (GPU); tiny: small stand-ins (a CPU demo)")
    parser.add_argument("--out", type=Path, help="write the JSON here too (default: bench/results/gpu-<device>-<sizes>.json)")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: equivalence,record,explain,8b")
    args = parser.parse_args(argv)
    device = resolve_device(args.device, "--device")
    tiny = args.sizes == "tiny"
    skip = set(filter(None, args.skip.split(",")))
    started = time.perf_counter()
    import transformers

    report: dict[str, Any] = {
        "check": "bench/gpu.py (issue 19)", "device": describe_device(device), "sizes": args.sizes,
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "cpu_cores": os.cpu_count(), "run_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # other work on the machine skews CPU timings (the shared 2-core machines here): said next to them
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "free_gpu_memory_gib": None if free_memory(device) is None else round(free_memory(device) / 2**30, 1),
    }

    def part(name: str, run: Any) -> None:
        part_started = time.perf_counter()
        report[name] = run()
        print(f"{name}: {time.perf_counter() - part_started:.1f}s", file=sys.stderr, flush=True)

    if "equivalence" not in skip:
        part("recording_equivalence", lambda: recording_equivalence(device, tiny))
    if "record" not in skip:
        record_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        part("recording_throughput", lambda: recording_throughput(device, tiny, record_dtype))
    if "explain" not in skip:
        shapes = [("Qwen2.5-1.5B", qwen25_15b(tiny), 20_000, 256), ("Llama-3.1-8B", llama31_8b(tiny), 10_000, 128)]
        report["explain"], report["judging"] = [], []
        for shape, config, target, count in shapes:
            if shape == "Llama-3.1-8B" and "8b" in skip:
                continue
            part_started = time.perf_counter()
            result, llm = explain_throughput(shape, config, device, tiny, 8 if tiny else count, target)
            report["explain"].append(result)
            report["judging"].append({"shape": result["shape"], **judging(llm, 3 if tiny else 16)})
            drop(llm)
            print(f"explain+judge {shape}: {time.perf_counter() - part_started:.1f}s", file=sys.stderr, flush=True)
    report["seconds_total"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=1)
    print(text)
    out = args.out or RESULTS / f"gpu-{device.type}-{args.sizes}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
