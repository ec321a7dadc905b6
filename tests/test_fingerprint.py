"""The resolved-spec fingerprint: `--resume` with an edited spec is refused with the keys that changed.

    .venv/bin/python -m pytest tests/test_fingerprint.py -q
"""
from __future__ import annotations

import json

import pytest

from sweeps.fingerprint import FILE_NAME, changed_keys, check_or_record, fingerprint, resolved_spec
from sweeps.spec import SpecError, spec_from_dict

SPEC = {"name": "fp", "base": {"model": {"preset": "jit-tiny", "patch_size": 8},
                                "optim": {"batch_size": 32, "lr": 1e-3, "total_images": 3200}},
        "grid": {"spectral.enabled": [False, True]}}


def _spec(**changes):
    tree = json.loads(json.dumps(SPEC))
    for key, value in changes.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return spec_from_dict(tree)


def test_resolved_spec_fills_defaults_and_skips_scheduling_keys():
    flat = resolved_spec(_spec())
    assert flat["base.optim.lr"] == 1e-3 and flat["base.spectral.kappa"] == 30.0  # defaults filled in
    assert flat["grid.spectral.enabled"] == [False, True]  # grid keys kept whole
    assert not any(k.startswith(("description", "max_concurrent_trials", "max_failures")) for k in flat)
    # spelling a default out, or changing how many trials run at once, is the same experiment
    assert fingerprint(resolved_spec(_spec(**{"base/spectral": {"kappa": 30.0}}))) == fingerprint(flat)
    assert fingerprint(resolved_spec(_spec(max_concurrent_trials=1, description="x"))) == fingerprint(flat)
    assert fingerprint(resolved_spec(_spec(**{"base/optim": {**SPEC["base"]["optim"], "lr": 2e-3}}))) != \
        fingerprint(flat)


def test_resume_with_an_edited_spec_is_refused_naming_each_changed_key(tmp_path):
    sweep_dir = tmp_path / "fp"
    check_or_record(_spec(), sweep_dir, resume=False)
    assert json.loads((sweep_dir / FILE_NAME).read_text())["fingerprint"] == fingerprint(resolved_spec(_spec()))
    check_or_record(_spec(), sweep_dir, resume=True)  # same spec: resumes
    edited = _spec(**{"base/optim": {**SPEC["base"]["optim"], "lr": 2e-3}, "base/data": {"image_size": 64},
                      "grid": {"spectral.enabled": [False, True], "seed": [0, 1]}})
    with pytest.raises(SpecError) as err:
        check_or_record(edited, sweep_dir, resume=True)
    text = str(err.value)
    assert text.startswith(f"--resume: the spec differs from the one sweep 'fp' was started with ({sweep_dir}/{FILE_NAME}): ")
    assert "base.data.image_size: 32 -> 64; base.optim.lr: 0.001 -> 0.002; grid.seed: (absent) -> [0, 1]." in text
    # the refusal wrote nothing: the record is still the original spec's
    assert json.loads((sweep_dir / FILE_NAME).read_text())["fingerprint"] == fingerprint(resolved_spec(_spec()))


def test_options_added_by_a_newer_version_at_their_default_never_block_a_resume():
    old = resolved_spec(_spec())
    new = dict(old)
    new["base.model.some_future_flag"] = None  # a key the old record lacks ...
    new["seeds"] = None
    assert changed_keys({k: v for k, v in old.items() if k != "seeds"}, new) == []  # ... at its default: no change
    new["base.optim.lr"] = 0.5
    assert changed_keys(old, new) == ["base.optim.lr: 0.001 -> 0.5"]


def test_resume_without_a_record_records_the_spec(tmp_path, capsys):
    check_or_record(_spec(), tmp_path / "fp", resume=True)
    assert "is missing" in capsys.readouterr().err
    assert (tmp_path / "fp" / FILE_NAME).is_file()


def test_uri_storage_goes_through_pyarrow(tmp_path):
    uri = f"file://{tmp_path}/remote/fp"  # the same code path as s3:// or gs://
    check_or_record(_spec(), uri, resume=False)
    assert (tmp_path / "remote" / "fp" / FILE_NAME).is_file()
    with pytest.raises(SpecError, match=r"base.optim.lr: 0.001 -> 0.002"):
        check_or_record(_spec(**{"base/optim": {**SPEC["base"]["optim"], "lr": 2e-3}}), uri, resume=True)


@pytest.mark.parametrize("storage, expected_fs, expected_path", [
    ("s3://bucket/specforce/", "S3FileSystem", "bucket/specforce/fp"),
    ("gs://bucket/specforce", "GcsFileSystem", "bucket/specforce/fp"),
    ("/data/ray_results", "LocalFileSystem", "/data/ray_results/fp"),
])
def test_sweep_location_keeps_a_storage_uri_parseable(storage, expected_fs, expected_path):
    import pyarrow.fs

    from sweeps.runner import sweep_location

    location = sweep_location(storage, "fp")
    assert location == f"{storage.rstrip('/')}/fp"
    query = "?region=us-east-1" if location.startswith("s3://") else ""  # no network: pyarrow only parses
    fs, path = pyarrow.fs.FileSystem.from_uri(location + query)
    assert (type(fs).__name__, path) == (expected_fs, expected_path)


def test_analysis_counts_only_where_it_decides_which_trials_run(tmp_path):
    # a fixed grid: the primary metric only changes the report, so a resume may change it
    fixed = _spec(analysis={"primary": "eval/denoise_loss"})
    assert fingerprint(resolved_spec(fixed)) == fingerprint(resolved_spec(_spec(analysis={"primary": "eval/fd_pixel"})))
    # adaptive seeds: the primary metric and min_effect decide when the sweep stops, so a change is refused
    # before Ray starts, naming the key
    adaptive = {"seeds": {"start": 2, "step": 1, "max": 4}, "analysis": {"primary": "eval/denoise_loss"}}
    check_or_record(_spec(**adaptive), tmp_path / "fp", resume=False)
    with pytest.raises(SpecError, match=r"analysis.min_effect: null -> 0.05"):
        check_or_record(_spec(**{**adaptive, "analysis": {"primary": "eval/denoise_loss", "min_effect": 0.05}}),
                        tmp_path / "fp", resume=True)
