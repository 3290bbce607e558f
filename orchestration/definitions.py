"""Everything Dagster loads: `dagster dev -w workspace.yaml` or `dg dev` point here."""

import dagster as dg

from assets.checks import explain_checks, record_checks
from assets.explain import (explanation_embeddings, explanations, intruder_scores, judge_scores, scores,
                            simulations)
from assets.judge import trained_judge
from assets.record import excerpts, record, unit_logits
from assets.sae import sae_dictionary
from assets.subject import subject_model
from assets.view import neuron_viewer
from autointerp.config import WatchSpec
from autointerp.errors import AutointerpError
from autointerp.llm import LoadedLLMs
from orchestration.jobs import JOBS
from orchestration.schedules import build_schedule
from orchestration.sensors import build_sensor
from resources import AutointerpSettings, DuckDBStore, LLMResource

ASSETS = [subject_model, excerpts, record, unit_logits, explanations, simulations, scores, judge_scores,
          explanation_embeddings, intruder_scores, neuron_viewer, sae_dictionary, trained_judge]
CHECKS = [*record_checks, *explain_checks]


def resources(config_path: str = "", explain_layers: list[int] | None = None, explainer: str | None = None,
              llms: LoadedLLMs | None = None) -> dict:
    """The resources every asset, check, sensor and schedule uses; `config_path` empty: $AUTOINTERP_CONFIG or the
    repository's autointerp.yaml. The CLI narrows one run with `explain_layers` and `explainer` (see
    AutointerpSettings), and holds the LLMs of all its runs in `llms` (else each run loads its own)."""
    return {"settings": AutointerpSettings(path=config_path, explain_layers=explain_layers, explainer=explainer or ""),
            "store": DuckDBStore(), "llm": LLMResource.held_by(llms) if llms is not None else LLMResource()}


def watch_settings(settings: AutointerpSettings) -> WatchSpec:
    """How often to look for new revisions, read when the code location loads (the defaults if the config is
    broken: the sensor then reports the config error on its first tick)."""
    try:
        return settings.load().watch
    except AutointerpError:
        return WatchSpec()


RESOURCES = resources()
WATCH = watch_settings(RESOURCES["settings"])
model_revisions = build_sensor(WATCH.sensor_interval_s)
model_revision_check = build_schedule(WATCH.cron)


def build_definitions(bound: dict) -> dg.Definitions:
    """Everything, with `bound` resources (the CLI binds its own `--config`)."""
    return dg.Definitions(assets=ASSETS, asset_checks=CHECKS, resources=bound, jobs=JOBS,
                          sensors=[model_revisions], schedules=[model_revision_check])


defs = build_definitions(RESOURCES)
