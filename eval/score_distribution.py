"""How are explanation scores distributed, and how does that compare with the paper (docs/method.md s.8)?

Reads the `scores` table of a DuckDB store (default: $AUTOINTERP_HOME/autointerp.duckdb, as `autointerp run`
leaves it; opened read-only) and, where they exist, the eval results of real (unedited) neurons:
eval/results/own_vs_shuffled.json (own-explanation scores, top-and-random only) and eval/results/planted.json
(its baseline neurons). Per source and layer: n, mean, median, fraction above 0.7 and 0.9 of the top-and-random
score, mean and median of the random-only score; the paper's numbers next to them; a histogram; and a short
interpretation with a bootstrap interval for the mean.

    .venv/bin/python eval/score_distribution.py [--db PATH] [--json FILE ...] [--explainer TEXT]

It reads the store alone, as `autointerp view` and `export` do: `--config` is accepted like everywhere else
and not needed. Writes eval/results/score_distribution.png and .json, prints Markdown.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from autointerp.errors import StoreError  # noqa: E402
from autointerp.store import default_home  # noqa: E402
from eval.common import RESULTS  # noqa: E402
from eval.common import parser as make_parser  # noqa: E402

# Bills et al. 2023 (GPT-2 XL, GPT-4 explainer and simulator), docs/method.md s.8.
PAPER = {"mean_top_and_random": 0.151, "mean_random_only": 0.037, "above_0.7": 0.017, "above_0.9": 0.0006}
EXPLAINER_SCALE = {"GPT-2": 0.03, "GPT-3": 0.065, "GPT-3.5": 0.10, "GPT-4": 0.144, "human contractors": 0.178}
COLUMNS = ["source", "explainer", "layer", "neuron", "top_and_random", "random_only", "real"]
CEILING = "planted.json: planted neurons, true rule"  # not real neurons: the simulator's ceiling


def short(llm: str) -> str:
    """'local:embedded:qwen...@sha256:...' -> 'embedded:qwen...'. The store names an explainer or simulator by
    its method, then its LLM ('listing:local:...', 'all_at_once:local:...'): the method is dropped too."""
    llm = re.sub(r"^[\w+-]+:(?=(?:local|openai):)", "", llm)
    return re.sub(r"@sha256:[0-9a-f]+$", "", llm.removeprefix("local:"))


def from_store(path: Path) -> pd.DataFrame:
    """Scores of every model's latest revision."""
    import duckdb

    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise StoreError(f"cannot open the DuckDB store {path} read-only: {exc}") from exc
    try:
        frame = con.execute("""
            SELECT s.model, s.layer, s.neuron, s.explainer, s.simulator, s.score_top_and_random AS top_and_random,
                   s.score_random_only AS random_only
            FROM scores s JOIN (SELECT model, arg_max(revision, registered_at) AS revision FROM models GROUP BY model)
                 USING (model, revision)""").df()
    except duckdb.Error as exc:
        raise StoreError(f"{path}: no readable scores table ({exc}); run `autointerp run --until score` first") from exc
    finally:
        con.close()
    frame["source"] = "store: " + frame.model
    frame["explainer"] = [short(e) if short(e) == short(s) else f"{short(e)} / {short(s)}"
                          for e, s in zip(frame.explainer, frame.simulator)]
    frame["real"] = True
    return frame[COLUMNS]


