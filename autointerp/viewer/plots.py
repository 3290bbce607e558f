"""Histograms as PNG bytes (matplotlib, no display): for the viewer's layer pages and the Dagster UI."""

from __future__ import annotations

import base64
import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: render to PNG bytes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def histogram_png(values: Sequence[float], title: str, xlabel: str, reference: float | None = None,
                  reference_label: str = "", bins: int | Sequence[float] = 20) -> bytes:
    data = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    figure, axes = plt.subplots(figsize=(5, 2.6), dpi=90)
    axes.hist(data, bins=bins, color="#4f6bed", edgecolor="white")
    if reference is not None:
        axes.axvline(reference, color="#d9534f", linestyle="--", linewidth=1, label=reference_label or str(reference))
        axes.legend(fontsize=8, frameon=False)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(xlabel, fontsize=9)
    axes.set_ylabel("count", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()
