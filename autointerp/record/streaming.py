"""Streaming statistics whose memory does not grow with the corpus: top-k with payloads, moments, and
counter-based random keys (so a uniform sample is the top-k of random keys).

Every state tensor lives on the device the activations come from (`device`), and every update is a torch op
there: on a GPU nothing crosses to the host until the recorder's final records (docs/method.md s.1-2).
"""

from __future__ import annotations

import numpy as np
import torch


class StreamingTopK:
    """Per neuron, the k entries with the largest key seen so far, with their excerpt ids and activations.

    Slots are kept unsorted and only the slots whose entry is replaced are written, so a batch costs
    time in proportion to what changes, not to k x 64 per neuron; `sorted()` orders them once at the
    end. Order (and admission at the boundary) is by key, highest first, then by the earlier excerpt,
    which makes the result independent of how the corpus is batched.
    """

    def __init__(self, n_neurons: int, k: int, seq_len: int, key_dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", sync_free: bool | None = None):
        self.k = k
        # On CUDA every `nonzero` of `offer` waits for the GPU (3 per offer, 2 offers per layer and batch), so the host
        # cannot queue work ahead; `offer_without_sync` does the same update in fixed shapes instead.
        self.sync_free = torch.device(device).type == "cuda" if sync_free is None else sync_free
        self.keys = torch.full((n_neurons, k), -torch.inf, dtype=key_dtype, device=device)
        self.ids = torch.full((n_neurons, k), -1, dtype=torch.int64, device=device)
        self.acts = torch.zeros((n_neurons, k, seq_len), dtype=torch.float32, device=device)

    def offer(self, keys: torch.Tensor, ids: torch.Tensor, acts: torch.Tensor) -> None:
        """keys: (B, N); ids: (B,) increasing and above every id offered before; acts: (B, T, N)."""
        if self.sync_free:
            self.offer_without_sync(keys, ids, acts)
            return
        keys_t = keys.T
        rows = (keys_t > self.keys.amin(dim=1, keepdim=True)).any(dim=1).nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        k = self.k
        merged_keys = torch.cat([self.keys[rows], keys_t[rows]], dim=1)  # (R, k + B)
        merged_ids = torch.cat([self.ids[rows], ids.expand(len(rows), -1)], dim=1)
        # rank by (key desc, id asc): a stable sort by id, then a stable sort by key
        by_id = merged_ids.argsort(dim=1, stable=True)
        by_key = merged_keys.gather(1, by_id).argsort(dim=1, descending=True, stable=True)
        survivors = by_id.gather(1, by_key)[:, :k]
        kept = torch.zeros_like(merged_keys, dtype=torch.bool).scatter_(1, survivors, True)
        # every evicted old slot takes one surviving newcomer; both lists are in row-major order
        evicted = (~kept[:, :k]).nonzero()
        arrivals = kept[:, k:].nonzero()
        row = rows[evicted[:, 0]]
        slot, newcomer = evicted[:, 1], arrivals[:, 1]
        self.keys[row, slot] = keys_t[row, newcomer]
        self.ids[row, slot] = ids[newcomer]
        self.acts[row, slot] = acts[newcomer, :, row]

    def offer_without_sync(self, keys: torch.Tensor, ids: torch.Tensor, acts: torch.Tensor) -> None:
        """`offer` with no host synchronisation (for CUDA): every neuron's row is merged, and the evicted slots take
        the arriving entries through fixed-shape gathers and scatters of min(k, B) slots per neuron, where a slot
        with nothing arriving is written with its own value. Same admission and order as `offer`."""
        keys_t = keys.T
        n, b = keys_t.shape
        k = self.k
        merged_keys = torch.cat([self.keys, keys_t.to(self.keys.dtype)], dim=1)  # (N, k + B)
        merged_ids = torch.cat([self.ids, ids.expand(n, -1)], dim=1)
        by_id = merged_ids.argsort(dim=1, stable=True)  # rank by (key desc, id asc), as in `offer`
        by_key = merged_keys.gather(1, by_id).argsort(dim=1, descending=True, stable=True)
        kept = torch.zeros_like(merged_keys, dtype=torch.bool).scatter_(1, by_id.gather(1, by_key)[:, :k], True)
        m = min(k, b)  # at most this many slots change: arrivals <= B, and each evicts one of the k
        # Per neuron: its evicted slots first (in slot order), its arriving entries first (in batch order).
        slots = kept[:, :k].to(torch.int8).argsort(dim=1, stable=True)[:, :m]
        arriving = (~kept[:, k:]).to(torch.int8).argsort(dim=1, stable=True)[:, :m]
        changes = (~kept[:, :k]).sum(dim=1, keepdim=True)  # evicted = arrived, per neuron
        valid = torch.arange(m, device=keys_t.device) < changes  # (N, m)
        rows = torch.arange(n, device=keys_t.device)[:, None].expand(n, m)
        self.keys.scatter_(1, slots, torch.where(valid, keys_t.gather(1, arriving).to(self.keys.dtype),
                                                 self.keys.gather(1, slots)))
        self.ids.scatter_(1, slots, torch.where(valid, ids[arriving], self.ids.gather(1, slots)))
        seq = self.acts.shape[-1]
        at = slots[..., None].expand(-1, -1, seq)
        arrived = acts[arriving, :, rows]  # (N, m, T): advanced indices around a slice go first
        self.acts.scatter_(1, at, torch.where(valid[..., None], arrived, self.acts.gather(1, at)))

    def filled(self) -> int:
        return int((self.ids[0] >= 0).sum()) if self.ids.shape[0] else 0

    def sorted(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(keys, ids, acts) with each neuron's entries ordered by key, highest first (ties: earlier excerpt)."""
        by_id = self.ids.argsort(dim=1, stable=True)
        order = by_id.gather(1, self.keys.gather(1, by_id).argsort(dim=1, descending=True, stable=True))
        keys, ids = self.keys.gather(1, order), self.ids.gather(1, order)
        acts = self.acts.gather(1, order.unsqueeze(-1).expand(-1, -1, self.acts.shape[-1]))
        return keys, ids, acts


class Moments:
    """Streaming count, mean and central moments M2..M4 per neuron (Chan et al.'s parallel merge).

    Batch moments are computed in float32 around the batch mean (no cancellation), merged in float64.
    """

    def __init__(self, n_neurons: int, device: torch.device | str = "cpu"):
        self.n = 0
        self.mean = torch.zeros(n_neurons, dtype=torch.float64, device=device)
        self.m2 = torch.zeros_like(self.mean)
        self.m3 = torch.zeros_like(self.mean)
        self.m4 = torch.zeros_like(self.mean)
        self.positive = torch.zeros(n_neurons, dtype=torch.int64, device=device)

    def update(self, x: torch.Tensor) -> None:
        """x: (M, N) activations of M tokens."""
        nb = x.shape[0]
        mean_b = x.mean(dim=0)
        d = x - mean_b
        d2 = d * d
        m2b, m3b, m4b = d2.sum(0).double(), (d2 * d).sum(0).double(), (d2 * d2).sum(0).double()
        self.positive += (x > 0).sum(0)
        # Counts as floats: n**3 of a corpus over ~2.6M tokens exceeds uint64, and torch refuses such a Python int
        # (a GPU records that many in seconds).
        na, n = float(self.n), float(self.n + nb)
        nb = float(nb)
        delta = mean_b.double() - self.mean
        m2a, m3a = self.m2, self.m3
        self.m4 = (self.m4 + m4b + delta**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
                   + 6 * delta**2 * (na * na * m2b + nb * nb * m2a) / n**2 + 4 * delta * (na * m3b - nb * m3a) / n)
        self.m3 = m3a + m3b + delta**3 * na * nb * (na - nb) / n**2 + 3 * delta * (na * m2b - nb * m2a) / n
        self.m2 = m2a + m2b + delta**2 * na * nb / n
        self.mean = self.mean + delta * nb / n
        self.n = int(n)

    def finish(self) -> dict[str, np.ndarray]:
        n = max(self.n, 1)
        variance = self.m2 / n
        # Population skewness and excess kurtosis (scipy.stats defaults); 0 for a constant neuron.
        safe = torch.where(self.m2 > 0, self.m2, torch.ones_like(self.m2))
        skew = torch.where(self.m2 > 0, np.sqrt(n) * self.m3 / safe**1.5, torch.zeros_like(safe))
        kurt = torch.where(self.m2 > 0, n * self.m4 / safe**2 - 3.0, torch.zeros_like(safe))
        return {
            "count": np.full(self.mean.shape, self.n, dtype=np.int64),
            "mean": self.mean.cpu().numpy(),
            "variance": variance.cpu().numpy(),
            "skewness": skew.cpu().numpy(),
            "kurtosis": kurt.cpu().numpy(),
            "frac_positive": (self.positive.double() / n).cpu().numpy(),
        }


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 that holds it (torch has no uint64 arithmetic)."""
    value %= 2**64
    return value - 2**64 if value >= 2**63 else value


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (`>>` on int64 is arithmetic: it copies the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


_MIX1, _MIX2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def random_priorities(seed: int, layer: int, excerpt_ids: np.ndarray | torch.Tensor, n_neurons: int,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """A uniform [0, 1) float64 key per (excerpt, neuron), a pure function of (seed, layer, excerpt, neuron).

    Keeping the k largest keys gives a uniform sample without replacement; a counter-based hash
    (splitmix64) makes it independent of batch size and batch order. Computed with int64 torch ops on
    `device` (default: where `excerpt_ids` are): multiplication wraps modulo 2**64 as uint64's does, and
    right shifts are made logical, so the keys are bit for bit those of the uint64 formula, on any device.
    """
    ids = excerpt_ids if isinstance(excerpt_ids, torch.Tensor) else torch.from_numpy(np.asarray(excerpt_ids, np.int64))
    ids = ids.to(device=device if device is not None else ids.device, dtype=torch.int64)
    x = ids[:, None] * n_neurons + torch.arange(n_neurons, dtype=torch.int64, device=ids.device)
    x = x + _signed(seed * 0x9E3779B97F4A7C15 + (layer + 1) * 0xD1B54A32D192ED03)
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    x = x ^ _shift_right(x, 31)
    return _shift_right(x, 11).to(torch.float64) / float(2**53)