def from_results(path: Path) -> pd.DataFrame:
    """Scores in an eval results file: own_vs_shuffled.json (real neurons, own explanations) or planted.json
    (real = its unedited baseline neurons; the planted ones are kept apart, as own explanation and true rule)."""
    data = json.loads(path.read_text())
    rows = []
    if "results" in data:  # own_vs_shuffled: neurons were recorded layer by layer, equally many per layer
        layers = data["layers"]
        for result in data["results"]:
            scores = result["own_scores"]
            per_layer = len(scores) // len(layers) if len(scores) % len(layers) == 0 else None
            for i, score in enumerate(scores):
                rows.append({"source": f"{path.name}: own explanation", "explainer": short(result["model"]),
                             "layer": layers[i // per_layer] if per_layer else None, "neuron": None,
                             "top_and_random": score, "random_only": None, "real": True})
    else:
        for n in data["neurons"]:
            common = {"explainer": short(data["explainer"]), "layer": data["layer"], "neuron": n["neuron"]}
            if n["kind"] == "baseline":
                rows.append({**common, "source": f"{path.name}: unedited neurons", "real": True, **n["own"]})
            else:
                rows.append({**common, "source": f"{path.name}: planted neurons, own explanation", "real": False,
                             **n["own"]})
                rows.append({**common, "source": CEILING, "real": False, **n["true"]})
    return pd.DataFrame(rows, columns=COLUMNS).astype({"top_and_random": float, "random_only": float})


def summarize(values: pd.Series) -> dict[str, float | int | None]:
    v = values.dropna().to_numpy(dtype=float)
    if v.size == 0:
        return {"n": 0, "mean": None, "median": None, "above_0.7": None, "above_0.9": None}
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "above_0.7": float((v > 0.7).mean()), "above_0.9": float((v > 0.9).mean())}


