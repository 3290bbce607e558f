"""What every asset does first: the config, the store and the stages, logging to the run."""

import dagster as dg

from autointerp.stages import Stages
from resources import AutointerpSettings, DuckDBStore


def stages(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, settings: AutointerpSettings,
           store: DuckDBStore) -> Stages:
    return Stages(settings.load(), store.store(), context.log.info, explainer_name=settings.explainer or None)
