"""A Celery worker's app: `celery -A orchestration.worker worker -Q record,explain,dagster -c 1 -n NAME@%h`.

Built from the `executor:` section of $AUTOINTERP_CONFIG (the same file the `autointerp` CLI reads, so both
sides agree on broker, queues and acknowledgement), with dagster-celery's step task registered. The worker needs
the environment the steps read: AUTOINTERP_CONFIG, AUTOINTERP_HOME (or the store's settings) and the Dagster
instance's secrets (DAGSTER_PG_PASSWORD), and this repository on PYTHONPATH.
"""

import os

from dagster_celery.tasks import create_task

import orchestration.executors
from autointerp.config import load_config
from autointerp.llm import LoadedLLMs
from orchestration.executors import URL_ENV, broker_url, celery_app

_spec = load_config().executor
if _spec.kind != "celery":
    raise SystemExit(f"{load_config().path}: executor.kind is '{_spec.kind}'; a Celery worker needs kind: celery")
os.environ[URL_ENV] = broker_url(_spec)  # a run config may name the broker by this variable (executors.py)
# Made before the pool forks: each pool process fills its own copy and keeps it across the steps it runs.
orchestration.executors.WORKER_LLMS = LoadedLLMs()
app = celery_app(_spec)
execute_plan = create_task(app)
