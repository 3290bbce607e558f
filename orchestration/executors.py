"""Where the steps run: the `executor:` section of the config (ExecutorSpec).

`in_process` (the default): every step in the `autointerp` process, as `execute_in_process`.
`celery`: the CLI stays the run's orchestrator and hands each step to a Celery worker through the broker
(Redis); workers started with `celery -A orchestration.worker worker -Q record,explain,dagster` take them.
Runs, events and steps' state live in the Dagster instance, which must be one every worker reaches
(PostgreSQL, README "Scaling out"); the workers get it with each step.

Why Celery and not Ray (dagster-ray's `ray_executor`): a worker killed mid-step is retried elsewhere by
Celery itself (late acknowledgement: the message goes back to the queue), while a Ray job lost with its node
ends the Dagster step as failed; and a Ray head with two worker nodes is ~27 processes and 2.4 GB idle on
these 2 cores. The README has the numbers.
"""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dagster as dg

from autointerp.config.schema import ExecutorSpec
from autointerp.errors import AutointerpError

# The Celery queues: one per stage (assets/common.py `stage_op_tags`); asset checks and anything untagged go to
# dagster-celery's default queue, "dagster".
QUEUES = ("record", "explain", "dagster")
PASSWORD_ENV = "AUTOINTERP_BROKER_PASSWORD"
# The run config is stored with the run in the Dagster instance: a broker URL with a password goes there as a
# reference to this variable, which this module sets in the processes that resolve it (orchestrator, workers).
URL_ENV = "AUTOINTERP_BROKER_URL"
# The jobs a distributed executor runs; the rest (the viewer writes local files, the SAE demo) stay in-process.
DISTRIBUTED_JOBS = {"excerpts_job", "record_job", "explain_job"}
# A worker holds the LLMs it loaded for all the steps it runs (orchestration/worker.py sets this), as the CLI
# does for its runs in-process: a step per layer must not load a local model again. None: each run loads its own.
WORKER_LLMS: Any = None


def broker_url(spec: ExecutorSpec) -> str:
    """The broker URL with the password from the environment (never from the config file)."""
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        return spec.broker
    parts = urlsplit(spec.broker)
    netloc = f"{parts.username or ''}:{password}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def shown(url: str) -> str:
    """A URL fit for messages and logs: the password replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def celery_settings(spec: ExecutorSpec) -> dict[str, Any]:
    """The celery executor's config; the workers build their app from the same (orchestration/worker.py)."""
    url = broker_url(spec)
    return {
        "broker": url,
        "backend": url,  # results through Redis too: the orchestrator may poll after a worker is gone
        "config_source": {
            # A step's message is acknowledged when the step ends, not when a worker takes it: a worker killed
            # mid-step leaves it unacknowledged, and the broker hands it to another worker.
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,  # a busy worker holds no second step that an idle one could run
            "broker_connection_retry_on_startup": True,
            "broker_transport_options": {
                "visibility_timeout": spec.visibility_timeout_s,
                # Redis: look for steps of dead workers every few seconds (kombu's default sweep is ~100 s).
                "unacked_restore_interval": max(1, min(10, spec.visibility_timeout_s // 4)),
                "unacked_restore_throttle": 1,
                "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
            },
        },
    }


def run_config_execution(spec: ExecutorSpec) -> dict[str, Any]:
    """The executor's config as it goes into the run config: no password in it."""
    settings = celery_settings(spec)
    if os.environ.get(PASSWORD_ENV):
        os.environ[URL_ENV] = settings["broker"]
        settings["broker"] = settings["backend"] = {"env": URL_ENV}
    return settings


def celery_app(spec: ExecutorSpec) -> Any:
    """The Celery app of dagster-celery's executor, with the stage queues declared."""
    from dagster._core.execution.retries import RetryMode
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from kombu import Queue

    settings = celery_settings(spec)
    app = make_app(CeleryExecutor(retries=RetryMode(RetryMode.DISABLED), broker=settings["broker"],
                                  backend=settings["backend"], config_source=settings["config_source"]).app_args())
    # dagster-celery publishes a step to queue Q with routing key "Q.execute_plan".
    app.conf.task_queues = [Queue(q, routing_key=f"{q}.execute_plan", queue_arguments={"x-max-priority": 10})
                            for q in QUEUES]
    return app


def check_celery(spec: ExecutorSpec, timeout_s: float = 5.0) -> list[str]:
    """Before any run: the broker answers and some worker listens, else one message naming what is missing
    (a run with no worker would wait forever). Returns the workers' names."""
    url = broker_url(spec)
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or (5672 if "amqp" in parts.scheme else 6379)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise AutointerpError(f"cannot reach the Celery broker {shown(url)} (executor.broker): "
                              f"{exc.strerror or exc}") from None
    app = celery_app(spec)
    try:
        replies = app.control.ping(timeout=timeout_s) or []
    except Exception as exc:  # a broker that refuses us (password, protocol): say which
        raise AutointerpError(f"the Celery broker {shown(url)} (executor.broker) refused: {exc}") from None
    finally:
        app.close()
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        raise AutointerpError(f"no Celery worker answers on {shown(url)} (executor.broker): start one with "
                              f"`celery -A orchestration.worker worker -Q {','.join(QUEUES)} -c 1`")
    return workers


def distributed_job(job_name: str, config_path: str) -> dg.JobDefinition:
    """The job, rebuilt the same way in the CLI and in every worker (`build_reconstructable_job` points here),
    with the celery executor. The per-run settings (--layers, --explainer) travel in the run config."""
    from dagster_celery import celery_executor

    from orchestration.definitions import ASSETS, CHECKS, resources
    from orchestration.jobs import JOBS

    defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, resources=resources(config_path, llms=WORKER_LLMS),
                          jobs=JOBS, executor=celery_executor)
    return defs.resolve_job_def(job_name)


def reconstructable_job(job_name: str, config_path: str) -> Any:
    return dg.build_reconstructable_job("orchestration.executors", "distributed_job",
                                        reconstructable_args=(job_name, config_path))
