"""Benchmark: the cost of recording MLP neurons vs a bare forward pass, and whether memory stays flat.

Measures, for the first model of the config (default: SmolLM2-135M from autointerp.yaml):
1. Peak memory: peak RSS (ru_maxrss) of recording the requested layers over N and factor*N tokens,
   each in a fresh subprocess that tokenizes and batches the corpus lazily.
2. Speed, in this process, on the SAME in-memory batches (tokenizer and DuckDB excluded):
   (a) a bare forward pass of the full model, (b) `record_activations` on the requested layers
   (default all), (c) `record_activations` on layer 0 only (the pass stops after the deepest
   requested layer, so this can beat a bare forward), each at both sizes. One warm-up batch is
   not counted. The small corpus shows the start of a recording, when every neuron's top/random
   samples still change with every batch; the large one is closer to a real run.

Targets: recording <= 1.15x the bare forward time (judged at each size); peak-RSS growth < 10%
for the factor*N corpus.
PASS/FAIL is printed, but the exit code is 0 either way: this is a measurement, not a test.
Results go to stdout and to bench/results/record.json (or --out); progress goes to stderr.

The memory children are started before this process loads the model: on Linux a child's ru_maxrss
starts at its parent's peak RSS (it is carried over by fork+exec), so a child of a 3 GB parent
would report >= 3 GB. VmHWM (/proc/self/status), which is per address space, is recorded as a check.

Run from the repository root (offline):
    HF_HUB_OFFLINE=1 /work/venv/bin/python bench/record.py [--tokens 4096] [--factor 10] [--layers all]
        [--batch-size 32] [--config FILE] [--profile] [--out FILE]
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
os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF de-quantization progress bar
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from autointerp.config import Config  # noqa: E402
from autointerp.corpus import EXCERPT_TOKENS, iter_documents, iter_excerpts, resolve_corpus_paths  # noqa: E402
from autointerp.record import recorder, streaming  # noqa: E402
from autointerp.record.recorder import record_activations  # noqa: E402
from autointerp.subject import Subject as ModelSubject  # noqa: E402
from eval.common import config_of, parser as make_parser  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "record.json"
MAX_SLOWDOWN = 1.15
MAX_GROWTH = 0.10
Batch = tuple[np.ndarray, np.ndarray]  # excerpt_ids (B,), token_ids (B, 64)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def iter_batches(config: Config, tokenizer: Any, max_tokens: int, batch_size: int) -> Iterator[Batch]:
    """The corpus's first max_tokens tokens as batches of excerpts, tokenized lazily, cut as `excerpts` cuts them."""
    paths = resolve_corpus_paths(config.corpus.paths, config.base_dir)
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
        self.config = config_of(args)
        self.spec = self.config.models[0]
        self.subject = ModelSubject.of(self.spec, self.config.base_dir)  # its units: the config's (MLP neurons)
        self.source, self.units = self.subject.source, self.subject.units
        self.info = self.subject.info
        self.layers = parse_layers(args.layers, self.info.n_layers)
        self.records = dataclasses.replace(self.config.records, batch_size=args.batch_size)
        self.tokenizer = self.subject.tokenizer()
        self.model = self.subject.load()

    def batches(self, max_tokens: int) -> Iterator[Batch]:
        return iter_batches(self.config, self.tokenizer, max_tokens, self.records.batch_size)

    def record(self, layers: list[int], batches: list[Batch] | Iterator[Batch], n_excerpts: int) -> dict[int, Any]:
        return record_activations(self.model, self.units, layers, batches, self.records, self.config.seed,
                                  self.info.n_neurons, n_excerpts, log=log)

    def forward(self, batches: list[Batch]) -> None:
        with torch.inference_mode():
            for _ids, tokens in batches:
                self.model(input_ids=torch.from_numpy(tokens.astype(np.int64)), use_cache=False)


