"""Partitions: per model, and per (model, layer). Both dimensions are dynamic, so models are data.

Layer keys are "0", "1", ... shared by all models; registering a model adds the keys it needs.
A model with fewer layers than the largest simply never materializes the higher keys.
"""

from collections import defaultdict

import dagster as dg

model_partitions = dg.DynamicPartitionsDefinition(name="models")
layer_partitions = dg.DynamicPartitionsDefinition(name="layers")
model_layer_partitions = dg.MultiPartitionsDefinition({"model": model_partitions, "layer": layer_partitions})

# A (model, layer) asset depends on its model's per-model partition.
by_model = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="model")


def register_model(instance: dg.DagsterInstance, model: str, n_layers: int) -> None:
    """Add the model's partition key and any layer keys it needs (in numeric order)."""
    if not instance.has_dynamic_partition("models", model):
        instance.add_dynamic_partitions("models", [model])
    existing = set(instance.get_dynamic_partitions("layers"))
    missing = [str(layer) for layer in range(n_layers) if str(layer) not in existing]
    if missing:
        instance.add_dynamic_partitions("layers", missing)


def model_layer_key(model: str, layer: int) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"model": model, "layer": str(layer)})


def layers_by_model(partition_keys: list[str]) -> dict[str, list[int]]:
    """Group a run's (model, layer) partition keys: each model is recorded in one pass."""
    grouped: dict[str, list[int]] = defaultdict(list)
    for key in partition_keys:
        dims = key.keys_by_dimension if isinstance(key, dg.MultiPartitionKey) else _split(key)
        grouped[dims["model"]].append(int(dims["layer"]))
    return {model: sorted(layers) for model, layers in grouped.items()}


def _split(key: str) -> dict[str, str]:
    layer, model = key.split("|", 1)  # dimensions are joined in alphabetical order: layer|model
    return {"layer": layer, "model": model}


def contiguous_ranges(layers: list[int]) -> list[tuple[int, int]]:
    """[0, 2, 3, 4] -> [(0, 0), (2, 4)]: each range is one single-run backfill, i.e. one pass."""
    ranges: list[tuple[int, int]] = []
    for layer in sorted(set(layers)):
        if ranges and layer == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], layer)
        else:
            ranges.append((layer, layer))
    return ranges


def range_tags(model: str, first: int, last: int) -> dict[str, str]:
    """Run tags that make one run materialize layers first..last of a model (a single-run backfill)."""
    return {"dagster/asset_partition_range_start": str(model_layer_key(model, first)),
            "dagster/asset_partition_range_end": str(model_layer_key(model, last))}
