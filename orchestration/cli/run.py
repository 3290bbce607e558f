"""`autointerp run`: plan the runs for a model's layers and materialize them through Dagster."""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from autointerp.config import Config
from autointerp.devices import describe_device
from autointerp.errors import AutointerpError
from autointerp.neurons import selected_layers
from autointerp.progress import format_duration
from autointerp.store import Store, default_home, queries
from autointerp.subject import Subject
from orchestration.cli.reports import print_scores, print_summary
from orchestration.launch import JobLauncher, settings_fields
from orchestration.partitions import contiguous_ranges, model_layer_key, range_tags, register_model
from orchestration.stages import LLM_STAGES, STAGES


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """'all' or a comma list of layers and ranges: '0,2-4' -> [0, 2, 3, 4]."""
    if spec.strip() == "all":
        return list(range(n_layers))
    layers: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            lo, _, hi = part.partition("-")
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise AutointerpError(f"--layers '{spec}': '{part}' is not a layer number or a range like 2-4") from None
        if first > last:
            raise AutointerpError(f"--layers '{spec}': range '{part}' runs backwards")
        outside = first if not 0 <= first < n_layers else last if not 0 <= last < n_layers else None
        if outside is not None:  # checked before the range is built: '0-30000000' must not build 30M layers
            raise AutointerpError(f"--layers '{spec}': the model has layers 0-{n_layers - 1}; no layer {outside}")
        layers.update(range(first, last + 1))
    return sorted(layers)


def dagster_instance() -> Any:
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str((default_home() / "dagster").resolve())
    home = Path(os.environ["DAGSTER_HOME"])
    settings = home / "dagster.yaml"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if not settings.exists():  # these machines are offline: no telemetry, no sign-up dialog in the UI; the
            # daemon fails runs whose worker died (runs the CLI started are also reaped by `reap_dead_runs`)
            settings.write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
                                "run_monitoring:\n  enabled: true\n  start_timeout_seconds: 180\n")
    except OSError as exc:
        raise AutointerpError(f"cannot use the Dagster home {home} (DAGSTER_HOME): {exc.strerror}") from exc
    return dg.DagsterInstance.get()


def ranges_text(layers: list[int]) -> str:
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in contiguous_ranges(layers)) or "none"


@dataclass
class Plan:
    model: str
    n_layers: int
    description: str
    record: list[int]  # layers to record
    explain: list[int]  # layers whose selected neurons the LLM stages explain, simulate and score
    warning: str = ""  # said before anything runs: e.g. the stored revision is not the model's files any more


def plan(config: Config, store: Store, name: str, layer_spec: str | None, stages: list[str]) -> Plan:
    """What to run for one model. From `record` on, the model must be configured; a later start takes any
    model in the store (an imported one needs no config entry). Explicit `--layers` are explained as asked;
    without them, the LLM stages take the layers of `neurons.layers` (every one when it is empty)."""
    warning = ""
    if stages[0] == "record":
        info = Subject.of(config.model(name), config.base_dir).info
        n_layers, description = info.n_layers, f"{info.architecture}, {info.n_layers} layers x {info.n_neurons} neurons"
        n_neurons = info.n_neurons
        if len(info.unit_layers) < info.n_layers:  # units in some layers only (an SAE for a few of them)
            description = f"{info.architecture}, layers {ranges_text(info.unit_layers)} x {info.n_neurons} {info.units}"
        # Resolved before anything runs: `device: cuda` on a machine without CUDA stops here, naming the key.
        subject = Subject.of(config.model(name), config.base_dir)
        description += f"; recording on {describe_device(subject.device())}"
    else:
        row = queries.current_model(store, name)
        n_layers, description = int(row["n_layers"]), f"{row['architecture']} @ {row['revision']}"
        n_neurons = int(row["n_neurons"])
        warning = _stale_warning(config, name, str(row["revision"]))
    layers = parse_layers(layer_spec or "all", n_layers)
    if stages[0] == "record":
        without = [layer for layer in layers if layer not in info.unit_layers]
        if without and layer_spec and layer_spec.strip() != "all":
            raise AutointerpError(f"--layers '{layer_spec}': model '{name}' has units ({info.units}) in layers "
                                  f"{ranges_text(info.unit_layers)} only; not in {ranges_text(without)}")
        layers = [layer for layer in layers if layer in info.unit_layers]
    if stages[0] != "record" and not layer_spec:  # the layers recorded for the current revision
        recorded = set(queries.recorded_layers(store, name, queries.latest_revision(store, name)).layer)
        layers = [layer for layer in layers if layer in recorded]
    explained = layers if layer_spec else selected_layers(config.neurons, layers)
    selection = config.neurons
    beyond = sorted(i for i in selection.ids if i >= n_neurons) if selection.select == "list" else []
    if beyond and explained and stages[-1] != "record":
        raise AutointerpError(f"{config.path}: neurons.ids {beyond} are beyond the {n_neurons} units per layer of "
                              f"model '{name}' (0-{n_neurons - 1})")
    return Plan(name, n_layers, description, layers if stages[0] == "record" else [],
                explained if stages[-1] != "record" else [], warning)


