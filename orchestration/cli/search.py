"""`autointerp search "TEXT"`: the units whose explanation is closest in meaning to TEXT (autointerp/search.py)."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from autointerp.config import Config
from autointerp.errors import AutointerpError
from autointerp.search import encoder_of, search
from autointerp.store import Store
from autointerp.viewer.pages import page_name
from orchestration.cli.run import parse_layers


def neuron_url(config: Config, model: str, layer: int, neuron: int) -> str:
    """The neuron's page: under `viewer.url` where the config has one, else its path in the served viewer."""
    path = f"{model}/{page_name(layer, neuron)}"
    return f"{config.viewer.url.rstrip('/')}/{path}" if config.viewer.url else path


def search_command(config: Config, text: str, models: Sequence[str] | None, layer_spec: str | None, k: int) -> None:
    if not text.strip():
        raise AutointerpError("search: give the words to search for, e.g. autointerp search \"months of the year\"")
    if k < 1:
        raise AutointerpError(f"--k must be at least 1, got {k}")
    store = Store.from_home()
    if not store.exists():
        raise AutointerpError(f"no store at {store}: run `autointerp run` first")
    layers = None if not layer_spec or layer_spec.strip() == "all" else parse_layers(layer_spec, 1 << 30)
    spec = config.search
    found = search(store.reader(), encoder_of(spec, config.base_dir), spec.encoder, text, models, layers, k,
                   config.scoring.rank_by)
    if found.empty:
        print(f"nothing embedded by {spec.encoder} yet: `autointerp run` embeds the explanations it scores "
              "(the explanation_embeddings asset)")
        return
    found["url"] = [neuron_url(config, m, int(layer), int(n))
                    for m, layer, n in zip(found.model, found.layer, found.neuron)]
    for column in ("similarity", "score"):  # not scored yet: '-'
        found[column] = ["-" if pd.isna(v) else f"{float(v):.3f}" for v in found[column]]
    print(f"closest to \"{text}\" by {spec.encoder} (score: the viewer's, the mean of "
          f"{' + '.join(config.scoring.rank_by)}):")
    with pd.option_context("display.max_colwidth", 100, "display.width", 1000, "display.max_columns", None):
        print(found[["model", "layer", "neuron", "similarity", "score", "explanation", "url"]].to_string(index=False))
