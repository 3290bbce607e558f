"""Which neurons of a layer are explained (the config's `neurons:`): all, the first few, a seeded random
sample, or a list; and which layers `autointerp run` explains."""

from __future__ import annotations

import random
from typing import Collection, Iterable

from autointerp.config import NeuronSelection


def layer_selected(selection: NeuronSelection, layer: int) -> bool:
    """Is the layer among `neurons.layers` (every layer when that list is empty)?"""
    return not selection.layers or layer in selection.layers


def selected_layers(selection: NeuronSelection, layers: Iterable[int]) -> list[int]:
    """Those of `layers` whose neurons are explained: the one filter `autointerp run`'s plan, the LLM stages'
    assets and their checks apply (the CLI's `--layers` reach it as `neurons.layers`, see AutointerpSettings)."""
    return [layer for layer in layers if layer_selected(selection, layer)]


def select_neurons(selection: NeuronSelection, n_neurons: int, seed: int, layer: int,
                   dead: Collection[int] = ()) -> list[int]:
    """The neurons of a layer to explain; `random` is a pure function of (seed, layer, dead).

    `dead` units (never active on the corpus: nothing to explain, every excerpt all zeros) are never chosen:
    `first` and `random` take the live ones instead.
    """
    if not layer_selected(selection, layer):
        return []
    dead = set(dead)
    live = [i for i in range(n_neurons) if i not in dead] if dead else range(n_neurons)
    if selection.select == "all":
        return list(live)
    if selection.select == "first":
        return list(live[:selection.count])
    if selection.select == "list":
        return sorted({i for i in selection.ids if i < n_neurons} - dead)
    return sorted(random.Random(f"{seed}/{layer}").sample(live, min(selection.count, len(live))))
