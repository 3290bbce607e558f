"""MLP neurons, the paper's units: one coordinate of an MLP's hidden layer (docs/method.md s.1).

That is the input of the MLP's output projection, read with a forward pre-hook:
GPT-2 `transformer.h[L].mlp.c_proj` (gelu(c_fc(x))), Llama family `model.layers[L].mlp.down_proj`
(act(gate_proj(x)) * up_proj(x)).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from autointerp.errors import UnsupportedArchitectureError
from autointerp.plugins import NoOptions
from autointerp.units import REGISTRY, UnitSource

GPT2_FAMILY = frozenset({"gpt2"})
LLAMA_FAMILY = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "granite", "smollm3"}
)


class MLPNeurons(UnitSource):
    label = "mlp"

    def check_architecture(self, config: Any) -> None:
        model_type = getattr(config, "model_type", "unknown")
        if model_type not in GPT2_FAMILY | LLAMA_FAMILY:
            raise UnsupportedArchitectureError(
                f"unsupported architecture '{model_type}': we know where the MLP neurons are for the GPT-2 family "
                f"({', '.join(sorted(GPT2_FAMILY))}) and the Llama family ({', '.join(sorted(LLAMA_FAMILY))})")

    def width(self, config: Any) -> int:
        self.check_architecture(config)
        if config.model_type in GPT2_FAMILY:
            return int(config.n_inner or 4 * config.n_embd)
        return int(config.intermediate_size)

    def hook_point(self, model: Any, layer: int) -> tuple[Any, Literal["input", "output"]]:
        self.check_architecture(model.config)
        if model.config.model_type in GPT2_FAMILY:
            return model.transformer.h[layer].mlp.c_proj, "input"
        return model.model.layers[layer].mlp.down_proj, "input"

    def output_directions(self, model: Any, layer: int) -> Any:
        """A neuron's column of the output projection: GPT-2's `c_proj` is a Conv1D, weight (d_mlp, d_model), so a
        neuron is a row; Llama's `down_proj` is a Linear, weight (d_model, d_mlp), so a neuron is a column."""
        module, _ = self.hook_point(model, layer)
        weight = module.weight.detach().float()
        return weight if model.config.model_type in GPT2_FAMILY else weight.T


@REGISTRY.register("mlp", NoOptions)
def mlp_neurons(_options: NoOptions, _base_dir: Path | None = None) -> MLPNeurons:
    return MLPNeurons()
