"""`trained`: the judge trained here (autointerp/judge/, `autointerp train-judge`) predicts every token's activation
from the explanation and the whole excerpt in one encoder pass: it reads context, where `combined` matches tokens.

Its name carries the judge's revision (the hash of its manifest), so simulations and scores made with one judge
are never mistaken for another's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from autointerp.devices import check_device_spec, resolve_device
from autointerp.errors import ConfigError
from autointerp.simulate import REGISTRY, SimulationJob, Simulator

if TYPE_CHECKING:
    from autointerp.llm import LoadedLLMs
    from autointerp.store import Store

DEFAULT_JUDGE = "data/judge"


@dataclass(frozen=True)
class TrainedOptions:
    path: str = DEFAULT_JUDGE  # the judge's directory (judge_training.out), relative to the config file
    batch_size: int = 32  # excerpts per encoder pass
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def check(self, where: str) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"{where}.batch_size must be positive")
        check_device_spec(self.device, f"{where}.device")


class Trained(Simulator):
    def __init__(self, options: TrainedOptions, base_dir: Path | None):
        path = Path(options.path).expanduser()
        self.directory = path if path.is_absolute() or base_dir is None else base_dir / path
        self.options = options

    @property
    def name(self) -> str:
        from autointerp.judge.model import judge_revision

        manifest = self.directory / "manifest.json"
        return f"trained:{judge_revision(self.directory) if manifest.is_file() else 'untrained'}"

    @property
    def batch(self) -> int:
        return 64

    def simulate(self, jobs: Sequence[SimulationJob]) -> list[list[float]]:
        from autointerp.judge.model import load_judge, predict

        model, pairs, _ = load_judge(self.directory, resolve_device(self.options.device, "simulator.device"))
        probabilities = predict(model, pairs, [j.explanation for j in jobs], [j.tokens for j in jobs],
                                self.options.batch_size)
        return [(10.0 * p).tolist() for p in probabilities]


@REGISTRY.register("trained", TrainedOptions)
def trained(options: TrainedOptions, base_dir: Path | None, store: Store, llms: LoadedLLMs) -> Trained:
    return Trained(options, base_dir)
