"""Impossible values that only the model can refuse are refused before anything runs, in one line; a run on
a stored revision that is no longer the model's says so."""

from __future__ import annotations

import time

import yaml

from autointerp.store import Store
from orchestration.cli import main


def _edit(project, **sections) -> None:
    raw = yaml.safe_load(project.read_text())
    raw.update(sections)
    project.write_text(yaml.safe_dump(raw))


def test_neuron_ids_beyond_the_layer_are_refused_before_recording(project, home, capsys):
    _edit(project, neurons={"select": "list", "ids": [1, 99999]})
    assert main(["run", "--model", "tiny-gpt2", "--layers", "1"]) == 2
    error = capsys.readouterr().err
    assert "neurons.ids [99999] are beyond the 128 units per layer of model 'tiny-gpt2' (0-127)" in error, error
    assert not (home / "data" / "autointerp.duckdb").exists()  # nothing ran


def test_train_sae_refuses_a_layer_the_model_lacks_and_an_out_that_is_a_file_at_once(project, home, capsys):
    (home / "taken").write_text("not a directory")
    for section, message in (({"model": "tiny-llama", "layers": [99]},
                              "sae_training.layers [99]: model 'tiny-llama' has layers 0-2"),
                             ({"model": "tiny-llama", "layers": [1], "out": "taken"},
                              "sae_training.out " + str(home / "taken") + " is a file")):
        _edit(project, sae_training={**section, "latents": 16, "k": 2, "tokens": 640})
        started = time.monotonic()
        assert main(["train-sae"]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, error
        assert time.monotonic() - started < 10  # before any training


def test_a_later_stage_on_a_model_whose_files_changed_says_the_stored_revision_is_stale(project, home, tiny_gpt2,
                                                                                        tmp_path, capsys):
    import shutil

    changed = tmp_path / "changed-gpt2"
    shutil.copytree(tiny_gpt2, changed)
    raw = yaml.safe_load(project.read_text())
    raw["models"] = [{"name": "tiny-gpt2", "source": str(changed)}]
    project.write_text(yaml.safe_dump(raw))
    assert main(["run", "--model", "tiny-gpt2", "--layers", "1", "--until", "record"]) == 0
    stored = Store.from_home().query("SELECT revision FROM models").revision[0]
    (changed / "config.json").write_text((changed / "config.json").read_text() + "\n")  # new bytes, new revision
    capsys.readouterr()
    assert main(["run", "--model", "tiny-gpt2", "--layers", "1", "--from", "explain"]) == 0
    err = capsys.readouterr().err
    assert f"warning: model 'tiny-gpt2' changed since it was recorded ({stored} stored" in err, err