def _stale_warning(config: Config, name: str, stored: str) -> str:
    """A configured model whose files changed since it was recorded: the later stages work on the stored
    revision, which is no longer the model's; say so (a model that cannot be read now gets no word here)."""
    spec = next((m for m in config.models if m.name == name), None)
    if spec is None:
        return ""
    try:
        current = Subject.of(spec, config.base_dir).revision
    except AutointerpError:
        return ""
    if current == stored:
        return ""
    return (f"warning: model '{name}' changed since it was recorded ({stored} stored, {current} now): these stages "
            f"use the stored revision; `autointerp run --model {name}` records the new one")


def run(config: Config, models: Sequence[str], layer_spec: str | None, until: str, start: str = "record",
        explainer: str | None = None, verbose: bool = False, command: str = "autointerp run") -> None:
    from autointerp.llm import LoadedLLMs
    from orchestration.definitions import build_definitions, resources

    started = time.monotonic()
    order = list(STAGES)
    if order.index(start) > order.index(until):
        raise AutointerpError(f"--from {start} comes after --until {until}")
    stages = order[order.index(start): order.index(until) + 1]
    store = Store.from_home()
    plans = [plan(config, store, name, layer_spec, stages) for name in models]  # everything checked first
    instance = dagster_instance()
    if config.executor.kind == "celery":  # a run with no worker listening would wait forever: say so first
        from orchestration.executors import check_celery

        print(f"Celery workers: {', '.join(check_celery(config.executor))}")
    print(f"Dagster instance: {os.environ['DAGSTER_HOME']}  (see the runs with: dagster dev -w workspace.yaml)")
    for run_id in reap_dead_runs(instance):
        print(f"marked run {run_id} failed: the process that ran it is gone")
    explain_override = sorted({layer for p in plans for layer in p.explain}) if layer_spec else None
    llms = LoadedLLMs()  # this command's: each LLM loads once for all of its runs, released at the end
    try:
        materialize = JobLauncher(build_definitions(resources(str(config.path), explain_override, explainer, llms)),
                                  instance, command, verbose, config.executor,
                                  settings_fields(str(config.path), explain_override, explainer))
        _run_plans(plans, stages, store, config, materialize)
    finally:
        llms.close()
    print(f"\ndone in {format_duration(time.monotonic() - started)}")


def _run_plans(plans: Sequence[Plan], stages: list[str], store: Store, config: Config, materialize: JobLauncher) -> None:
    instance = materialize.instance
    llm_keys = [key for stage in stages if stage in LLM_STAGES for key in STAGES[stage]]
    for p in plans:
        register_model(instance, p.model, p.n_layers)
        if p.warning:
            print(p.warning, file=sys.stderr)
        print(f"{p.model}: {p.description}; stages {', '.join(stages)}"
              + (f"; recording layers {ranges_text(p.record)}" if p.record else "")
              + (f"; explaining layers {ranges_text(p.explain)}" if llm_keys else ""))
        if p.record:
            materialize(["excerpts"], partition_key=p.model)
        # One run per contiguous range of layers: a single forward pass records all of them (and stops after
        # the deepest). The LLM stages then run per range of the layers to explain, in this process, with the
        # LLMs the command holds: a local LLM is loaded once.
        for keys, chosen in ((list(STAGES["record"]), p.record), (llm_keys, p.explain)):
            for first, last in contiguous_ranges(chosen) if keys else []:
                if first == last:  # a single partition: its check results are recorded per partition
                    materialize(keys, partition_key=str(model_layer_key(p.model, first)))
                else:
                    materialize(keys, tags=range_tags(p.model, first, last))
        if p.record:
            print_summary(store, p.model, p.record)
        if "score" in stages and p.explain:
            print_scores(store, p.model, p.explain, config.scoring.rank_by)
            materialize(["neuron_viewer"], partition_key=p.model)
            from autointerp.viewer.site import site_dir

            print(f"\nNeuron viewer: {(site_dir(p.model) / 'index.html').resolve()}\n"
                  f"  serve it with: autointerp view --model {p.model}   (http://127.0.0.1:8000)\n"
                  f"Search by meaning: autointerp search \"TEXT\" --model {p.model}")


def reap_dead_runs(instance: Any) -> list[str]:
    """Mark failed the runs an `autointerp` process on this machine started and then died in (kill -9, power
    cut): they would show as in progress forever and hold automation back. Returns their ids."""
    import dagster as dg

    host, reaped = socket.gethostname(), []
    alive_statuses = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=alive_statuses, tags={"autointerp/host": host})):
        pid = int(run.tags.get("autointerp/pid", "0"))
        if pid and pid != os.getpid() and not _alive(pid):
            instance.report_run_failed(run, f"the autointerp process that ran it (PID {pid}) is gone: killed or "
                                            "crashed; its partitions kept their previous rows")
            reaped.append(run.run_id)
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
