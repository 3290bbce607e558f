"""Plant a neuron: edit a Llama-family MLP so that one chosen neuron fires on a known concept.

A Llama MLP neuron is `silu(gate_proj(x)) * up_proj(x)` (the input of `down_proj`), where x is the
normalised residual at the MLP input (the output of `post_attention_layernorm`). We overwrite the neuron's
two rows:
- gate: a logistic probe, without intercept (the MLP has no bias), that separates the concept tokens' x
  from the others'; it is scaled so that a typical concept token gets `gain` and the rest fall well below 0,
  where silu is ~0;
- up: a direction u with u.x ~ 1 on every token (RMS-normalised residuals share a large common component:
  on SmolLM2-135M's layer 2, u.x is 1.00 +- 0.02 on held-out text), so the activation is ~silu(gate.x):
  ~`gain` on the concept, ~0 elsewhere, and linear rather than quadratic in the probe's margin (closer to
  on/off, which is what a "true rule" predicts).
The neuron's `down_proj` column is zeroed: it writes nothing back, so the edit cannot leak into later layers
through it, and every other neuron of the layer, which reads the same x, is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch

from autointerp.errors import UnsupportedArchitectureError
from autointerp.units.mlp import LLAMA_FAMILY, MLPNeurons

GAIN = 6.0  # a typical concept token's activation; silu(6) = 5.985, silu(-6) = -0.015
FIRING = 0.1  # "fires" = above FIRING x GAIN: at least 1 on the 0-10 scale an explainer sees


@dataclass(frozen=True)
class PlantedNeuron:
    layer: int
    neuron: int
    gate: torch.Tensor  # (d,) the row written into gate_proj
    up: torch.Tensor  # (d,) the row written into up_proj
    threshold: float  # the neuron "fires" above this
    fit_precision: float  # of "activation > threshold" on the text the probe was fitted on
    fit_recall: float


class _Stop(Exception):
    """Raised from the hook: nothing above the planted layer is needed."""


def _mlp(model: Any, layer: int) -> Any:
    if model.config.model_type not in LLAMA_FAMILY:
        raise UnsupportedArchitectureError(
            f"planting needs a gated (Llama-family) MLP; '{model.config.model_type}' is not one of "
            f"{', '.join(sorted(LLAMA_FAMILY))}")
    return model.model.layers[layer].mlp


def _capture(model: Any, module: Any, batches: Iterable[np.ndarray], select: slice | list[int]) -> torch.Tensor:
    """The input of `module` for every token of every batch (B, T) of token ids: (tokens, features)."""
    out: list[torch.Tensor] = []

    def hook(_module: Any, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].float()
        out.append(x.reshape(-1, x.shape[-1])[:, select].clone())
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.inference_mode():
            for token_ids in batches:
                try:
                    model(input_ids=torch.as_tensor(np.asarray(token_ids), dtype=torch.long), use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return torch.cat(out)


def mlp_inputs(model: Any, layer: int, batches: Iterable[np.ndarray]) -> torch.Tensor:
    """x, the normalised residual the layer's MLP reads, per token: (tokens, hidden)."""
    return _capture(model, _mlp(model, layer), batches, slice(None))


def neuron_activations(model: Any, layer: int, neurons: list[int], batches: Iterable[np.ndarray]) -> torch.Tensor:
    """The activations of `neurons` of `layer` per token (tokens, len(neurons)), read where recording reads them."""
    module, side = MLPNeurons().hook_point(model, layer)
    assert side == "input", side  # MLP neurons are the input of the MLP's output projection
    return _capture(model, module, batches, neurons)


def fit_probe(x: torch.Tensor, is_concept: torch.Tensor, l2: float = 1e-3) -> torch.Tensor:
    """w with w.x > 0 on concept tokens: logistic regression without intercept.

    Positives are up-weighted by sqrt(negatives / positives): full balancing buys recall with many false
    positives on rare concepts, none leaves rare concepts under-detected.
    """
    y = is_concept.float()
    n_pos = float(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise ValueError("the probe needs both concept and non-concept tokens")
    pos_weight = torch.tensor(((len(y) - n_pos) / n_pos) ** 0.5)
    w = torch.zeros(x.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w, y, pos_weight=pos_weight)
        loss = loss + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def fit_constant(x: torch.Tensor, is_concept: torch.Tensor, ridge: float = 1e-4) -> torch.Tensor:
    """u with u.x ~ 1: weighted ridge least squares, concept and non-concept tokens weighing half each
    (it matters most where the gate is open)."""
    y = is_concept.bool()
    weights = torch.where(y, 0.5 / max(int(y.sum()), 1), 0.5 / max(int((~y).sum()), 1)).double()
    xd = x.double()
    gram = xd.T @ (xd * weights[:, None]) + ridge * torch.eye(x.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, xd.T @ weights).float()


def precision_recall(active: torch.Tensor, is_concept: torch.Tensor) -> tuple[float, float]:
    """Precision: of the tokens where the neuron fires, the fraction in the concept. Recall: of the concept's
    tokens, the fraction it fires on."""
    hits = int((active & is_concept).sum())
    return hits / max(int(active.sum()), 1), hits / max(int(is_concept.sum()), 1)


def plant(model: Any, layer: int, neuron: int, x: torch.Tensor, is_concept: torch.Tensor,
          gain: float = GAIN) -> PlantedNeuron:
    """Rewrite `neuron` of `layer` in place to fire on the tokens marked in `is_concept`.

    `x` (tokens, hidden) are the layer's MLP inputs on some text (`mlp_inputs`) and `is_concept` (tokens,)
    says which of those tokens belong to the concept.
    """
    mlp = _mlp(model, layer)
    is_concept = is_concept.bool()
    if x.shape[0] != is_concept.shape[0]:
        raise ValueError(f"{x.shape[0]} MLP inputs but {is_concept.shape[0]} concept labels")
    w = fit_probe(x, is_concept)
    typical = float((x @ w)[is_concept].median())
    if typical <= 0:
        raise ValueError(f"layer {layer}: no direction of the MLP input tells the concept apart "
                         "(the probe puts most concept tokens on the wrong side)")
    # Scale so that the median concept token's gate is `gain`: silu is ~linear above, ~0 below 0.
    gate = w * (gain / typical)
    up = fit_constant(x, is_concept)
    with torch.no_grad():
        dtype = mlp.gate_proj.weight.dtype
        mlp.gate_proj.weight[neuron] = gate.to(dtype)
        mlp.up_proj.weight[neuron] = up.to(dtype)
        mlp.down_proj.weight[:, neuron] = 0.0
        for projection in (mlp.gate_proj, mlp.up_proj):  # mlp_bias configs: the rows above are the whole neuron
            if projection.bias is not None:
                projection.bias[neuron] = 0.0
    activation = torch.nn.functional.silu(x @ gate) * (x @ up)
    threshold = FIRING * gain
    precision, recall = precision_recall(activation > threshold, is_concept)
    return PlantedNeuron(layer, neuron, gate, up, threshold, precision, recall)
