"""What changes when a report holds thousands of pairs: the sign-flip test's sampled form, its floor, the dots of the
metric-vs-patch figure, and the benchmark's SQL replication of a logged store (speed itself: benchmarks/bench_report).

    .venv/bin/python -m pytest tests/test_report_scale.py -q
"""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.intervals import SIGN_FLIP_DRAWS, sign_flip_floor, sign_flip_p_value
from analysis.plots import MAX_DOTS, _at_most


def test_sign_flip_floor_does_not_overflow_past_a_thousand_pairs():
    # 2 / 2**1250 once raised OverflowError: a 10,000-run report (1,250 pairs per patch size) could not be built
    assert sign_flip_floor(1250) == 0.0 and sign_flip_floor(3) == 0.25 and sign_flip_floor(1) == 1.0
    assert math.isnan(sign_flip_floor(0))


@pytest.mark.parametrize("n, shift", [(40, 0.3), (300, 0.1), (1250, 0.06)])
def test_sampled_sign_flip_agrees_with_the_t_test_at_large_n(n, shift):
    d = np.random.default_rng(n).normal(shift, 1.0, n)
    p = sign_flip_p_value(d)
    assert p == sign_flip_p_value(d)  # fixed seed: the same report twice prints the same p
    # the permutation distribution of the mean is close to normal here; Monte-Carlo SE <= 0.0056 at 8,192 draws
    assert p == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, abs=0.02)


def test_sampled_sign_flip_counts_like_the_definition():
    # every difference equal and positive: only the all-plus and all-minus patterns reach |mean|, so k is the number
    # of drawn patterns that are all one sign (none, at 40 pairs) and p = (k + 1) / (N + 1)
    assert sign_flip_p_value(np.ones(40)) == pytest.approx(1 / (SIGN_FLIP_DRAWS + 1))
    # a zero mean: every pattern reaches it
    assert sign_flip_p_value(np.r_[np.ones(20), -np.ones(20)]) == 1.0


def test_metric_vs_patch_draws_at_most_max_dots_per_patch_and_keeps_small_arms_whole():
    frame = pd.DataFrame({"patch_size": [8] * 500 + [4] * 7, "value": np.arange(507.0)})
    dots = _at_most(frame, MAX_DOTS)
    assert dots.groupby("patch_size").size().to_dict() == {8: MAX_DOTS, 4: 7}
    assert dots.equals(_at_most(frame, MAX_DOTS))  # fixed seed


def test_bench_replication_gives_distinct_runs_seeds_and_names(tmp_path):
    from analysis.runs import load_tables
    from synthetic_sweep import log_synthetic_sweep
    from benchmarks.bench_report import replicate

    uri = f"sqlite:///{tmp_path}/bench.db"
    log_synthetic_sweep(uri, "bench", seeds=(0, 1), effects={8: -6.0})
    replicate(tmp_path / "bench.db", 3, 2)
    tables = load_tables("bench", uri)
    runs = tables.runs
    assert len(runs) == 3 * 8 and runs["run_id"].is_unique and runs["run_name"].is_unique
    assert sorted(runs["seed"].unique()) == list(range(6)) and len(tables.sweeps) == 1
    assert (runs.groupby(["patch_size", "sf"]).size() == 6).all()
    assert tables.history.groupby("run_id").size().nunique() == 1  # every copy carries the whole history
