"""The demo dictionary: a TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders") trained in
plain torch on a subject's activations at one site per layer, saved in the SAELens layout that `sae.py` reads.

Small on purpose (a few minutes on 2 cores for one layer of SmolLM2-135M over 100k tokens): the point is a
dictionary made here, offline, whose latents the pipeline then explains like neurons. The recipe: decoder rows of
unit norm (renormalised after every step), the encoder initialised as the decoder's transpose, b_dec at the data
mean, the loss the normalised MSE, and the AuxK loss (the top latents among those silent for a while reconstruct
the residual) that keeps latents from dying.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from autointerp.units.sae import module_at

if TYPE_CHECKING:  # torch is imported where it is used: the unit registry imports this module on every config parse
    import torch

DEAD_AFTER_TOKENS = 20_000  # a latent silent this long counts as dead for the AuxK loss
AUXK_ALPHA = 1 / 32


@dataclass
class TrainResult:
    layer: int
    directory: Path
    fraction_variance_explained: float
    l0: float  # active latents per token
    dead_latents: int  # never active on the training tokens
    tokens: int
    seconds: float


def collect(model: Any, layers: list[int], site: str, batches: Iterable[torch.Tensor]) -> dict[int, torch.Tensor]:
    """Every token's (d_model,) vector at `site` of each layer, float32; the pass stops after the deepest layer."""
    import torch

    caught: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}

    class Stop(Exception):
        pass

    def keep(layer: int, x: Any) -> None:
        x = x[0] if isinstance(x, tuple) else x
        caught[layer].append(x.reshape(-1, x.shape[-1]).float().clone())
        if layer == max(layers):
            raise Stop

    handles = []
    for layer in layers:
        module, side = module_at(model, layer, site)
        if side == "input":
            handles.append(module.register_forward_pre_hook(lambda _m, a, kw, layer=layer: keep(
                layer, a[0] if a else kw["hidden_states"]), with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(lambda _m, _a, out, layer=layer: keep(layer, out)))
    try:
        with torch.inference_mode():
            for token_ids in batches:
                try:
                    model(input_ids=token_ids, use_cache=False)
                except Stop:
                    pass
    finally:
        for handle in handles:
            handle.remove()
    return {layer: torch.cat(chunks) for layer, chunks in caught.items()}


def encode(x: torch.Tensor, w: dict[str, torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents after TopK + ReLU, pre-activations): the SAELens `topk` encoder with apply_b_dec_to_input."""
    import torch

    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    top = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values)), pre


def train_topk(x: torch.Tensor, latents: int, k: int, epochs: int, batch_size: int, lr: float, seed: int,
               log: Callable[[str], None] = print) -> dict[str, torch.Tensor]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    # Initialised on the host by the seeded generator, then moved: the same start on any device.
    w_dec = torch.randn(latents, d, generator=generator).to(x.device)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    w = {"W_enc": w_dec.T.clone(), "b_enc": torch.zeros(latents, device=x.device), "W_dec": w_dec,
         "b_dec": x.mean(0)}
    for t in w.values():
        t.requires_grad_(True)
    optimizer = torch.optim.Adam(w.values(), lr=lr)
    total_variance = (x - x.mean(0)).pow(2).sum(-1).mean()  # per token: the losses are fractions of it
    silent = torch.zeros(latents, dtype=torch.long, device=x.device)  # tokens since each latent last fired
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for lo in range(0, len(x), batch_size):
            batch = x[order[lo:lo + batch_size]]
            z, pre = encode(batch, w, k)
            residual = batch - (z @ w["W_dec"] + w["b_dec"])
            loss = residual.pow(2).sum(-1).mean() / total_variance
            fired = (z > 0).any(0)
            silent = torch.where(fired, 0, silent + len(batch))
            dead = silent > DEAD_AFTER_TOKENS
            if dead.any():  # AuxK: the dead latents' top-k_aux reconstruct what the live ones missed
                k_aux = min(int(dead.sum()), d // 2)
                aux_pre = torch.where(dead, pre, -torch.inf).topk(k_aux, dim=-1)
                aux = torch.zeros_like(pre).scatter(-1, aux_pre.indices, torch.relu(aux_pre.values))
                loss = loss + AUXK_ALPHA * (aux @ w["W_dec"] - residual.detach()).pow(2).sum(-1).mean() / total_variance
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                w["W_dec"] /= w["W_dec"].norm(dim=1, keepdim=True)
        log(f"SAE epoch {epoch + 1}/{epochs}: last batch loss {float(loss.detach()):.3f}, "
            f"{int(dead.sum())} latents silent for {DEAD_AFTER_TOKENS:,} tokens")
    return {name: t.detach() for name, t in w.items()}


def evaluate(x: torch.Tensor, w: dict[str, torch.Tensor], k: int, chunk: int = 4096) -> tuple[float, float, int]:
    """(fraction of variance explained, L0, latents never active) over `x`."""
    import torch

    error, active, ever = 0.0, 0.0, torch.zeros(w["W_enc"].shape[1], dtype=torch.bool, device=x.device)
    with torch.no_grad():
        for lo in range(0, len(x), chunk):
            batch = x[lo:lo + chunk]
            z, _ = encode(batch, w, k)
            error += float((batch - z @ w["W_dec"] - w["b_dec"]).pow(2).sum())
            active += float((z > 0).sum())
            ever |= (z > 0).any(0)
    variance = float((x - x.mean(0)).pow(2).sum())
    return 1 - error / variance, active / len(x), int((~ever).sum())


def save_saelens(directory: Path, w: dict[str, torch.Tensor], hook_name: str, k: int) -> None:
    """`cfg.json` + `sae_weights.safetensors`, as SAELens's `SAE.save_model` writes a TopK SAE."""
    from safetensors.torch import save_file

    d_in, d_sae = w["W_enc"].shape
    directory.mkdir(parents=True, exist_ok=True)
    save_file({name: t.detach().cpu().contiguous() for name, t in w.items()}, str(directory / "sae_weights.safetensors"))
    cfg = {"architecture": "topk", "d_in": d_in, "d_sae": d_sae, "k": k, "activation_fn_kwargs": {"k": k},
           "hook_name": hook_name, "hook_layer": int(hook_name.split(".")[1]), "hook_head_index": None,
           "apply_b_dec_to_input": True, "normalize_activations": "none", "dtype": "float32",
           "trained_by": "autointerp/units/train.py"}
    (directory / "cfg.json").write_text(json.dumps(cfg, indent=1))


def train_dictionaries(config: Any, log: Callable[[str], None] = print) -> list[TrainResult]:
    """Train `config.sae_training`'s SAEs; each lands in `<out>/blocks.<L>.hook_<site>/`."""
    import numpy as np
    import torch

    from autointerp.corpus import iter_documents, resolve_corpus_paths
    from autointerp.corpus.excerpts import StreamingTokenizer, iter_excerpts
    from autointerp.subject import load_model, load_tokenizer, resolve_source

    from autointerp.devices import describe_device, resolve_device

    spec = config.sae_training
    device = resolve_device(spec.device, "sae_training.device")  # before any work: a missing GPU fails at once
    model_spec = config.model(spec.model or config.models[0].name)
    source = resolve_source(model_spec.source, config.base_dir)
    paths = resolve_corpus_paths(config.corpus.paths, config.base_dir)
    excerpts = iter_excerpts(iter_documents(paths, config.corpus.text_field),
                             StreamingTokenizer(load_tokenizer(source)), 64, spec.tokens)
    ids = np.array([e.token_ids for e in excerpts], dtype=np.int64)
    started = time.monotonic()
    model = load_model(source, model_spec.dtype, device)
    layers = sorted(set(spec.layers))
    log(f"training on {describe_device(device)}")
    # The activations stay on the device (100k tokens of a 576-wide site: 230 MB), and the SAE trains there.
    acts = collect(model, layers, spec.site,
                   (torch.from_numpy(ids[i:i + 32]).to(device) for i in range(0, len(ids), 32)))
    del model
    log(f"collected {len(ids) * 64:,} tokens at {spec.site} of layers {layers} in {time.monotonic() - started:.0f}s")
    results = []
    for layer in layers:
        started = time.monotonic()
        w = train_topk(acts[layer], spec.latents, spec.k, spec.epochs, spec.batch_size, spec.lr, spec.seed, log)
        fve, l0, dead = evaluate(acts[layer], w, spec.k)
        hook_name = f"blocks.{layer}.hook_{spec.site}"
        directory = (config.base_dir / spec.out / hook_name).resolve()
        save_saelens(directory, w, hook_name, spec.k)
        results.append(TrainResult(layer, directory, fve, l0, dead, len(acts[layer]), time.monotonic() - started))
        log(f"layer {layer}: fraction of variance explained {fve:.3f}, L0 {l0:.1f}, {dead} dead latents -> {directory}")
    return results
