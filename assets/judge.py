"""The trained judge (autointerp/judge/, config `judge_training`): a small encoder taught by rule units over the
recorded excerpts to predict activations from (explanation, excerpt); the `trained` simulator uses it."""

import dagster as dg

from autointerp.judge.train import train_configured_judge
from resources import AutointerpSettings, DuckDBStore

JUDGE_GROUP = "judge"


@dg.asset(group_name=JUDGE_GROUP, kinds={"pytorch", "safetensors"}, deps=["excerpts"])
def trained_judge(context: dg.AssetExecutionContext, settings: AutointerpSettings,
                  store: DuckDBStore) -> dg.MaterializeResult:
    """Trained on some rule families, measured on families it never saw (held out) and on unseen excerpts."""
    result = train_configured_judge(settings.load(), store.store(), context.log.info)
    held = result.held_out
    return dg.MaterializeResult(metadata={
        "revision": dg.MetadataValue.text(result.revision),
        "train_loss": dg.MetadataValue.float(round(result.train_loss, 4)),
        "valid_correlation": dg.MetadataValue.float(round(result.valid["correlation"], 4)),
        "held_out_true_correlation": dg.MetadataValue.float(round(held["mean_true_correlation"], 4)),
        "held_out_above_near_misses": dg.MetadataValue.float(round(held["above_near_misses"], 4)),
        "held_out_above_token_list": dg.MetadataValue.float(round(held["above_token_list"], 4)),
        "held_out": dg.MetadataValue.json(held),
        "examples": dg.MetadataValue.int(result.examples),
        "paraphrases": dg.MetadataValue.int(result.paraphrases),
        "steps": dg.MetadataValue.int(result.steps),
        "minutes": dg.MetadataValue.float(round(result.seconds / 60, 2)),
        "path": dg.MetadataValue.path(str(result.directory)),
    })
