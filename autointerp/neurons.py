"""Which neurons of a layer are explained (the config's `neurons:`): all, the first few, a seeded random
sample, or a list; and which layers `autointerp run` explains."""

from __future__ import annotations

import random

from autointerp.config import NeuronSelection


def layer_selected(selection: NeuronSelection, layer: int) -> bool:
    """Is the layer among `neurons.layers` (every layer when that list is empty)?"""
    return not selection.layers or layer in selection.layers


def select_neurons(selection: NeuronSelection, n_neurons: int, seed: int, layer: int) -> list[int]:
    """The neurons of a layer to explain; `random` is a pure function of (seed, layer)."""
    if not layer_selected(selection, layer):
        return []
    if selection.select == "all":
        return list(range(n_neurons))
    if selection.select == "first":
        return list(range(min(selection.count, n_neurons)))
    if selection.select == "list":
        return sorted({i for i in selection.ids if i < n_neurons})
    return sorted(random.Random(f"{seed}/{layer}").sample(range(n_neurons), min(selection.count, n_neurons)))