def timed(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds used by the whole machine, by this process) so far."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def others_share(before: tuple[float, float], wall: float) -> float:
    """Fraction of the machine's CPU time used by other processes since `before` (a `cpu_seconds()`)."""
    after = cpu_seconds()
    return max((after[0] - before[0]) - (after[1] - before[1]), 0.0) / (wall * (os.cpu_count() or 1))


def memory_mib() -> dict[str, float]:
    """ru_maxrss, and VmHWM (peak) / VmRSS (current) of this address space, in MiB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {"ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "vm_hwm": int(status["VmHWM"].split()[0]) / 1024, "vm_rss": int(status["VmRSS"].split()[0]) / 1024}


def child_memory(args: argparse.Namespace) -> None:
    """Fresh process: load, record the requested layers over `args.child_memory` tokens, print peak RSS as JSON."""
    subject = Subject(args)
    after_load, cpu_before, started = memory_mib(), cpu_seconds(), time.perf_counter()
    results = subject.record(subject.layers, subject.batches(args.child_memory), args.child_memory // EXCERPT_TOKENS)
    seconds = time.perf_counter() - started
    end = memory_mib()
    tokens = int(results[subject.layers[0]].stats["count"][0])
    print(json.dumps({"tokens": tokens, "peak_rss_mib": end["ru_maxrss"], "vm_hwm_mib": end["vm_hwm"],
                      "peak_after_load_mib": after_load["vm_hwm"], "rss_after_load_mib": after_load["vm_rss"],
                      "record_seconds": seconds, "other_processes_cpu_share": others_share(cpu_before, seconds)}))


def measure_memory(args: argparse.Namespace, tokens: int) -> dict[str, float]:
    log(f"memory: recording {tokens:,} tokens in a fresh process")
    command = [sys.executable, str(Path(__file__).resolve()), "--child-memory", str(tokens),
               *(["--config", str(args.config)] if args.config else []),
               "--layers", args.layers, "--batch-size", str(args.batch_size)]
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# random_priorities is patched where LayerRecorder.update looks it up: the recorder module's namespace.
PROFILED = {"update": (recorder.LayerRecorder, "update"), "offer": (streaming.StreamingTopK, "offer"),
            "priorities": (recorder, "random_priorities"), "moments": (streaming.Moments, "update"),
            "finish": (recorder.LayerRecorder, "finish")}


def profile_recording(subject: Subject, batches: list[Batch], n_excerpts: int) -> dict[str, float]:
    """Seconds spent in each part of the recorder during one (instrumented) recording of `batches`."""
    totals: dict[str, float] = {}
    originals = {name: getattr(owner, attr) for name, (owner, attr) in PROFILED.items()}

    def timer(name: Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*a: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                totals[name(*a)] = totals.get(name(*a), 0.0) + time.perf_counter() - started
        return wrapped

    def offer_kind(topk: streaming.StreamingTopK, *_: Any) -> str:
        return "StreamingTopK.offer (" + ("random pool" if topk.keys.dtype == torch.float64 else "top") + ")"

    try:
        recorder.LayerRecorder.update = timer(lambda *a: "LayerRecorder.update (all parts)", originals["update"])
        streaming.StreamingTopK.offer = timer(offer_kind, originals["offer"])
        recorder.random_priorities = timer(lambda *a: "random_priorities", originals["priorities"])
        streaming.Moments.update = timer(lambda *a: "Moments.update", originals["moments"])
        recorder.LayerRecorder.finish = timer(lambda *a: "LayerRecorder.finish", originals["finish"])
        total = timed(lambda: subject.record(subject.layers, batches, n_excerpts))
    finally:
        for name, (owner, attr) in PROFILED.items():
            setattr(owner, attr, originals[name])
    parts = ("StreamingTopK.offer (top)", "StreamingTopK.offer (random pool)", "random_priorities", "Moments.update")
    totals["LayerRecorder.update: rest (amax, max)"] = totals["LayerRecorder.update (all parts)"] - sum(totals[p] for p in parts)
    totals["forward, cut after the deepest layer"] = total - totals["LayerRecorder.update (all parts)"] - totals["LayerRecorder.finish"]
    totals["record_activations (total)"] = total
    return totals


def time_speed(subject: Subject, batches: list[Batch]) -> dict[str, float]:
    """Seconds and tokens/s of a bare forward, recording the requested layers, and recording layer 0, on `batches`."""
    n_excerpts = sum(len(ids) for ids, _ in batches)
    tokens = n_excerpts * EXCERPT_TOKENS
    log(f"timing on {tokens:,} tokens ({len(batches)} batches)")
    cpu_before, started = cpu_seconds(), time.perf_counter()
    bare = timed(lambda: subject.forward(batches))
    rec = timed(lambda: subject.record(subject.layers, batches, n_excerpts))
    first = timed(lambda: subject.record([0], batches, n_excerpts))
    return {"tokens": tokens, "batches": len(batches), "bare_forward_s": bare, "record_s": rec,
            "record_first_layer_s": first, "bare_tokens_per_s": tokens / bare, "record_tokens_per_s": tokens / rec,
            "record_first_layer_tokens_per_s": tokens / first, "ratio_record_vs_bare": rec / bare,
            "ratio_first_layer_vs_bare": first / bare,
            "other_processes_cpu_share": others_share(cpu_before, time.perf_counter() - started)}


def main() -> None:
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4096, help="small corpus size N in tokens (default 4096)")
    parser.add_argument("--factor", type=int, default=10, help="large corpus = factor x N tokens (default 10)")
    parser.add_argument("--layers", default="all", help="layers to record: 'all' or e.g. '0,5,10-12'")
    parser.add_argument("--batch-size", type=int, default=32, help="excerpts per forward pass (default 32)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    parser.add_argument("--profile", action="store_true",
                        help="also time each part of the recorder on the small corpus (one extra run)")
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        return child_memory(args)

    started = time.perf_counter()
    large_tokens = args.tokens * args.factor
    parent_at_spawn = memory_mib()["ru_maxrss"]  # children's ru_maxrss cannot be below this
    memory: dict[str, Any] = {"small": measure_memory(args, args.tokens), "large": measure_memory(args, large_tokens)}
    memory["growth"] = (memory["large"]["peak_rss_mib"] - memory["small"]["peak_rss_mib"]) / memory["small"]["peak_rss_mib"]
    memory["parent_peak_rss_at_spawn_mib"] = parent_at_spawn

    log(f"loading the model from {args.config or 'the default config'}")
    subject = Subject(args)
    large = list(subject.batches(large_tokens))  # tokenized once, held in memory
    n_small = args.tokens // EXCERPT_TOKENS
    small = [(ids[ids < n_small], tokens[ids < n_small]) for ids, tokens in large if ids[0] < n_small]
    if sum(len(ids) for ids, _ in large) < large_tokens // EXCERPT_TOKENS:
        log(f"warning: the corpus has fewer than {large_tokens:,} tokens")

    log("warm-up (1 batch each, not counted)")
    subject.forward(large[:1])
    subject.record(subject.layers, large[:1], len(large[0][0]))
    timing = {"small": time_speed(subject, small), "large": time_speed(subject, large)}
    profile = profile_recording(subject, small, n_small) if args.profile else None

    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"nproc": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "platform": platform.platform()},
        "model": {"name": subject.spec.name, "source": subject.spec.source, "revision": subject.subject.revision,
                  "dtype": subject.spec.dtype, "n_layers": subject.info.n_layers, "n_neurons": subject.info.n_neurons},
        "corpus": list(subject.config.corpus.paths),
        "layers_recorded": subject.layers,
        "batch_size": args.batch_size,
        "record_spec": dataclasses.asdict(subject.records),
        "timing": timing,
        "profile_s": profile,
        "memory": memory,
        "targets": {"max_ratio": MAX_SLOWDOWN, "max_growth": MAX_GROWTH, "growth_pass": memory["growth"] < MAX_GROWTH,
                    **{f"ratio_pass_{size}": timing[size]["ratio_record_vs_bare"] <= MAX_SLOWDOWN for size in timing}},
        "wall_s": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, args.layers if args.layers != "all" else f"0-{subject.layers[-1]}", args.out)


def print_table(r: dict[str, Any], layer_label: str, out: Path = RESULTS) -> None:
    m, machine, model = r["memory"], r["machine"], r["model"]
    verdict = {True: "PASS", False: "FAIL"}
    print(f"\n{model['name']} ({model['dtype']}, {model['n_layers']} layers x {model['n_neurons']} neurons), "
          f"batch {r['batch_size']} x {EXCERPT_TOKENS} tokens; {machine['nproc']} CPUs, torch {machine['torch']}, "
          f"{machine['torch_threads']} threads; {r['date']}")
    print("\nSpeed, tokens/s on the same in-memory batches (after a 1-batch warm-up); ratio = time / bare time:")
    print(f"  {'tokens':>8}{'bare forward':>14}{f'record {layer_label}':>16}{'ratio':>7}{'record 0 only':>15}{'ratio':>7}"
          f"{'others CPU':>12}")
    for size in ("small", "large"):
        t = r["timing"][size]
        print(f"  {t['tokens']:>8,}{t['bare_tokens_per_s']:>14.0f}{t['record_tokens_per_s']:>16.0f}"
              f"{t['ratio_record_vs_bare']:>6.2f}x{t['record_first_layer_tokens_per_s']:>15.0f}"
              f"{t['ratio_first_layer_vs_bare']:>6.2f}x{100 * t['other_processes_cpu_share']:>11.0f}%")
    if max(t["other_processes_cpu_share"] for t in r["timing"].values()) > 0.1:
        print("  warning: other processes used more than 10% of the CPUs while timing: the speed numbers are unreliable")
    if r["profile_s"]:
        print(f"\nWhere the time of recording layers {layer_label} over {r['timing']['small']['tokens']:,} tokens goes "
              "(one instrumented run):")
        total = r["profile_s"]["record_activations (total)"]
        for name, seconds in sorted(r["profile_s"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:<42}{seconds:>8.2f} s{100 * seconds / total:>6.0f}%")
    print(f"\nPeak RSS recording layers {layer_label}, fresh process each (MiB):")
    print(f"  {'tokens':>8}{'peak (ru_maxrss)':>18}{'VmHWM':>8}{'peak after load':>17}{'RSS after load':>16}{'record s':>10}")
    for size in ("small", "large"):
        row = m[size]
        print(f"  {row['tokens']:>8,}{row['peak_rss_mib']:>18.0f}{row['vm_hwm_mib']:>8.0f}{row['peak_after_load_mib']:>17.0f}"
              f"{row['rss_after_load_mib']:>16.0f}{row['record_seconds']:>10.1f}")
    print(f"  growth of the peak: {100 * m['growth']:+.1f}%")
    busy = max(m["small"]["other_processes_cpu_share"], m["large"]["other_processes_cpu_share"])
    if busy > 0.1:
        print(f"  warning: other processes used up to {100 * busy:.0f}% of the CPUs: 'record s' is unreliable")
    print()
    for size in ("small", "large"):
        t = r["timing"][size]
        print(f"{verdict[r['targets'][f'ratio_pass_{size}']]}  recording / bare forward on {t['tokens']:,} tokens = "
              f"{t['ratio_record_vs_bare']:.2f}x (target <= {MAX_SLOWDOWN}x)")
    print(f"{verdict[r['targets']['growth_pass']]}  peak RSS growth for {m['large']['tokens'] / m['small']['tokens']:.0f}x "
          f"the tokens = {100 * m['growth']:+.1f}% (target < {100 * MAX_GROWTH:.0f}%)")
    print(f"\nresults: {out}  (total {r['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
