"""Which assets make each stage of `autointerp run`: the one table the jobs' selections, `JOB_OF` and the CLI's
`--from`/`--until` choices derive from. Dagster-free, so the CLI parses its arguments without importing it."""

# Each stage and the assets it materializes, in pipeline order.
STAGES: dict[str, tuple[str, ...]] = {
    "record": ("activation_records", "neuron_stats", "unit_logits"),  # unit_logits: the weights' logit lens
    "explain": ("explanations",),
    "simulate": ("simulations",),
    # the paper's score, the judges' (scoring.judges), the explanations embedded for search by meaning, and the
    # explanation-free intruder score (it reads only the records, but asks the judge LLM like the others)
    "score": ("scores", "judge_scores", "explanation_embeddings", "intruder_scores"),
}
# The stages that ask the LLM; they share one job, so a run over a layer range loads a local LLM once.
LLM_STAGES = ("explain", "simulate", "score")
