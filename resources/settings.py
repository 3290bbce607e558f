from dataclasses import replace

import dagster as dg

from autointerp.config import Config, load_config


class AutointerpSettings(dg.ConfigurableResource):
    """The YAML configuration. Empty `path`: `$AUTOINTERP_CONFIG`, else the repository's autointerp.yaml.

    The CLI sets `path` to its `--config`, so assets, checks, sensors and schedules all read the same file, and
    for one run it may narrow what the LLM stages do: `explain_layers` (the layers asked for with `--layers`,
    in place of `neurons.layers`) and `explainer` (simulate and score the stored explanations of that name, e.g.
    imported ones, instead of the configured explainer's).
    """

    path: str = ""
    explain_layers: list[int] | None = None
    explainer: str = ""

    def load(self) -> Config:
        # Read on every use so an edited file takes effect without reloading the code location.
        config = load_config(self.path or None)
        if self.explain_layers is not None:
            config = replace(config, neurons=replace(config.neurons, layers=tuple(self.explain_layers)))
        return config
