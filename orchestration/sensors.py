"""Models as data: every model in the config becomes partitions without code changes."""

import dagster as dg

from autointerp.config import load_config
from autointerp.errors import AutointerpError
from autointerp.subject import describe_model, resolve_source


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def configured_models(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Add partition keys for configured models that have none yet (and the layer keys they need)."""
    config = load_config()
    known_models = set(context.instance.get_dynamic_partitions("models"))
    known_layers = set(context.instance.get_dynamic_partitions("layers"))
    new_models, new_layers = [], []
    for spec in config.models:
        if spec.name in known_models:
            continue
        try:
            info = describe_model(resolve_source(spec.source, config.path.parent))
        except AutointerpError as exc:
            context.log.error(f"model '{spec.name}' not registered: {exc}")
            continue
        new_models.append(spec.name)
        new_layers += [str(i) for i in range(info.n_layers) if str(i) not in known_layers and str(i) not in new_layers]
    if not new_models:
        return dg.SkipReason("every configured model is registered")
    return dg.SensorResult(dynamic_partitions_requests=[
        dg.AddDynamicPartitionsRequest("models", new_models),
        dg.AddDynamicPartitionsRequest("layers", sorted(new_layers, key=int)),
    ])
