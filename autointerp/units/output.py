"""What a unit writes: the tokens its output direction promotes and suppresses most (the logit lens of a direction).

A unit's direction `d` (an MLP neuron's column of `c_proj`/`down_proj`, an SAE latent's decoder row; see each unit
source's `output_directions`) goes through the final norm and the unembedding: `logits = W_U @ norm(d)`.
How the norm applies to a direction, not to a residual stream, is a choice; ours keeps its linear part only:

- LayerNorm (GPT-2 `ln_f`): centre `d` (LayerNorm removes the mean of whatever the residual holds, so the mean of
  `d` never reaches the logits), then multiply by the gain `weight`;
- RMSNorm (Llama `model.norm`): multiply by `weight` (Gemma's RMSNorm scales by `1 + weight`; OLMo's norm has no
  weight: gain 1);
- no division by a norm (the real one divides by the whole residual's, a positive per-token scale that changes
  no ranking), no LayerNorm `bias` and no `lm_head` bias (they add the same logits whatever the unit: they would
  rank the same tokens first for every unit).

So a unit's logits are its direct effect on the next-token logits per unit of activation, up to that scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from autointerp.units import UnitSource

TOP_K = 10  # promoted and suppressed tokens kept per unit
_CHUNK = 256  # units per matmul: (chunk, vocab) float32 logits stay small for a 150k-token vocabulary


def final_norm_gain(model: Any) -> tuple[Any, bool]:
    """(the final norm's gain as float32 (d_model,), whether it centres): GPT-2's `ln_f`, the Llama family's
    `model.norm`; a LayerNorm centres, an RMSNorm does not; a norm without weights (OLMo's) has gain 1."""
    import torch

    norm = model.transformer.ln_f if model.config.model_type == "gpt2" else model.model.norm
    centre = "LayerNorm" in type(norm).__name__
    weight = getattr(norm, "weight", None)
    if weight is None:
        return torch.ones(model.get_output_embeddings().weight.shape[1]), centre
    weight = weight.detach().float()
    return (1.0 + weight if model.config.model_type.startswith("gemma") else weight), centre


def direction_logits(model: Any, directions: Any) -> Any:
    """(n, vocab) float32 logits of `directions` (n, d_model) through the final norm's linear part and W_U."""
    gain, centre = final_norm_gain(model)
    unembed = model.get_output_embeddings().weight.detach().float()  # (vocab, d_model)
    d = directions.float().to(unembed.device)
    if centre:
        d = d - d.mean(dim=-1, keepdim=True)
    return (d * gain.to(unembed.device)) @ unembed.T


def top_tokens(model: Any, directions: Any, k: int = TOP_K) -> dict[str, np.ndarray]:
    """Per direction, the `k` token ids of highest logit (strongest first) and of lowest (most suppressed first),
    with their logits: promoted_ids, promoted_logits, suppressed_ids, suppressed_logits, each (n, k)."""
    import torch

    parts: dict[str, list[np.ndarray]] = {key: [] for key in ("promoted_ids", "promoted_logits", "suppressed_ids",
                                                             "suppressed_logits")}
    with torch.inference_mode():
        for lo in range(0, directions.shape[0], _CHUNK):
            logits = direction_logits(model, directions[lo:lo + _CHUNK])
            k_here = min(k, logits.shape[1])
            top = logits.topk(k_here, dim=1)
            bottom = logits.topk(k_here, dim=1, largest=False)
            parts["promoted_ids"].append(top.indices.cpu().numpy())
            parts["promoted_logits"].append(top.values.cpu().numpy())
            parts["suppressed_ids"].append(bottom.indices.cpu().numpy())
            parts["suppressed_logits"].append(bottom.values.cpu().numpy())
    return {key: np.concatenate(value) for key, value in parts.items()}


def unit_logits_table(model: Any, units: UnitSource, layer: int, tokenizer: Any, model_name: str,
                      revision: str, k: int = TOP_K) -> pa.Table:
    """The `unit_logits` rows of one layer: every unit's promoted and suppressed tokens (their text decoded alone,
    as the viewer shows tokens)."""
    from datetime import datetime, timezone

    from autointerp.store.schema import table

    found = top_tokens(model, units.output_directions(model, layer), k)
    ids = np.unique(np.concatenate([found["promoted_ids"].ravel(), found["suppressed_ids"].ravel()]))
    text = {int(i): tokenizer.decode([int(i)]) for i in ids}
    n = found["promoted_ids"].shape[0]

    def words(matrix: np.ndarray) -> list[list[str]]:
        return [[text[int(i)] for i in row] for row in matrix]

    return table("unit_logits", {
        "model": [model_name] * n, "revision": [revision] * n, "layer": [layer] * n, "neuron": list(range(n)),
        "promoted_ids": found["promoted_ids"].tolist(), "promoted_tokens": words(found["promoted_ids"]),
        "promoted_logits": found["promoted_logits"].tolist(), "suppressed_ids": found["suppressed_ids"].tolist(),
        "suppressed_tokens": words(found["suppressed_ids"]), "suppressed_logits": found["suppressed_logits"].tolist(),
        "created_at": [datetime.now(timezone.utc).replace(tzinfo=None)] * n})
