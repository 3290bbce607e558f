"""Benchmark: the cost of recording MLP neurons vs a bare forward pass, and whether memory stays flat.

Measures, for the first model of the config (default: SmolLM2-135M from autointerp.yaml):
1. Speed, in this process, on the SAME in-memory batches (tokenizer and DuckDB excluded):
   (a) a bare forward pass of the full model, (b) `record_activations` on the requested layers
   (default all), (c) `record_activations` on layer 0 only (the pass stops after the deepest
   requested layer, so this can beat a bare forward). One warm-up batch of each is not counted.
2. Peak memory: peak RSS (ru_maxrss) of recording the requested layers over N and factor*N tokens,
   each in a fresh subprocess that streams its batches lazily.

Targets: recording <= 1.15x the bare forward time; peak-RSS growth < 10% for the factor*N corpus.
PASS/FAIL is printed, but the exit code is 0 either way: this is a measurement, not a test.
Results go to stdout and to bench/results/record.json.

Run from the repository root (offline):
    HF_HUB_OFFLINE=1 /work/venv/bin/python bench/record.py [--tokens 4096] [--factor 10] [--layers all]
        [--batch-size 32] [--config autointerp.yaml] [--timing-corpus small|large] [--profile]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from autointerp import recording  # noqa: E402
from autointerp.config import Config, load_config  # noqa: E402
from autointerp.corpus import iter_documents, iter_excerpts, resolve_corpus_paths  # noqa: E402
from autointerp.recording import EXCERPT_TOKENS, record_activations  # noqa: E402
from autointerp.subject import describe_model, load_model, load_tokenizer, model_revision, neuron_modules, resolve_source  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "record.json"
MAX_SLOWDOWN = 1.15
MAX_GROWTH = 0.10
Batch = tuple[np.ndarray, np.ndarray]  # excerpt_ids (B,), token_ids (B, 64)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def iter_batches(config: Config, tokenizer: Any, max_tokens: int, batch_size: int) -> Iterator[Batch]:
    """The corpus's first max_tokens tokens as batches of excerpts, tokenized lazily (as `excerpts` cuts them)."""
    paths = resolve_corpus_paths(config.corpus.paths, config.path.parent)
    excerpts = iter_excerpts(iter_documents(paths, config.corpus.text_field),
                             lambda text: tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"],
                             EXCERPT_TOKENS, max_tokens)
    ids: list[int] = []
    tokens: list[tuple[int, ...]] = []
    for excerpt in excerpts:
        ids.append(excerpt.excerpt_id)
        tokens.append(excerpt.token_ids)
        if len(ids) == batch_size:
            yield np.array(ids, dtype=np.int64), np.array(tokens, dtype=np.int32)
            ids, tokens = [], []
    if ids:
        yield np.array(ids, dtype=np.int64), np.array(tokens, dtype=np.int32)


def parse_layers(text: str, n_layers: int) -> list[int]:
    """'all', or a comma list of layers and inclusive ranges: '0,5,10-12'."""
    if text == "all":
        return list(range(n_layers))
    layers: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        layers.update(range(int(lo), int(hi or lo) + 1))
    return sorted(layers)


class Subject:
    """Everything loaded once: config, model, tokenizer and the recording arguments."""

    def __init__(self, args: argparse.Namespace):
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.config = load_config(args.config)
        self.spec = self.config.models[0]
        self.source = resolve_source(self.spec.source, self.config.path.parent)
        self.info = describe_model(self.source)
        self.layers = parse_layers(args.layers, self.info.n_layers)
        self.records = dataclasses.replace(self.config.records, batch_size=args.batch_size)
        self.tokenizer = load_tokenizer(self.source)
        self.model = load_model(self.source, self.spec.dtype)
        self.modules = neuron_modules(self.model)

    def batches(self, max_tokens: int) -> Iterator[Batch]:
        return iter_batches(self.config, self.tokenizer, max_tokens, self.records.batch_size)

    def record(self, layers: list[int], batches: list[Batch] | Iterator[Batch], n_excerpts: int) -> dict[int, Any]:
        return record_activations(self.model, self.modules, layers, batches, self.records, self.config.seed,
                                  self.info.n_neurons, n_excerpts, log=log)

    def forward(self, batches: list[Batch]) -> None:
        with torch.inference_mode():
            for _ids, tokens in batches:
                self.model(input_ids=torch.from_numpy(tokens.astype(np.int64)), use_cache=False)


