"""Materialization metadata a person would rather look at than read: histograms and the best explanations."""

from typing import Any

import dagster as dg
import pandas as pd

from autointerp.viewer.plots import data_uri, histogram_png

# The paper's mean top-and-random score (GPT-2 XL, GPT-4 explainer and simulator; docs/method.md s.8).
PAPER_MEAN_SCORE = 0.151


def histogram_markdown(values: pd.Series, title: str, xlabel: str, reference: float | None = None,
                       bins: int | list[float] = 20) -> dg.MetadataValue:
    """A histogram as an inline PNG in Markdown: the Dagster UI shows it on the materialization."""
    png = histogram_png(values.tolist(), title, xlabel, reference, f"paper mean {reference}", bins)
    return dg.MetadataValue.md(f"![{title}]({data_uri(png)})")


def score_metadata(scores: pd.DataFrame) -> dict[str, Any]:
    """Histogram, mean, count and the five best explanations of a frame of `scores` rows."""
    scored = scores.dropna(subset=["score_top_and_random"])
    best = scored.sort_values("score_top_and_random", ascending=False).head(5)
    table = best[["layer", "neuron", "score_top_and_random", "explanation"]].rename(
        columns={"score_top_and_random": "score"}).round({"score": 3})
    table["explanation"] = table["explanation"].str.replace("|", "\\|", regex=False)  # Markdown cell separator
    return {
        "neurons_scored": dg.MetadataValue.int(int(scores[["model", "layer", "neuron"]].drop_duplicates().shape[0])),
        "mean_score_top_and_random": dg.MetadataValue.float(float(scored.score_top_and_random.mean()))
        if len(scored) else dg.MetadataValue.text("no defined score"),
        "mean_score_random_only": dg.MetadataValue.float(float(scores.score_random_only.dropna().mean()))
        if scores.score_random_only.notna().any() else dg.MetadataValue.text("no defined score"),
        "undefined_scores": dg.MetadataValue.int(int(scores.score_top_and_random.isna().sum())),
        "score_histogram": histogram_markdown(scores.score_top_and_random, "top-and-random scores", "correlation",
                                              reference=PAPER_MEAN_SCORE, bins=[i / 10 for i in range(-10, 11)]),
        "best_explanations": dg.MetadataValue.md(table.to_markdown(index=False) if len(table) else "none scored"),
    }


def stats_metadata(stats: pd.DataFrame) -> dict[str, Any]:
    """How strongly and how often the recorded neurons fire."""
    return {
        "max_activation_histogram": histogram_markdown(stats["max"], "max activation per neuron", "max activation"),
        "median_max_activation": dg.MetadataValue.float(float(stats["max"].median())),
        "mean_frac_positive": dg.MetadataValue.float(float(stats["frac_positive"].mean())),
        # never active on the corpus: not explained (an SAE's dead latents, mostly)
        "dead_units": dg.MetadataValue.int(int((stats["max"] <= 0).sum())),
        "dead_units_by_layer": dg.MetadataValue.json(
            {str(layer): int(n) for layer, n in (stats["max"] <= 0).groupby(stats["layer"]).sum().items()}),
    }
