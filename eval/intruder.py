"""How interpretable units are without an explanation: the intruder score of SAE latents against MLP neurons of
the same layer (a script, not a test; docs/method.md s.12).

Records the config's first model twice over its corpus, with its MLP neurons and with the latents of an SAE (as
eval/sae.py does, whose recordings and store it shares), picks `--units` random units of each kind per layer and
runs the intruder trials of the pipeline's stage on each (autointerp/score/intruder.py, the judge `--judge` or
the config's `scoring.llm`). Beside the LLM judge, on the very same trials:

- the simplest thing that could work, with no LLM: the `embedding` judge (`scoring.intruder_judge: embedding`, the
  search encoder all-MiniLM-L6-v2) names the excerpt least similar to the others (mean cosine);
- a control that no judge should pass: "mixed" units, whose activating excerpts come from different units (the
  k-th strongest excerpt of the k-th next unit, each scaled by its own unit's max), so the excerpts shown share
  nothing but strength. A judge that beats chance there reads something other than a shared pattern.

Each mean is the share of trials named right, averaged over units (units without a trial left out and counted),
with a 95% bootstrap interval over units; chance is 1 / (shown + 1). The SAE-minus-MLP difference carries its own
interval (units resampled on each side).

    .venv/bin/python eval/intruder.py [--config autointerp-sae.yaml] [--layers 4] [--units 24] [--train]
        [--judge embedded:qwen2.5-coder-0.5b-instruct]

Writes eval/results/intruder.json, the histogram eval/results/intruder.png and prints a Markdown table (README,
Evaluation).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autointerp.config import Config  # noqa: E402
from autointerp.llm import LoadedLLMs  # noqa: E402
from autointerp.record.records import ActivationRecord, NeuronRecord  # noqa: E402
from autointerp.score.intruder import build_intruder  # noqa: E402
from autointerp.store import Store  # noqa: E402
from eval.common import RESULTS, config_of, local_llm, parser, record_neurons  # noqa: E402
from eval.quality import bootstrap  # noqa: E402
from eval.sae import add_arguments, comparison, difference_ci  # noqa: E402


def scaled(record: ActivationRecord, by: float) -> ActivationRecord:
    return ActivationRecord(record.tokens, tuple(a / by for a in record.activations), record.excerpt_id)


def mixed_units(units: Sequence[NeuronRecord]) -> list[NeuronRecord]:
    """Unit i's k-th activating excerpt is unit (i + k)'s k-th strongest, scaled to its own unit's max; its silent
    excerpts stay its own. Every unit's max becomes 1, so strengths line up across the units mixed."""
    units = [u for u in units if u.top and u.top[0].max_activation > 0]
    tops = [[scaled(r, u.top[0].max_activation) for r in u.top] for u in units]
    out = []
    for i, unit in enumerate(units):
        top = [tops[(i + k) % len(units)][k] for k in range(min(len(t) for t in tops))]
        top.sort(key=lambda r: -r.max_activation)
        own = unit.top[0].max_activation
        out.append(NeuronRecord(unit.model, unit.revision, unit.layer, unit.neuron, top,
                                [scaled(r, own) for r in unit.random], []))
    return out


def judged(units: Sequence[NeuronRecord], config: Config, store: Store, llms: LoadedLLMs) -> dict[str, Any]:
    """Both judges on the same trials (the trials depend only on the units and the config)."""
    started = time.monotonic()
    results = build_intruder(config, store, llms, "llm").score(units)
    llm_seconds = time.monotonic() - started
    baseline = build_intruder(config, store, llms, "embedding").score(units)
    return {"units": [[u.layer, u.neuron] for u in units], "llm": [r.accuracy for r in results if r.accuracy is not None],
            "p_intruder": [r.p_intruder for r in results if r.p_intruder is not None],
            "embedding": [r.accuracy for r in baseline if r.accuracy is not None],
            "without_trials": sum(r.accuracy is None for r in results), "llm_seconds": round(llm_seconds, 1)}


