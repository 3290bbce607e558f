"""Compare two stores of the same run: the same explanations, scores (|diff| < 1e-6) and records.

    .venv/bin/python scripts/compare_stores.py OLD.duckdb NEW.duckdb

Used to show that a change of shape changed no result (e.g. the main job before and after a refactor).
"""

import sys

import duckdb
import numpy as np

SCORES = ("SELECT layer, neuron, sample, explanation, score_top_and_random, score_random_only, rsquared, "
          "absolute_dev_explained FROM scores ORDER BY layer, neuron, sample")
RECORDS = "SELECT count(*), sum(list_sum(activations)) FROM activation_records"
SIMULATIONS = "SELECT layer, neuron, kind, excerpt_id, simulated FROM simulations ORDER BY layer, neuron, kind, excerpt_id"


def main(old_path: str, new_path: str) -> None:
    old, new = (duckdb.connect(p, read_only=True) for p in (old_path, new_path))
    a, b = old.execute(SCORES).df(), new.execute(SCORES).df()
    print(f"{len(a)} scored explanations before, {len(b)} after")
    keys = ["layer", "neuron", "sample", "explanation"]
    assert len(a) == len(b) and (a[keys].values == b[keys].values).all(), "the explanations differ"
    print("explanations identical: True")
    for column in ("score_top_and_random", "score_random_only", "rsquared", "absolute_dev_explained"):
        diff = np.abs(a[column].astype(float) - b[column].astype(float)).max()
        print(f"max |diff| {column}: {diff:.2e}")
        assert diff < 1e-6, column
    (rows_a, sum_a), (rows_b, sum_b) = old.execute(RECORDS).fetchone(), new.execute(RECORDS).fetchone()
    print(f"activation_records: {rows_a} rows (sum {sum_a:.6g}) before, {rows_b} rows (sum {sum_b:.6g}) after")
    assert rows_a == rows_b and abs(sum_a - sum_b) <= 1e-6 * abs(sum_a)
    sa, sb = old.execute(SIMULATIONS).df(), new.execute(SIMULATIONS).df()
    diff = max((np.abs(np.asarray(x) - np.asarray(y)).max() for x, y in zip(sa.simulated, sb.simulated)), default=0.0)
    print(f"{len(sa)} simulated excerpts; max |diff| of simulated values: {diff:.2e}")
    assert len(sa) == len(sb) and diff < 1e-6


if __name__ == "__main__":
    main(*sys.argv[1:3])
