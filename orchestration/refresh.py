"""Models as data, and models that change: what the sensor and the schedule do on each look.

Every model in the config (or added with `autointerp models add`) becomes partitions without code changes.
When a model's revision changes (a new Hub commit, a new local checkpoint), its new revision is observed
(the UI marks what depends on it stale), its excerpts are rebuilt, and the layers recorded for an earlier
revision are recorded again - in one run, so one forward pass. Explain, simulate and score follow through
their automation conditions once the record stage's blocking checks passed. Old revisions' rows stay.
"""

from dataclasses import dataclass, field

import dagster as dg

from autointerp.config import Config
from autointerp.errors import AutointerpError
from autointerp.store import Store, queries
from autointerp.subject import Subject
from orchestration.partitions import contiguous_ranges, range_tags

DATA_VERSION_TAG = "dagster/data_version"  # what an observation of a source asset reports its version under


@dataclass
class RefreshPlan:
    """What one look at the models found to do."""

    new_models: list[str] = field(default_factory=list)
    new_layers: list[str] = field(default_factory=list)
    observations: list[dg.AssetObservation] = field(default_factory=list)
    run_requests: list[dg.RunRequest] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def plan_refresh(config: Config, store: Store, instance: dg.DagsterInstance) -> RefreshPlan:
    plan = RefreshPlan()
    known_models = set(instance.get_dynamic_partitions("models"))
    known_layers = set(instance.get_dynamic_partitions("layers"))
    for spec in config.models:
        try:
            subject = Subject.of(spec, config.base_dir)
            info, revision = subject.info, subject.revision
        except AutointerpError as exc:  # one broken model must not stop the others
            plan.problems.append(f"model '{spec.name}': {exc}")
            continue
        if spec.name not in known_models:
            plan.new_models.append(spec.name)
        plan.new_layers += [str(i) for i in range(info.n_layers)
                            if str(i) not in known_layers and str(i) not in plan.new_layers]
        if _last_observed(instance, spec.name) != revision:
            plan.observations.append(dg.AssetObservation(asset_key="subject_model", partition=spec.name,
                                                         tags={DATA_VERSION_TAG: revision}))
        current = queries.latest_revision(store, spec.name)
        if current != revision:
            # Excerpts first: they register the revision that the record stage then works on.
            plan.run_requests.append(dg.RunRequest(job_name="excerpts_job", partition_key=spec.name,
                                                   run_key=f"excerpts:{spec.name}:{current}->{revision}"))
            continue
        for first, last in contiguous_ranges(_layers_to_record(store, spec.name, revision, info.unit_layers)):
            plan.run_requests.append(dg.RunRequest(job_name="record_job",
                                                   run_key=f"record:{spec.name}:{revision}:{first}-{last}",
                                                   tags=range_tags(spec.name, first, last)))
    return plan


def _last_observed(instance: dg.DagsterInstance, model: str) -> str | None:
    record = instance.get_latest_data_version_record(dg.AssetKey("subject_model"), is_source=True, partition_key=model)
    observation = record.asset_observation if record is not None else None
    return observation.tags.get(DATA_VERSION_TAG) if observation is not None else None


def _layers_to_record(store: Store, model: str, revision: str, unit_layers: list[int]) -> list[int]:
    """The layers recorded for any revision of the model (all its units' layers for a new model), not yet for this
    one."""
    frame = queries.recorded_layers(store, model)
    wanted = set(frame.layer) if len(frame) else set(unit_layers)
    done = set(frame[frame.revision == revision].layer)
    return sorted(int(layer) for layer in wanted - done if layer in unit_layers)
