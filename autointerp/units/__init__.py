"""What is recorded: a `UnitSource` turns a subject model's hidden tensors into unit activations per layer.

MLP neurons (`mlp.py`, the paper's units) are the default; a model's `units:` section in the config picks
another registered kind: `sae` (`sae.py`) reads the latents of sparse autoencoders and transcoders. A unit source says how many units a layer has, which module of the model to hook
(its input or its output), and how to turn the hooked tensor into activations (identity for neurons).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Literal

from autointerp.plugins import Registry


class UnitSource(ABC):
    @property
    @abstractmethod
    def label(self) -> str:
        """Stored in `models.units`: which units these are (kind and, for files, a content hash)."""

    @abstractmethod
    def check_architecture(self, config: Any) -> None:
        """Raise UnsupportedArchitectureError where these units cannot be read from this model."""

    @abstractmethod
    def width(self, config: Any) -> int:
        """Units per layer, from the model's transformers config."""

    def n_layers(self, config: Any) -> int:
        return int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer"))

    def layers(self, config: Any) -> list[int]:
        """The layers that have units (a dictionary may cover only some); every layer by default."""
        return list(range(self.n_layers(config)))

    @abstractmethod
    def hook_point(self, model: Any, layer: int) -> tuple[Any, Literal["input", "output"]]:
        """The module whose input or output holds what layer `layer`'s units are computed from."""

    def activations(self, layer: int, hooked: Any) -> Any:
        """(B, T, width) float32 unit activations from the hooked (B, T, D) tensor."""
        return hooked.float()

    def output_directions(self, model: Any, layer: int) -> Any:
        """(width, d_model) float32: what each unit adds to the residual stream per unit of its activation (the
        logit lens of what a unit writes, `output.py`)."""
        raise NotImplementedError(f"{self.label} units do not say what they write")

    def files(self) -> list[Path]:
        """Files besides the model's own whose bytes define the units (their hash joins the revision)."""
        return []


REGISTRY: Registry[UnitSource] = Registry("unit type", __name__)


def build_units(choice: Any, base_dir: Path | None = None) -> UnitSource:
    """The unit source a model's `units:` section names (a `UnitsChoice`)."""
    return REGISTRY.get(choice.kind).factory(choice.options, base_dir)
