"""`autointerp status`: what is recorded, explained and scored, what is stale, and how each stage last ran."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from autointerp.config import Config
from autointerp.errors import AutointerpError, StoreError
from autointerp.store import Store
from autointerp.subject import Subject
from orchestration.jobs import JOBS


def collect(config: Config, store: Store, instance: Any, model: str | None = None) -> dict[str, Any]:
    layers = layer_status(store, model)
    revisions = registered_revisions(store)
    names = sorted(set(revisions.model) | {m.name for m in config.models} if model is None else {model})
    models = []
    for name in names:
        known = revisions[revisions.model == name]
        latest = str(known.revision.iloc[0]) if len(known) else None
        current, problem = _current_revision(config, name)
        mine = layers[(layers.model == name)]
        stale_layers = sorted(set(mine[mine.revision != latest].layer) - set(mine[mine.revision == latest].layer))
        models.append({
            "model": name, "latest_revision": latest, "current_revision": current, "problem": problem,
            # the model's files changed since it was last registered: every partition is stale
            "stale": bool(current and latest and current != latest),
            "stale_layers": [int(x) for x in stale_layers],  # recorded for an older revision, not the latest
            "revisions": [{"revision": str(r.revision), "registered_at": str(r.registered_at), "units": r.units}
                          for r in known.itertuples()],
            "layers": [_layer_row(r) for r in mine[mine.revision == latest].itertuples()] if latest else [],
            "device": _device(config, name),
        })
    return {"store": str(store), "models": models, "last_runs": _last_runs(instance) if instance else []}


def _layer_row(r: Any) -> dict[str, Any]:
    return {"layer": int(r.layer), "recorded": int(r.recorded), "explained": int(r.explained),
            "simulated": int(r.simulated), "scored": int(r.scored),
            # units whose explanation is in the search index, and whose output side (unit_logits) is computed
            "searchable": int(r.searchable), "writes": int(r.writes),
            **{name: None if pd.isna(value) else round(float(value), 4)
               for name, value in (("mean_score", r.mean_score), ("mean_detection", r.mean_detection),
                                   ("mean_fuzzing", r.mean_fuzzing), ("mean_intruder", r.mean_intruder))}}


def _current_revision(config: Config, name: str) -> tuple[str | None, str | None]:
    """The configured model's revision now (its files' hash or Hub commit); None for a model not configured."""
    spec = next((m for m in config.models if m.name == name), None)
    if spec is None:
        return None, None
    try:
        return Subject.of(spec, config.base_dir).revision, None
    except AutointerpError as exc:
        return None, str(exc)


def _device(config: Config, name: str) -> str | None:
    """Where this model records on this machine: its `device` key and what that resolves to here (or why it cannot)."""
    from autointerp.devices import describe_device, resolve_device

    spec = next((m for m in config.models if m.name == name), None)
    if spec is None:
        return None
    try:
        return f"{spec.device} -> {describe_device(resolve_device(spec.device, f'model {name!r}: device'))}"
    except AutointerpError as exc:
        return f"{spec.device} -> unavailable: {exc}"


def _last_runs(instance: Any) -> list[dict[str, Any]]:
    import dagster as dg

    runs = []
    for job in JOBS:
        [last] = instance.get_runs(filters=dg.RunsFilter(job_name=job.name), limit=1) or [None]
        if last is None:
            runs.append({"job": job.name, "status": "never run"})
            continue
        record = instance.get_run_record_by_id(last.run_id)
        partition = last.tags.get("dagster/partition") or (
            f"{last.tags.get('dagster/asset_partition_range_start')}...{last.tags.get('dagster/asset_partition_range_end')}"
            if "dagster/asset_partition_range_start" in last.tags else "")
        runs.append({"job": job.name, "status": last.status.value, "run_id": last.run_id, "partition": partition,
                     "started": str(record.start_time and pd.Timestamp(record.start_time, unit="s")),
                     "command": last.tags.get("autointerp/command", "")})
    return runs


def render(status: dict[str, Any]) -> str:
    lines = [f"store: {status['store']}"]
    for m in status["models"]:
        head = f"\n{m['model']} @ {m['latest_revision'] or 'nothing recorded'}"
        if m["stale"]:
            head += f"  STALE: the model's files are now {m['current_revision']}; re-record it (`autointerp run`)"
        if m["problem"]:
            head += f"  (cannot read its revision: {m['problem']})"
        lines.append(head)
        if m.get("device"):
            lines.append(f"  device: {m['device']}")
        if m["stale_layers"]:
            lines.append(f"  stale: layers {m['stale_layers']} recorded for an older revision, not this one")
        if m["layers"]:
            frame = pd.DataFrame(m["layers"])
            lines.append("  " + frame.to_string(index=False, na_rep="-").replace("\n", "\n  "))
    lines.append("\nlast runs:" + (f" unknown (the Dagster instance cannot be read: {status['last_runs_problem']})"
                                    if status.get("last_runs_problem") else ""))
    for r in status["last_runs"]:
        lines.append(f"  {r['job']:13s} {r['status']:10s} {r.get('partition', ''):18s} {r.get('started', '')}  "
                     f"{r.get('command', '')}".rstrip())
    return "\n".join(lines)


def status(config: Config, model: str | None, as_json: bool) -> None:
    from orchestration.cli.run import dagster_instance

    store = Store.from_home(read_only=True)  # a read command never writes, and works on read-only media
    try:
        with dagster_instance() as instance:
            found = collect(config, store, instance, model)
    except StoreError:
        raise
    except Exception as exc:  # the runs are an extra: a home without a usable Dagster instance still has a status
        found = collect(config, store, None, model)
        found["last_runs_problem"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    print(json.dumps(found, indent=2) if as_json else render(found))


def layer_status(store: Store, model: str | None = None) -> pd.DataFrame:
    """Per (model, revision, layer) recorded or explained: neurons recorded, explained, simulated, scored, the
    mean top-and-random score (over every explainer and simulator), the judges' mean AUROCs, the mean intruder
    accuracy (explanation-free), and how many units are searchable by meaning and have their output side."""
    if not store.exists():
        return pd.DataFrame(columns=["model", "revision", "layer", "recorded", "explained", "simulated", "scored",
                                     "mean_score", "mean_detection", "mean_fuzzing", "mean_intruder", "searchable",
                                     "writes"])
    where = "WHERE model = $model" if model else ""
    return store.query(f"""
        WITH recorded AS (SELECT model, revision, layer, count(*) AS recorded FROM neuron_stats {where} GROUP BY ALL),
             explained AS (SELECT model, revision, layer, count(DISTINCT neuron) AS explained FROM explanations
                           {where} GROUP BY ALL),
             simulated AS (SELECT model, revision, layer, count(DISTINCT neuron) AS simulated FROM simulations
                           {where} GROUP BY ALL),
             scored AS (SELECT model, revision, layer, count(DISTINCT neuron) AS scored,
                               avg(score_top_and_random) AS mean_score FROM scores {where} GROUP BY ALL),
             judged AS (SELECT model, revision, layer,
                               avg(auroc) FILTER (WHERE scorer LIKE 'detection:%') AS mean_detection,
                               avg(auroc) FILTER (WHERE scorer LIKE 'fuzzing:%') AS mean_fuzzing
                        FROM judge_scores {where} GROUP BY ALL),
             intruded AS (SELECT model, revision, layer, avg(accuracy) AS mean_intruder FROM intruder_scores {where}
                          GROUP BY ALL),
             embedded AS (SELECT model, revision, layer, count(DISTINCT neuron) AS searchable
                          FROM explanation_embeddings {where} GROUP BY ALL),
             writes AS (SELECT model, revision, layer, count(*) AS writes FROM unit_logits {where} GROUP BY ALL)
        SELECT model, revision, layer, coalesce(recorded, 0) AS recorded, coalesce(explained, 0) AS explained,
               coalesce(simulated, 0) AS simulated, coalesce(scored, 0) AS scored, mean_score, mean_detection,
               mean_fuzzing, mean_intruder, coalesce(searchable, 0) AS searchable, coalesce(writes, 0) AS writes
        FROM recorded FULL OUTER JOIN explained USING (model, revision, layer)
             FULL OUTER JOIN simulated USING (model, revision, layer) FULL OUTER JOIN scored USING (model, revision, layer)
             FULL OUTER JOIN judged USING (model, revision, layer) FULL OUTER JOIN intruded USING (model, revision, layer)
             FULL OUTER JOIN embedded USING (model, revision, layer) FULL OUTER JOIN writes USING (model, revision, layer)
        ORDER BY model, revision, layer""", {"model": model} if model else None)


def registered_revisions(store: Store) -> pd.DataFrame:
    """Every (model, revision) with when it was registered and where it came from, newest first per model."""
    if not store.exists():
        return pd.DataFrame(columns=["model", "revision", "source", "units", "registered_at"])
    return store.query("SELECT model, revision, source, units, registered_at FROM models "
                       "ORDER BY model, registered_at DESC")
