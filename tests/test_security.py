"""Safety defaults: safe YAML, weights-only checkpoints, names that cannot escape storage, no secrets in params."""
import os
import pickle

import pytest
import torch

from sweeps.spec import SpecError, load_spec
from sweeps.mlflow_writer import param_value, redact
from trainers.training.checkpoint import load_checkpoint, save_checkpoint


def test_spec_yaml_cannot_construct_objects(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\ngrid: {{seed: [0]}}\n")
    with pytest.raises(Exception) as err:
        load_spec(path)
    assert "python/object" in str(err.value)
    assert not marker.exists()


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_checkpoints_load_weights_only(tmp_path):
    good = save_checkpoint({"model": {"w": torch.ones(2)}, "images_seen": 5, "config": {}}, tmp_path / "ok.pt")
    assert load_checkpoint(good)["images_seen"] == 5
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "images_seen": 0, "config": {}, "payload": _Boom()}, evil)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(evil)
    with pytest.raises(ValueError, match="not a specforce checkpoint"):
        torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
        load_checkpoint(tmp_path / "other.pt")


@pytest.mark.parametrize("name", ["../../etc", "/tmp/x", "a/b", ".."])
def test_sweep_names_cannot_escape_storage(tmp_path, name):
    path = tmp_path / "s.yaml"
    path.write_text(f"name: '{name}'\ngrid: {{seed: [0]}}\n")
    with pytest.raises(SpecError, match="is not a valid name"):
        load_spec(path)


def test_secrets_never_reach_mlflow_params():
    assert param_value("hunter2", "data.options.api_token") == "***"
    assert param_value({"password": "x", "n": 1}, "data.options") == '{"password": "***", "n": 1}'
    uri = param_value("postgresql://mlflow:s3cr3t@db:5432/mlflow", "data.root")
    assert "s3cr3t" not in uri and uri == "postgresql://mlflow:***@db:5432/mlflow"
    assert redact("model.patch_size", 8) == 8  # ordinary values untouched
    assert param_value(64, "model.tokens") == "64"  # a token count is not a secret