def markdown(result: dict[str, Any]) -> str:
    chance = result["chance"]
    lines = [f"| units | n | LLM judge ({result['judge_name']}) | embedding outlier (no LLM) | trials/unit |",
             "| --- | --- | --- | --- | --- |"]
    for name, r in result["kinds"].items():
        cells = []
        for key in ("llm", "embedding"):
            values = np.asarray(r[key], dtype=float)
            low, high = bootstrap(values) if len(values) else (float("nan"),) * 2
            cells.append(f"{values.mean():.2f} ({low:.2f} to {high:.2f})" if len(values) else "-")
        lines.append(f"| {name} | {len(r['llm'])} (+{r['without_trials']} without a trial) | {cells[0]} | {cells[1]} "
                     f"| {result['trials']} |")
    low, high = result["sae_minus_mlp_ci"]
    e_low, e_high = result["sae_minus_mlp_embedding_ci"]
    lines.append(f"\nChance: {chance:.2f}. SAE latents minus MLP neurons: LLM judge {result['sae_minus_mlp']:+.2f} "
                 f"(95% CI {low:+.2f} to {high:+.2f}); embedding judge {result['sae_minus_mlp_embedding']:+.2f} "
                 f"(95% CI {e_low:+.2f} to {e_high:+.2f}).")
    return "\n".join(lines)


def plot(result: dict[str, Any], out: Path) -> None:
    """Per judge, the distribution of the units' intruder accuracy by unit kind, with chance marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = result["trials"]
    bins = np.linspace(-0.5 / trials, 1 + 0.5 / trials, trials + 2)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, (key, title) in zip(axes, (("llm", f"LLM judge ({result['judge_name'].split(':')[-1]})"),
                                       ("embedding", "embedding judge (no LLM)"))):
        values = [r[key] for r in result["kinds"].values()]
        ax.hist(values, bins=bins, label=[f"{k} ({np.mean(v):.2f})" for k, v in zip(result["kinds"], values)])
        ax.axvline(result["chance"], color="black", linestyle="--", linewidth=1, label=f"chance {result['chance']:.2f}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"intruder accuracy per unit ({trials} trials)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("units")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    args_parser = parser(__doc__)
    add_arguments(args_parser, units=24)
    args_parser.add_argument("--judge", help="a local model for the judge, e.g. embedded:qwen2.5-coder-0.5b-instruct "
                                             "(default: the config's scoring.llm)")
    args_parser.add_argument("--out", type=Path, default=RESULTS / "intruder.json")
    args = args_parser.parse_args()
    config = config_of(args)
    if args.judge:
        config = replace(config, scoring=replace(config.scoring, llm=local_llm(args.judge, config.scoring.llm)))
    both = comparison(args, config)
    config, layers, sae_dir, store = both.config, both.layers, both.sae_dir, both.store
    llms = LoadedLLMs()
    kinds: dict[str, Any] = {}
    mlp_config = both.mlp
    for name, unit_config in (("MLP neurons", both.mlp), ("SAE latents", both.sae)):
        stages, _, units = record_neurons(unit_config, layers, store)
        kinds[name] = judged(units, unit_config, store, llms)
        print(name, json.dumps({k: float(np.mean(v)) for k, v in kinds[name].items()
                                if k in ("llm", "embedding") and v}), flush=True)
        if name == "MLP neurons":
            control = mixed_units(units)
    kinds["mixed (control)"] = judged(control, mlp_config, store, llms)
    judge = build_intruder(config, store, llms, "llm").name  # its name: nothing is loaded
    llms.close()
    mlp, sae = kinds["MLP neurons"]["llm"], kinds["SAE latents"]["llm"]
    mlp_e, sae_e = kinds["MLP neurons"]["embedding"], kinds["SAE latents"]["embedding"]
    result = {"subject": config.models[0].name, "layers": layers, "sae": str(sae_dir),
              "judge_name": judge.split("/")[-1].split("@")[0], "judge": judge,
              "trials": config.scoring.intruder_trials,
              "shown": config.scoring.intruder_shown, "chance": 1 / (config.scoring.intruder_shown + 1),
              "sae_minus_mlp": float(np.mean(sae) - np.mean(mlp)), "sae_minus_mlp_ci": difference_ci(sae, mlp),
              "sae_minus_mlp_embedding": float(np.mean(sae_e) - np.mean(mlp_e)),
              "sae_minus_mlp_embedding_ci": difference_ci(sae_e, mlp_e),
              "kinds": kinds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(result, args.out.with_suffix(".png"))
    print("\n" + markdown(result))


if __name__ == "__main__":
    main()