def timed(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def rss_mib() -> tuple[float, float]:
    """(peak RSS so far, current RSS) in MiB."""
    current = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, current / 1024


def child_memory(args: argparse.Namespace) -> None:
    """Fresh process: load, record the requested layers over `args.child_memory` tokens, print peak RSS as JSON."""
    subject = Subject(args)
    peak_after_load, rss_after_load = rss_mib()
    n_excerpts = args.child_memory // EXCERPT_TOKENS
    started = time.perf_counter()
    subject.record(subject.layers, subject.batches(args.child_memory), n_excerpts)
    seconds = time.perf_counter() - started
    peak, rss = rss_mib()
    print(json.dumps({"tokens": n_excerpts * EXCERPT_TOKENS, "peak_rss_mib": peak, "peak_rss_after_load_mib": peak_after_load,
                      "rss_after_load_mib": rss_after_load, "rss_at_end_mib": rss, "record_seconds": seconds}))


def measure_memory(args: argparse.Namespace, tokens: int) -> dict[str, float]:
    log(f"memory: recording {tokens:,} tokens in a fresh process")
    command = [sys.executable, str(Path(__file__).resolve()), "--child-memory", str(tokens), "--config", str(args.config),
               "--layers", args.layers, "--batch-size", str(args.batch_size)]
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def profile_recording(subject: Subject, batches: list[Batch], n_excerpts: int) -> dict[str, float]:
    """Seconds spent in each part of the recorder during one recording of the timing batches."""
    totals: dict[str, float] = {}

    def timer(name: Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*a: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                key = name(*a)
                totals[key] = totals.get(key, 0.0) + time.perf_counter() - started
        return wrapped

    originals = {name: getattr(owner, attr) for name, (owner, attr) in PROFILED.items()}
    try:
        recording.LayerRecorder.update = timer(lambda *a: "LayerRecorder.update (all)", originals["update"])
        recording.StreamingTopK.offer = timer(
            lambda self, *a: "StreamingTopK.offer (" + ("random pool" if self.keys.dtype == torch.float64 else "top") + ")",
            originals["offer"])
        recording.random_priorities = timer(lambda *a: "random_priorities", originals["priorities"])
        recording.Moments.update = timer(lambda *a: "Moments.update", originals["moments"])
        recording.LayerRecorder.finish = timer(lambda *a: "LayerRecorder.finish", originals["finish"])
        totals["record_activations (total)"] = timed(lambda: subject.record(subject.layers, batches, n_excerpts))
    finally:
        for name, (owner, attr) in PROFILED.items():
            setattr(owner, attr, originals[name])
    totals["forward, cut after the deepest layer"] = (totals["record_activations (total)"] - totals["LayerRecorder.update (all)"]
                                                      - totals.get("LayerRecorder.finish", 0.0))
    return totals


PROFILED = {"update": (recording.LayerRecorder, "update"), "offer": (recording.StreamingTopK, "offer"),
            "priorities": (recording, "random_priorities"), "moments": (recording.Moments, "update"),
            "finish": (recording.LayerRecorder, "finish")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4096, help="small corpus size N in tokens (default 4096)")
    parser.add_argument("--factor", type=int, default=10, help="large corpus = factor x N tokens (default 10)")
    parser.add_argument("--layers", default="all", help="layers to record: 'all' or e.g. '0,5,10-12'")
    parser.add_argument("--batch-size", type=int, default=32, help="excerpts per forward pass (default 32)")
    parser.add_argument("--config", type=Path, default=Path("autointerp.yaml"), help="config file (first model is used)")
    parser.add_argument("--timing-corpus", choices=("small", "large"), default="small",
                        help="time on the N-token corpus (default) or the factor x N one")
    parser.add_argument("--profile", action="store_true", help="also time each part of the recorder (one extra run)")
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        return child_memory(args)

    started = time.perf_counter()
    log(f"loading the model from {args.config}")
    subject = Subject(args)
    large_tokens = args.tokens * args.factor
    all_batches = list(subject.batches(large_tokens))  # tokenized once, held in memory
    n_large = sum(len(ids) for ids, _ in all_batches)
    if n_large * EXCERPT_TOKENS < large_tokens // EXCERPT_TOKENS * EXCERPT_TOKENS:
        log(f"warning: the corpus has only {n_large * EXCERPT_TOKENS:,} tokens, fewer than {large_tokens:,}")
    n_small = min(args.tokens // EXCERPT_TOKENS, n_large)
    n_timing = n_small if args.timing_corpus == "small" else n_large
    batches = [(ids[:n_timing - int(ids[0])], tokens[:n_timing - int(ids[0])])
               for ids, tokens in all_batches if ids[0] < n_timing]
    timing_tokens = n_timing * EXCERPT_TOKENS

    log("warm-up (1 batch each, not counted)")
    subject.forward(batches[:1])
    subject.record(subject.layers, batches[:1], len(batches[0][0]))
    log(f"timing on {timing_tokens:,} tokens ({len(batches)} batches)")
    bare = timed(lambda: subject.forward(batches))
    rec = timed(lambda: subject.record(subject.layers, batches, n_timing))
    first = timed(lambda: subject.record([0], batches, n_timing))
    profile = profile_recording(subject, batches, n_timing) if args.profile else None
    memory = {"small": measure_memory(args, args.tokens), "large": measure_memory(args, large_tokens)}

    growth = (memory["large"]["peak_rss_mib"] - memory["small"]["peak_rss_mib"]) / memory["small"]["peak_rss_mib"]
    ratio = rec / bare
    layer_label = args.layers if args.layers != "all" else f"all {len(subject.layers)}"
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"nproc": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "platform": platform.platform()},
        "model": {"name": subject.spec.name, "source": subject.spec.source, "revision": model_revision(subject.source),
                  "dtype": subject.spec.dtype, "n_layers": subject.info.n_layers, "n_neurons": subject.info.n_neurons},
        "corpus": list(subject.config.corpus.paths),
        "layers_recorded": subject.layers,
        "batch_size": args.batch_size,
        "record_spec": dataclasses.asdict(subject.records),
        "timing": {"corpus": args.timing_corpus, "tokens": timing_tokens, "batches": len(batches),
                   "bare_forward_s": bare, "record_s": rec, "record_first_layer_s": first,
                   "bare_tokens_per_s": timing_tokens / bare, "record_tokens_per_s": timing_tokens / rec,
                   "record_first_layer_tokens_per_s": timing_tokens / first,
                   "ratio_record_vs_bare": ratio, "ratio_first_layer_vs_bare": first / bare},
        "profile_s": profile,
        "memory": {**memory, "growth": growth},
        "targets": {"max_ratio": MAX_SLOWDOWN, "ratio_pass": ratio <= MAX_SLOWDOWN,
                    "max_growth": MAX_GROWTH, "growth_pass": growth < MAX_GROWTH},
        "wall_s": time.perf_counter() - started,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, layer_label)


def print_table(r: dict[str, Any], layer_label: str) -> None:
    t, m, machine, model = r["timing"], r["memory"], r["machine"], r["model"]
    verdict = {True: "PASS", False: "FAIL"}
    print(f"\n{model['name']} ({model['dtype']}, {model['n_layers']} layers x {model['n_neurons']} neurons), "
          f"batch {r['batch_size']} x {EXCERPT_TOKENS} tokens; {machine['nproc']} CPUs, torch {machine['torch']}, "
          f"{machine['torch_threads']} threads; {r['date']}")
    print(f"\nSpeed on the same {t['tokens']:,} tokens ({t['corpus']} corpus, {t['batches']} batches, after warm-up):")
    print(f"  {'run':<30}{'seconds':>9}{'tokens/s':>10}{'vs bare':>9}")
    for label, seconds in ((f"bare forward (full model)", t["bare_forward_s"]),
                           (f"record layers {layer_label}", t["record_s"]),
                           ("record layer 0 only", t["record_first_layer_s"])):
        print(f"  {label:<30}{seconds:>9.2f}{t['tokens'] / seconds:>10.0f}{seconds / t['bare_forward_s']:>8.2f}x")
    if r["profile_s"]:
        print("\nWhere the recording time goes (one instrumented run, seconds):")
        for name, seconds in sorted(r["profile_s"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:<42}{seconds:>8.2f}")
    print(f"\nPeak RSS recording layers {layer_label} (fresh process each):")
    print(f"  {'tokens':>10}{'peak MiB':>10}{'peak after load':>17}{'record s':>10}")
    for size in ("small", "large"):
        row = m[size]
        print(f"  {row['tokens']:>10,}{row['peak_rss_mib']:>10.0f}{row['peak_rss_after_load_mib']:>17.0f}"
              f"{row['record_seconds']:>10.1f}")
    print(f"  growth: {100 * m['growth']:+.1f}%")
    print(f"\n{verdict[r['targets']['ratio_pass']]}  recording / bare forward = {t['ratio_record_vs_bare']:.2f}x "
          f"(target <= {MAX_SLOWDOWN}x)")
    print(f"{verdict[r['targets']['growth_pass']]}  peak RSS growth for {m['large']['tokens'] // max(m['small']['tokens'], 1)}x "
          f"the tokens = {100 * m['growth']:+.1f}% (target < {100 * MAX_GROWTH:.0f}%)")
    print(f"\nresults: {RESULTS}  (total {r['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
