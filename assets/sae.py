"""The demo dictionary: a TopK SAE trained on the subject (autointerp/units/train.py, config `sae_training`)."""

import dagster as dg

from autointerp.units.train import train_dictionaries
from resources import AutointerpSettings

SAE_GROUP = "sae"


@dg.asset(group_name=SAE_GROUP, kinds={"pytorch", "safetensors"})
def sae_dictionary(context: dg.AssetExecutionContext, settings: AutointerpSettings) -> dg.MaterializeResult:
    """TopK SAEs on a configured model's activations, in the SAELens layout: a model with
    `units: {kind: sae, path: <sae_training.out>}` then records and explains their latents like neurons."""
    results = train_dictionaries(settings.load(), context.log.info)
    per_layer = {str(r.layer): {"fraction_variance_explained": round(r.fraction_variance_explained, 4),
                                "l0": round(r.l0, 2), "dead_latents": r.dead_latents, "tokens": r.tokens,
                                "seconds": round(r.seconds, 1), "path": str(r.directory)} for r in results}
    return dg.MaterializeResult(metadata={
        "fraction_variance_explained": dg.MetadataValue.float(min(r.fraction_variance_explained for r in results)),
        "l0": dg.MetadataValue.float(max(r.l0 for r in results)),
        "dead_latents": dg.MetadataValue.int(sum(r.dead_latents for r in results)),
        "layers": dg.MetadataValue.json(per_layer),
        "path": dg.MetadataValue.path(str(results[0].directory.parent)),
    })
