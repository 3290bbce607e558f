"""The subject models themselves, as observable source assets: one partition per model.

An observation reports the model's revision (Hub commit sha, or a content hash of local files) as its
DataVersion. When it changes, the Dagster UI marks the model's excerpts, and everything downstream, stale.
"""

import dagster as dg

from autointerp.errors import AutointerpError
from autointerp.subject import Subject
from orchestration.partitions import model_partitions
from resources import AutointerpSettings

SUBJECT_GROUP = "record"


@dg.observable_source_asset(partitions_def=model_partitions, group_name=SUBJECT_GROUP,
                            description="The weights of each subject model; DataVersion = its revision.")
def subject_model(context, settings: AutointerpSettings) -> dg.DataVersionsByPartition:
    config = settings.load()
    registered = set(context.instance.get_dynamic_partitions("models"))
    versions, failures = {}, []
    for spec in config.models:
        if spec.name not in registered:
            continue  # the sensor registers it first
        try:
            versions[spec.name] = dg.DataVersion(Subject.of(spec, config.base_dir).revision)
        except AutointerpError as exc:
            failures.append(f"{spec.name}: {exc}")
            context.log.error(f"cannot read the revision of model '{spec.name}': {exc}")
    if failures and not versions:
        raise AutointerpError("; ".join(failures))
    return dg.DataVersionsByPartition(versions)
