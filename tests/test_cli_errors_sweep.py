"""`specforce sweep`, `submit`, `status`, `logs`, `report` and `ui` refuse every bad spec, flag, store and address in
one line, before any work starts, and leave nothing behind (the contract: sweeps/errors.py; the check each row
passes: tests/refusal_helpers.py). "{in}" is the inputs folder, "{port}" a free port, "{busy}" a port someone listens
on; argparse's own usage errors are rows here too.

    .venv/bin/python -m pytest tests/test_cli_errors_sweep.py -q
"""
from __future__ import annotations

import pytest

from refusal_helpers import Row, busy_port, check_refusal, cuda, inputs  # noqa: F401 (fixtures)

ROWS = [
    # ------------------------------------------------------------------------------------------------ sweep
    Row("sweep-spec-missing", ["sweep", "{in}/nope.yaml"], "sweep spec '{in}/nope.yaml': does not exist (shipped specs:"),
    Row("sweep-yaml-syntax", ["sweep", "{in}/spec_syntax.yaml", "--dry-run"], "{in}/spec_syntax.yaml: line 4, column 5: invalid YAML"),
    Row("sweep-yaml-python-tag", ["sweep", "{in}/spec_evil.yaml", "--dry-run"], "python/object/apply:os.system"),
    Row("sweep-preset-typo", ["sweep", "{in}/spec_preset.yaml", "--dry-run"], "base.model.preset: unknown preset, did you mean 'jit-tiny'?"),
    Row("sweep-dataset-typo", ["sweep", "{in}/spec_dataset.yaml", "--dry-run"], "base.data.name: unknown dataset"),
    Row("sweep-grid-unknown-key", ["sweep", "{in}/spec_gridkey.yaml", "--dry-run"], "grid.model.pach_size: unknown config key"),
    Row("sweep-grid-bad-value", ["sweep", "{in}/spec_gridval.yaml", "--dry-run"], "model.preset: unknown preset, did you mean 'jit-small'?"),
    Row("sweep-search-metric", ["sweep", "{in}/spec_metric.yaml", "--dry-run"], "search.metric: 'eval/fid' is never reported"),
    Row("sweep-too-many-cpus", ["sweep", "{in}/spec_cpus.yaml", "--num-cpus", "1", "--dry-run"], "resources: one trial needs 2 CPUs"),
    Row("sweep-gpu-on-cpu", ["sweep", "{in}/spec_gpu.yaml", "--dry-run"], "resources.use_gpu: this machine has no CUDA GPU", skip=cuda),
    Row("sweep-base-config-missing", ["sweep", "{in}/spec_baseconfig.yaml", "--dry-run"], "base_config: 'no_such_base.yaml' not found"),
    Row("sweep-root-missing", ["sweep", "{in}/spec_root.yaml", "--dry-run"], "base.data.root: folder does not exist"),
    Row("sweep-escape-grid-vs-workers", ["sweep", "{in}/spec_grid_workers.yaml", "--num-cpus", "4", "--dry-run"],
        "grid trial {'optim.batch_size': 17}: resources.workers: does not divide optim.batch_size 17 (got 2)"),
    Row("sweep-escape-grid-snr-fit", ["sweep", "{in}/spec_grid_snr.yaml", "--dry-run"],
        'grid trial {"spectral.enabled": true, "spectral.schedule": "snr"}: spectral.r0: the snr schedule fits'),
    Row("sweep-escape-int-step", ["sweep", "{in}/spec_int_step.yaml", "--dry-run"], "search.space.optim.batch_size: "
        "an int dimension needs whole low, high and step"),
    Row("sweep-escape-float-low", ["sweep", "{in}/spec_float_low.yaml", "--dry-run"], "search.space.spectral.kappa "
        "value {'spectral.kappa': 0.0, 'spectral.enabled': True}: spectral.kappa: Input should be greater than 0"),
    Row("sweep-num-cpus-zero", ["sweep", "{in}/spec.yaml", "--num-cpus", "0"], "argument --num-cpus: must be a positive integer (got '0')"),
    Row("sweep-tracking-bogus", ["sweep", "{in}/spec.yaml", "--tracking-uri", "bogus://x"], "--tracking-uri: unknown tracking store scheme"),
    Row("sweep-tracking-file", ["sweep", "{in}/spec.yaml", "--tracking-uri", "file:./mlruns"], "--tracking-uri: the file: store is deprecated"),
    Row("sweep-tracking-bare-path", ["sweep", "{in}/spec.yaml", "--tracking-uri", "mlruns"], "a bare path is MLflow's deprecated file store"),
    Row("sweep-storage-is-file", ["sweep", "{in}/spec.yaml", "--storage", "{in}/a_file"], "--storage: exists and is a file"),
    Row("sweep-storage-scheme", ["sweep", "{in}/spec.yaml", "--storage", "ftp://host/x"], "--storage: unknown storage scheme 'ftp'"),
    Row("sweep-resume-nothing", ["sweep", "{in}/spec.yaml", "--resume", "--storage", "{in}/empty_storage"], "--resume: nothing to resume at {in}/empty_storage/errs"),
    Row("sweep-resume-edited-spec", ["sweep", "{in}/spec_edited.yaml", "--resume", "--storage", "{in}/storage"], "base.optim.lr: 0.001 -> 0.002; grid.seed: (absent) -> [0, 1]"),
    # ----------------------------------------------------------------------------------------------- report
    Row("report-store-missing", ["report", "--experiment", "x", "--tracking-uri", "sqlite:///{in}/no/such/dir/mlflow.db"], "--tracking-uri: no MLflow store at {in}/no/such/dir/mlflow.db"),
    Row("report-store-not-sqlite", ["report", "--experiment", "x", "--tracking-uri", "sqlite:///{in}/notadb.db"], "is not an SQLite database"),
    Row("report-tracking-file", ["report", "--experiment", "x", "--tracking-uri", "file:///tmp/mlruns"], "--tracking-uri: the file: store is deprecated"),
    Row("report-out-is-file", ["report", "--experiment", "x", "--tracking-uri", "sqlite:///{in}/store/mlflow.db", "--out", "{in}/a_file"], "--out: exists and is a file"),
    Row("report-experiment-missing", ["report", "--experiment", "nosuch", "--tracking-uri", "sqlite:///{in}/store/mlflow.db", "--no-log", "--out", "{in}/rep"], "nosuch"),
    # --------------------------------------------------------------------------------------------------- ui
    Row("ui-port-taken", ["ui", "--port", "{busy}"], "--port: 127.0.0.1:{busy} is not available"),
    Row("ui-port-zero", ["ui", "--port", "0"], "argument --port: must be a TCP port in 1..65535 (got '0')"),
    Row("ui-public-host", ["ui", "--host", "0.0.0.0"], "--host: the MLflow UI has no authentication"),
    Row("ui-tracking-bogus", ["ui", "--tracking-uri", "bogus://x"], "--tracking-uri: unknown tracking store scheme"),
    # ----------------------------------------------------------------------------------------------- submit
    Row("submit-no-storage", ["submit", "smoke.yaml", "--address", "http://127.0.0.1:{port}"], "--storage: required for a submitted sweep"),
    Row("submit-relative-storage", ["submit", "smoke.yaml", "--address", "http://127.0.0.1:{port}", "--storage", "ray_results"], "--storage: a relative path would resolve inside the job's temporary working dir"),
    Row("submit-storage-scheme", ["submit", "smoke.yaml", "--address", "http://127.0.0.1:{port}", "--storage", "ftp://h/x"], "--storage: unknown storage scheme"),
    Row("submit-sqlite-remote", ["submit", "smoke.yaml", "--address", "http://10.1.2.3:8265", "--storage", "s3://b/x", "--tracking-uri", "sqlite:///{in}/m.db"], "cannot be reached from the remote cluster"),
    Row("submit-address-not-url", ["submit", "smoke.yaml", "--address", "127.0.0.1:6379", "--storage", "s3://b/x", "--tracking-uri", "http://10.0.0.1:5000"], "expected the Ray dashboard URL"),
    Row("submit-unreachable", ["submit", "smoke.yaml", "--address", "http://127.0.0.1:{port}", "--storage", "{in}/st"], "Ray dashboard not reachable"),
    Row("submit-spec-outside-project", ["submit", "{in}/spec.yaml", "--address", "http://127.0.0.1:{port}", "--storage", "{in}/st"], "Ray dashboard not reachable"),  # a spec outside the project travels with the job: checked up to the network
    Row("submit-spec-missing", ["submit", "nope.yaml", "--address", "http://127.0.0.1:{port}", "--storage", "/abs"], "sweep spec 'nope.yaml': does not exist"),
    Row("status-unreachable", ["status", "raysubmit_x", "--address", "http://127.0.0.1:{port}"], "Ray dashboard not reachable"),
    Row("logs-unreachable", ["logs", "raysubmit_x", "--address", "http://127.0.0.1:{port}"], "Ray dashboard not reachable"),
    # -------------------------------------------------------------------------------------------- argparse
    Row("unknown-command", ["trian", "x.yaml"], "invalid choice: 'trian'"),
    Row("train-no-config", ["train"], "the following arguments are required: config"),
    Row("unknown-flag", ["sweep", "{in}/spec.yaml", "--dryrun"], "unrecognized arguments: --dryrun"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_refused_in_one_line_and_leaves_nothing(row, inputs, tmp_path, busy_port, monkeypatch, capsys):
    check_refusal(row, inputs, tmp_path, busy_port, monkeypatch, capsys)
