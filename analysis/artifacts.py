"""Read the few run artifacts a report shows (sample grids, the sweep spec) through the MLflow client.

Presence is checked by listing the artifact folder first, so a run that never logged a file is reported as
"not logged" rather than raising half-way through a report.

    python -c "from analysis.artifacts import read_text; print(read_text('sqlite:///mlflow.db', 'RUN_ID', 'spec/spec.json'))"
"""
from __future__ import annotations

import os
import posixpath
import tempfile
from pathlib import Path

import numpy as np
from matplotlib.image import imread
from mlflow.tracking import MlflowClient

# a progress bar per downloaded sample grid would drown the verdict the CLI prints
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def has_artifact(client: MlflowClient, run_id: str, path: str) -> bool:
    folder = posixpath.dirname(path)
    return any(f.path == path for f in client.list_artifacts(run_id, folder or None))


def _fetch(tracking_uri: str, run_id: str, path: str, reader):
    client = MlflowClient(tracking_uri)
    if not has_artifact(client, run_id, path):
        return None
    with tempfile.TemporaryDirectory(prefix="specforce-report-") as dst:
        return reader(Path(client.download_artifacts(run_id, path, dst)))


def read_text(tracking_uri: str, run_id: str, path: str) -> str | None:
    return _fetch(tracking_uri, run_id, path, lambda p: p.read_text())


def read_image(tracking_uri: str, run_id: str, path: str) -> np.ndarray | None:
    """RGB(A) array of a logged PNG, or None when the run has no such artifact."""
    return _fetch(tracking_uri, run_id, path, lambda p: imread(p, format="png"))
