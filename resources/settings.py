import dagster as dg

from autointerp.config import Config, load_config


class AutointerpSettings(dg.ConfigurableResource):
    """The YAML configuration. Empty `path`: `$AUTOINTERP_CONFIG`, else the repository's autointerp.yaml."""

    path: str = ""

    def load(self) -> Config:
        # Read on every use so an edited file takes effect without reloading the code location.
        return load_config(self.path or None)
