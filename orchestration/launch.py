"""Launching the project's jobs as named runs in the Dagster instance, tagged with the command that asked.

In-process (the default executor): each run executes in this process, one after another. With a distributed
executor (orchestration/executors.py) this process orchestrates and the workers run the steps: a layer range is
cut into runs of `executor.layers_per_run` layers (`record_layers_per_run` for recording, default one run: one
forward pass), launched together, so the workers share them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from autointerp.config.schema import ExecutorSpec
from autointerp.errors import AutointerpError
from autointerp.progress import format_duration
from orchestration.partitions import layers_by_model, model_layer_key, range_tags

REPO = Path(__file__).resolve().parents[1]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


class JobLauncher:
    """`launcher(keys, partition_key=...)` or `launcher(keys, tags=range_tags(...))`: one job's assets for one
    partition or a range; raises AutointerpError with the user's error when a step fails."""

    def __init__(self, definitions: Any, instance: Any, command: str, verbose: bool = False,
                 executor: ExecutorSpec | None = None, settings: dict[str, Any] | None = None):
        import dagster as dg

        self.definitions, self.instance, self.dg = definitions, instance, dg
        self.executor = executor or ExecutorSpec()
        # The settings resource's fields for this run (config path, --layers, --explainer): bound in
        # `definitions` in-process; a worker rebuilds the job, so they travel in the run config.
        self.settings = settings or {}
        # Dagster's event stream always reaches the instance; the terminal gets it only with --verbose.
        level = "DEBUG" if verbose else "CRITICAL"
        self.run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": level}}}}
        self.tags = {"autointerp/command": command[:1000],
                     "autointerp/pid": str(os.getpid()), "autointerp/host": socket.gethostname()}

    def __call__(self, keys: list[str], partition_key: str | None = None, tags: dict[str, str] | None = None) -> None:
        from orchestration.executors import DISTRIBUTED_JOBS
        from orchestration.jobs import JOB_OF

        [job_name] = {JOB_OF[key] for key in keys}
        started = time.monotonic()
        if self.executor.kind == "in_process" or job_name not in DISTRIBUTED_JOBS:
            run_id = self._in_process(job_name, keys, partition_key, tags)
        else:
            run_id = self._distributed(job_name, keys, partition_key, tags)
        which = partition_key or (f"{tags[RANGE_START]}...{tags[RANGE_END]}" if tags else "")
        print(f"{job_name} {which}: {', '.join(keys)} done in {format_duration(time.monotonic() - started)} "
              f"({run_id})", flush=True)

    def _in_process(self, job_name: str, keys: list[str], partition_key: str | None,
                    tags: dict[str, str] | None) -> str:
        job = self.definitions.resolve_job_def(job_name)
        result = job.execute_in_process(run_config=self.run_config, instance=self.instance, partition_key=partition_key,
                                        tags={**self.tags, **(tags or {})},
                                        asset_selection=[self.dg.AssetKey(k) for k in keys], raise_on_error=False)
        if not result.success:
            raise AutointerpError(failure_message(result))
        return f"run {result.run_id[:8]}"

    def _distributed(self, job_name: str, keys: list[str], partition_key: str | None,
                     tags: dict[str, str] | None) -> str:
        per_run = self.executor.record_layers_per_run if job_name == "record_job" else self.executor.layers_per_run
        runs = split_range(tags, per_run) if tags and per_run else [(partition_key, tags or {})]
        with ThreadPoolExecutor(max_workers=min(len(runs), self.executor.max_runs)) as pool:
            results = list(pool.map(lambda run: self._run_process(job_name, keys, *run), runs))
        failed = [result for result in results if not result["success"]]
        if failed:  # one message: the first failure's own error, and how many runs failed
            more = f" ({len(failed)} of {len(results)} runs failed)" if len(results) > 1 else ""
            raise AutointerpError(failed[0]["message"] + more)
        return f"{len(results)} run{'s' if len(results) > 1 else ''} on {self.executor.kind} workers"

    def _run_process(self, job_name: str, keys: list[str], partition_key: str | None,
                     tags: dict[str, str]) -> dict[str, Any]:
        """Orchestrate one run in a child process (`python -m orchestration.launch`): Dagster's run start
        reconfigures Python's logging process-wide, and runs started from threads of one process deadlocked on
        the logging locks. The child waits for the workers to run the steps and reports one line of JSON."""
        from orchestration.executors import run_config_execution

        request = {"job": job_name, "keys": keys, "partition_key": partition_key, "tags": {**self.tags, **tags},
                   "run_config": {**self.run_config, "execution": {"config": run_config_execution(self.executor)},
                                  "resources": {"settings": {"config": self.settings}}},
                   "config_path": str(self.settings.get("path", ""))}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run([sys.executable, "-m", "orchestration.launch"], input=json.dumps(request), env=env,
                              capture_output=True, text=True)
        lines = done.stdout.strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            return {"success": False, "message": f"the process orchestrating {job_name} {partition_key or tags} "
                                                 f"exited with code {done.returncode}: {done.stderr.strip()[-2000:]}"}


def execute_request(request: dict[str, Any]) -> dict[str, Any]:
    """One run through the distributed executor, in this process (the child `_run_process` starts)."""
    import dagster as dg

    from orchestration.executors import reconstructable_job

    selection = [dg.AssetKey(k) for k in request["keys"]]
    recon = reconstructable_job(request["job"], request["config_path"])
    tags = dict(request["tags"])
    with dg.DagsterInstance.get() as instance:
        if request["partition_key"] is not None:
            job = recon.get_definition()
            tags.update(job.get_tags_for_partition_key(request["partition_key"], selection))
        result = dg.execute_job(recon, instance, run_config=request["run_config"], tags=tags,
                                asset_selection=selection, raise_on_error=False)
        return {"success": result.success, "run_id": result.run_id,
                "message": "" if result.success else failure_message(result)}


def split_range(tags: dict[str, str], layers_per_run: int) -> list[tuple[str | None, dict[str, str]]]:
    """A range run's tags -> (partition key, tags) per run of at most `layers_per_run` layers."""
    [(model, (first, last))] = [(m, (min(ls), max(ls))) for m, ls in
                                layers_by_model([tags[RANGE_START], tags[RANGE_END]]).items()]
    rest = {k: v for k, v in tags.items() if k not in (RANGE_START, RANGE_END)}
    runs: list[tuple[str | None, dict[str, str]]] = []
    for start in range(first, last + 1, layers_per_run):
        end = min(start + layers_per_run - 1, last)
        runs.append((str(model_layer_key(model, start)), rest) if start == end
                    else (None, {**rest, **range_tags(model, start, end)}))
    return runs


def failure_message(result: Any) -> str:
    """The user's error, not Dagster's wrapping of it."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = event.step_failure_data.error
            while error.cause is not None and "AutointerpError" not in error.cls_name and error.cls_name.startswith("Dagster"):
                error = error.cause
            return f"{event.step_key} failed: {error.message.strip()}"
    return f"run {result.run_id} failed"


def settings_fields(config_path: str, explain_layers: list[int] | None, explainer: str | None) -> dict[str, Any]:
    """The settings resource's fields for a run's config (resources/settings.py AutointerpSettings)."""
    fields: dict[str, Any] = {"path": config_path, "explainer": explainer or ""}
    if explain_layers is not None:
        fields["explain_layers"] = explain_layers
    return fields


if __name__ == "__main__":
    print(json.dumps(execute_request(json.loads(sys.stdin.read()))), flush=True)
