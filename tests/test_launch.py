"""How a distributed executor's launcher cuts a layer range into runs (orchestration/launch.py)."""

from orchestration.launch import split_range
from orchestration.partitions import range_tags


def test_a_layer_range_is_cut_into_runs_of_layers_per_run_layers():
    tags = {**range_tags("m", 2, 6), "autointerp/command": "x"}
    assert split_range(tags, 1) == [(f"{layer}|m", {"autointerp/command": "x"}) for layer in range(2, 7)]
    assert split_range(tags, 2) == [(None, {"autointerp/command": "x", **range_tags("m", 2, 3)}),
                                    (None, {"autointerp/command": "x", **range_tags("m", 4, 5)}),
                                    ("6|m", {"autointerp/command": "x"})]
    assert split_range(tags, 10) == [(None, tags)]
