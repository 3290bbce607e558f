"""One exception family, so the CLI and Dagster can show a single clear message for bad input."""


class AutointerpError(Exception):
    """Base class: the message alone must tell the user what is wrong and where."""


class ConfigError(AutointerpError):
    """The YAML configuration is missing, malformed or names something that does not exist."""


class CorpusError(AutointerpError):
    """The text corpus is missing, unreadable or empty."""


class ModelLoadError(AutointerpError):
    """A subject model could not be found, loaded or hashed."""


class UnsupportedArchitectureError(ModelLoadError):
    """The model loads, but we do not know which of its tensors are the MLP neurons."""


class StoreError(AutointerpError):
    """The DuckDB store is locked, corrupt, or lacks rows a stage needs."""


class ValidationError(AutointerpError):
    """Data failed a quality check before it was written."""


class ImportFormatError(AutointerpError):
    """A file to import is not valid JSON or does not have the structure of the format it claims."""
