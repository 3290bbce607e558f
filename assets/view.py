"""The neuron viewer: a static HTML site per model, rebuilt from the store after scoring."""

import dagster as dg

from autointerp.store import Store, queries
from autointerp.viewer.site import build_site, site_dir
from orchestration.partitions import by_model, model_partitions
from resources import AutointerpSettings, DuckDBStore

VIEW_GROUP = "view"

# Every (model, layer) partition of the upstream tables feeds the model's one site.
_deps = [dg.AssetDep(key, partition_mapping=by_model) for key in ("scores", "judge_scores", "intruder_scores",
                                                                          "neuron_stats", "unit_logits")]


@dg.asset(partitions_def=model_partitions, deps=_deps, group_name=VIEW_GROUP, kinds={"html"},
          description="Static HTML site of the model's neurons: index sortable by score, a page per neuron with "
                      "explanations, scores, stats and token heat maps (real and simulated activations).")
def neuron_viewer(context: dg.AssetExecutionContext, settings: AutointerpSettings,
                  store: DuckDBStore) -> dg.MaterializeResult:
    model = context.partition_key
    db = store.store()
    revision = queries.current_model(db, model)["revision"]
    rank_by = settings.load().scoring.rank_by
    index = build_site(db, model, site_dir(model, db.home), revision, rank_by=rank_by).resolve()
    context.log.info(f"viewer for {model}: {index.as_uri()}")
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(index)),
        "url": dg.MetadataValue.url(index.as_uri()),
        "revision": revision,
        "neurons": len(list((index.parent / "neurons").glob("*.html"))),
        "explained": explained_count(db, model, revision),
        "ranked_by": " + ".join(rank_by),
    })


def explained_count(store: Store, model: str, revision: str) -> int:
    return int(store.query("SELECT count(DISTINCT (layer, neuron)) AS n FROM explanations "
                           "WHERE model = ? AND revision = ?", [model, revision]).n[0])
