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


# Where each stage's steps run on a distributed executor (orchestration/executors.py): a Celery queue per stage,
# so the workers that hold the subject model and those that hold the LLM can be different machines. The Ray
# executor (dagster-ray, README "Scaling out") reads the resources a step asks for from `dagster-ray/config`.
def stage_op_tags(stage: str, num_gpus: float = 0) -> dict[str, str]:
    return {"dagster-celery/queue": stage, "dagster-ray/config": f'{{"num_cpus": 1, "num_gpus": {num_gpus}}}'}
