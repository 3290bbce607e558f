"""Where torch work runs: the `device` key (`auto | cpu | cuda | cuda:N`), the dtype that is fast there, and how
many items fit in a device's free memory.

Used by recording (the subject), the local LLM engine, the sentence encoder, SAE encoders and `train-sae`, and
meant to be reused by anything else that runs a torch model. Everything here is plain torch: it imports neither
Dagster nor DuckDB, so a GPU machine with only torch and transformers can run `bench/gpu.py`.

A bad `device` value is one `ConfigError` naming the config key: a malformed value when the config is read
(`check_device_spec`, no torch import), a CUDA device this machine does not have at first use (`resolve_device`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from autointerp.errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# A CUDA build of torch is the user's choice (README, "On a GPU"); say how to get one where it is missing.
CUDA_HINT = ("install a CUDA build of torch (README, 'On a GPU': pip install torch --index-url "
             "https://download.pytorch.org/whl/cu126) or set it to cpu or auto")


def check_device_spec(spec: Any, key: str) -> str:
    """The value of a `device` key if it is well formed, else a ConfigError naming `key`. No torch import: this
    runs when the config is read, where the machine that will run the work may not be this one."""
    if not isinstance(spec, str) or not _DEVICE_PATTERN.match(spec.strip()):
        raise ConfigError(f"{key} must be {DEVICE_CHOICES}, got {spec!r}")
    return spec.strip()


def native_bf16_flags() -> list[str]:
    """The CPU's flags that compute bfloat16 natively (avx512_bf16, AMX); empty where it has none."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return [f for f in ("avx512_bf16", "amx_bf16") if f in flags]


def cuda_device_count() -> int:
    """CUDA devices torch can use here (0 with a CPU-only build of torch)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(spec: str = "auto", key: str = "device", cuda_devices: int | None = None) -> Any:
    """The torch.device a `device` key names: `auto` takes the first CUDA device when torch sees one, else the CPU.

    `cuda` / `cuda:N` on a machine without that device is a ConfigError naming `key` (never a CUDA traceback at the
    first tensor). `cuda_devices` overrides how many CUDA devices there are (tests, on machines without any).
    """
    import torch

    spec = check_device_spec(spec, key)
    count = cuda_device_count() if cuda_devices is None else cuda_devices
    if spec == "auto":
        return torch.device("cuda:0" if count > 0 else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    index = int(spec.partition(":")[2] or 0)
    if count == 0:
        raise ConfigError(f"{key} is '{spec}', but torch sees no CUDA device here (torch {torch.__version__}); "
                          f"{CUDA_HINT}")
    if index >= count:
        raise ConfigError(f"{key} is '{spec}', but this machine has {count} CUDA device(s): cuda:0 to "
                          f"cuda:{count - 1}")
    return torch.device("cuda", index)


def describe_device(device: Any) -> str:
    """What ran, for the config's report, `status` and run summaries: 'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{device.index or 0} ({torch.cuda.get_device_name(device)})"
    return str(device)


def pick_dtype(requested: str, device: Any, cpu_has_bf16: bool | None = None) -> Any:
    """The torch dtype for a model on `device`: `requested` unless it is `auto`.

    auto: on CUDA bfloat16 where the card computes it (Ampere and later), else float16; on the CPU bfloat16 where
    the CPU has native bf16 (avx512_bf16/AMX), else float32 (emulated bf16 is slower than float32 there).
    `cpu_has_bf16` overrides the CPU probe (tests).
    """
    import torch

    if requested != "auto":
        if requested not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be auto, float32, bfloat16 or float16, got '{requested}'")
        return getattr(torch, requested)
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if cpu_has_bf16 is None:
        cpu_has_bf16 = bool(native_bf16_flags())
    return torch.bfloat16 if cpu_has_bf16 else torch.float32


def free_memory(device: Any) -> int | None:
    """Bytes free on a CUDA device (`torch.cuda.mem_get_info`); None on the CPU, where the configured batch sizes
    apply (host memory is shared with everything else and swapping is worse than a small batch)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def batch_size_for(free_bytes: int, per_item_bytes: int, *, fixed_bytes: int = 0, headroom: float = 0.8,
                   low: int = 1, high: int = 1024, multiple: int = 1) -> int:
    """How many items to process at once so that `fixed_bytes + n * per_item_bytes` fits in `headroom` of
    `free_bytes`; clamped to [low, high] and rounded down to a multiple of `multiple` (when that stays >= low).

    A pure function of its numbers, so it is tested on the CPU. `headroom` leaves room for the allocator's
    fragmentation and for transient buffers the per-item estimate does not count.
    """
    if per_item_bytes <= 0:
        raise ValueError(f"per_item_bytes must be positive, got {per_item_bytes}")
    if not 0 < headroom <= 1 or low < 1 or high < low or multiple < 1:
        raise ValueError(f"bad bounds: headroom {headroom}, low {low}, high {high}, multiple {multiple}")
    usable = int(free_bytes * headroom) - fixed_bytes
    n = max(usable, 0) // per_item_bytes
    if n >= multiple:
        n -= n % multiple
    return int(min(max(n, low), high))


def synchronize(device: Any) -> None:
    """Wait for queued CUDA work (timings); nothing to wait for on the CPU."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
