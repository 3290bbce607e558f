"""Peak memory of cutting a corpus into excerpts: the builtin corpus vs one huge document (a benchmark).

Each corpus is tokenized with the default subject's tokenizer into `--tokens` tokens of excerpts, in a fresh
process (its peak RSS is its own): the builtin corpus, then a generated single `.txt` document of `--mib` MiB.
Documents are read 1 MiB and tokenized ~128k characters at a time, so the huge one should cost about the same.

    .venv/bin/python bench/corpus_memory.py [--mib 200] [--tokens 100000]

Results: bench/results/corpus_memory.json and a table on stdout.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.common import config_of, parser  # noqa: E402

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from autointerp.config import load_config
from autointerp.corpus import iter_documents, resolve_corpus_paths
from autointerp.corpus.excerpts import excerpts_table
from autointerp.subject import Subject
config = load_config({config!r})
tokenizer = Subject.of(config.models[0], config.base_dir).tokenizer()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
table = excerpts_table(tokenizer, iter_documents(resolve_corpus_paths({paths!r}, config.base_dir)), {tokens},
                       "m", "r", log=lambda _: None)
print(json.dumps({{"excerpts": table.num_rows, "seconds": round(time.monotonic() - started, 1),
                  "rss_before_mib": round(before / 1024), "peak_rss_mib": round(
                      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}}))
"""


def measure(config_path: str, paths: list[str], tokens: int) -> dict:
    code = CHILD.format(root=str(ROOT), config=config_path, paths=paths, tokens=tokens)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args_parser = parser(__doc__)
    args_parser.add_argument("--mib", type=int, default=200)
    args_parser.add_argument("--tokens", type=int, default=100_000)
    args_parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "corpus_memory.json")
    args = args_parser.parse_args()
    config = config_of(args)
    with tempfile.TemporaryDirectory() as tmp:
        huge = Path(tmp) / "one-document.txt"
        words = "the of and to in a is that for on with as by at from it was his an be this are which".split()
        rng = random.Random(0)
        with huge.open("w", encoding="utf-8") as handle:
            for _ in range(args.mib):
                handle.write(" ".join(rng.choice(words) for _ in range(190_000))[: 1 << 20])
        results = {"builtin": measure(str(config.path), list(config.corpus.paths), args.tokens),
                   f"one {args.mib} MiB document": measure(str(config.path), [str(huge)], args.tokens)}
    base, big = results["builtin"]["peak_rss_mib"], list(results.values())[1]["peak_rss_mib"]
    results["ratio"] = round(big / base, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("| corpus | excerpts | time | peak RSS |\n| --- | --- | --- | --- |")
    for name, r in list(results.items())[:2]:
        print(f"| {name} | {r['excerpts']:,} | {r['seconds']} s | {r['peak_rss_mib']:,} MiB |")
    print(f"\nthe one-document corpus peaks at {results['ratio']:.2f}x the builtin corpus's memory (target <= 1.10x)")


if __name__ == "__main__":
    main()