def bootstrap_mean(values: np.ndarray, seed: int = 0, draws: int = 10_000) -> tuple[float, float]:
    """A 95% percentile-bootstrap interval for the mean."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(draws, values.size), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def table(frame: pd.DataFrame) -> tuple[str, list[dict]]:
    rows = []
    for (source, explainer), group in frame.groupby(["source", "explainer"], sort=False):
        layers = sorted({int(x) for x in group.layer.dropna()})
        parts = [(str(layer), group[group.layer == layer]) for layer in layers] if len(layers) > 1 else []
        for label, part in [*parts, ("all" if len(layers) != 1 else str(layers[0]), group)]:
            rows.append({"source": source, "explainer": explainer, "layer": label,
                         "top_and_random": summarize(part.top_and_random), "random_only": summarize(part.random_only)})

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%" if x == 0 or x >= 0.01 else f"{100 * x:.2f}%"

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    lines = ["| source | explainer = simulator | layer | n | top-and-random mean | median | > 0.7 | > 0.9 "
             "| random-only mean | median |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        t, o = r["top_and_random"], r["random_only"]
        lines.append(f"| {r['source']} | {r['explainer']} | {r['layer']} | {t['n']} | {num(t['mean'])} "
                     f"| {num(t['median'])} | {pct(t['above_0.7'])} | {pct(t['above_0.9'])} | {num(o['mean'])} "
                     f"| {num(o['median'])} |")
    lines.append(f"| paper: GPT-2 XL, all neurons | GPT-4 | all | 307,200 | {PAPER['mean_top_and_random']:.3f} | "
                 f"| {pct(PAPER['above_0.7'])} | {pct(PAPER['above_0.9'])} | {PAPER['mean_random_only']:.3f} | |")
    return "\n".join(lines), rows


def interpretation(frame: pd.DataFrame) -> str:
    lines = []
    for (source, explainer), group in frame[frame.real].groupby(["source", "explainer"], sort=False):
        v = group.top_and_random.dropna().to_numpy(dtype=float)
        if v.size < 5:
            lines.append(f"- **{source}, {explainer}**: {v.size} neurons, too few for an interval.")
            continue
        lo, hi = bootstrap_mean(v)
        mean = float(v.mean())
        nearest = min(EXPLAINER_SCALE, key=lambda k: abs(EXPLAINER_SCALE[k] - mean))
        where = ("below" if hi < PAPER["mean_top_and_random"] else "above" if lo > PAPER["mean_top_and_random"]
                 else "compatible with")
        expected = v.size * PAPER["above_0.7"]
        random_only = group.random_only.dropna()
        ro = (f" Random-only mean {random_only.mean():.3f} over {len(random_only)} (paper {PAPER['mean_random_only']})."
              if len(random_only) else "")
        lines.append(
            f"- **{source}, {explainer}** ({v.size} neurons): mean top-and-random {mean:.3f} (95% bootstrap interval "
            f"{lo:.3f} to {hi:.3f}), {where} the paper's 0.151; on the paper's explainer scale it is nearest "
            f"{nearest} (~{EXPLAINER_SCALE[nearest]}). "
            f"{int((v > 0.7).sum())} above 0.7, where the paper's rate (1.7%) predicts {expected:.2f}: "
            f"this many neurons cannot resolve the tail.{ro}")
    ceiling = frame[frame.source == CEILING]
    if len(ceiling):
        lines.append(f"- Ceiling: on {len(ceiling)} planted neurons, which fire on their concept and hardly anywhere "
                     f"else (held-out precision and recall in planted.json), the hand-written true rule scores a "
                     f"mean of {ceiling.top_and_random.mean():.3f} top-and-random with "
                     f"{', '.join(sorted(set(ceiling.explainer)))} as the simulator. That is roughly the best this "
                     "simulator allows, so the real-neuron means above say as much about the simulator as about the "
                     "explanations.")
    lines.append(f"- The paper's explainer scale (top-and-random mean, GPT-4 simulator): "
                 f"{', '.join(f'{k} ~{x}' for k, x in EXPLAINER_SCALE.items())}.")
    lines.append("- The comparison is loose by construction: the paper scores all 307,200 neurons of GPT-2 XL with "
                 "GPT-4 as explainer and simulator, and picks top excerpts out of ~50,000; here a 1.5B (or smaller) "
                 "local model explains a 135M subject, a few neurons per layer, with top excerpts from ~1,600 "
                 "(the default 100k-token corpus).")
    return "\n".join(lines)


def histogram(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5), sharey=False)
    bins = np.linspace(-0.5, 1.0, 31)
    groups = list(frame.groupby(["source", "explainer"], sort=False))
    colors = dict(zip((key for key, _ in groups), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 5))
    for ax, column, paper, title in ((axes[0], "top_and_random", PAPER["mean_top_and_random"], "top-and-random"),
                                     (axes[1], "random_only", PAPER["mean_random_only"], "random-only")):
        for (source, explainer), group in groups:
            values = group[column].dropna().to_numpy(dtype=float)
            if values.size:
                ax.hist(values, bins=bins, histtype="step", linewidth=1.5, color=colors[(source, explainer)],
                        label=f"{source}, {explainer} (n={values.size}, mean {values.mean():.3f})")
        ax.axvline(paper, color="black", linestyle="--", label=f"paper mean {paper} (GPT-4 on GPT-2 XL)")
        ax.set_xlim(bins[0], bins[-1])
        ax.set_title(f"score {title}")
        ax.set_xlabel("correlation (simulated vs real activations)")
        ax.set_ylabel("neurons")
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--db", type=Path, help="a DuckDB store; default $AUTOINTERP_HOME/autointerp.duckdb")
    parser.add_argument("--json", type=Path, action="append",
                        help="eval results file(s); default eval/results/own_vs_shuffled.json and planted.json")
    parser.add_argument("--explainer", help="keep only explainers whose name contains this")
    parser.add_argument("--out", type=Path, default=RESULTS / "score_distribution.json")
    args = parser.parse_args()
    frames, notes = [], []
    db = args.db or default_home() / "autointerp.duckdb"
    if db.is_file():
        frames.append(from_store(db))
    elif args.db:
        parser.error(f"--db {db}: no such file")
    else:
        notes.append(f"No store at {db} (run `autointerp run --until score` first, or pass --db).")
    for path in args.json or [RESULTS / "own_vs_shuffled.json", RESULTS / "planted.json"]:
        if path.is_file():
            frames.append(from_results(path))
        elif args.json:
            parser.error(f"--json {path}: no such file")
    frame = pd.concat([f for f in frames if len(f)], ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    if args.explainer:
        frame = frame[frame.explainer.str.contains(args.explainer, regex=False)]
    if frame.empty:
        parser.error("no scores found: " + " ".join(notes or ["the sources hold no scores"]))
    markdown, rows = table(frame)
    png = args.out.with_suffix(".png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    histogram(frame, png)
    args.out.write_text(json.dumps({"rows": rows, "paper": PAPER, "explainer_scale": EXPLAINER_SCALE,
                                    "sources": sorted(set(frame.source))}, indent=2))
    print("\n".join([*notes, "", markdown, "", interpretation(frame), "", f"Histogram: {png}"]))


if __name__ == "__main__":
    main()
