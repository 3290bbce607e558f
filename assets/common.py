"""What every asset does first: the config, the store and the stages, logging to the run."""

import dagster as dg

from autointerp.llm import LoadedLLMs
from autointerp.stages import Stages
from resources import AutointerpSettings, DuckDBStore, LLMResource


def stages(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, settings: AutointerpSettings,
           store: DuckDBStore, llm: LLMResource | None = None) -> Stages:
    """`llm`: the run's LLMs, for the steps whose roles ask one (the record steps never do)."""
    return Stages(settings.load(), store.store(), context.log.info, explainer_name=settings.explainer or None,
                  llms=llm.llms if llm is not None else LoadedLLMs())
