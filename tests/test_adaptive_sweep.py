"""Adaptive seeds (spec `seeds:`): validation and planned rounds (fast), and a real sweep on embedded Ray + sqlite
MLflow that is killed after round 1 and resumed (slow): round 2 runs, round 1 is never rerun.

The slow test uses `spectral.schedule: none` (SF is the identity filter), so the SF and baseline runs of a seed are
the same computation and every delta is exactly 0: the interval never excludes 0, and the sweep deterministically
goes to round 2 (its last) — the rounds, records and resume are what is under test, not the science.
"""
from __future__ import annotations

import json

import pytest

from sweep_helpers import client_for, kill_group, run_cli, start_cli, sweep_runs, trial_runs, wait_for, write_spec
from sweeps.spec import SpecError, describe_trials, load_spec, round_plans, round_seeds, spec_from_dict

ADAPTIVE = {"start": 2, "step": 1, "max": 3}


def _tree(**changes):
    tree = {"name": "a", "base": {"model": {"preset": "jit-tiny", "patch_size": 8},
                                  "data": {"name": "grf", "image_size": 32}},
            "grid": {"model.patch_size": [8, 4], "spectral.enabled": [False, True]},
            "seeds": {"start": 3, "step": 2, "max": 12}}
    tree.update(changes)
    return tree


def test_rounds_add_seeds_to_every_arm_with_grid_trial_ids():
    spec = spec_from_dict(_tree())
    assert spec.seeds.looks == (3, 5, 7, 9, 11, 12)
    assert round_seeds(spec, 1) == [0, 1, 2] and round_seeds(spec, 2) == [3, 4] and round_seeds(spec, 6) == [11]
    plans = round_plans(spec, 2)
    assert len(plans) == 8
    assert plans[0].overrides == {"model.patch_size": 8, "spectral.enabled": False, "seed": 3}
    assert plans[0].config.seed == 3
    # the same trial id as the fixed-seed grid {patch_size, enabled, seed} gives that trial
    fixed = spec_from_dict(_tree(seeds=None, grid={"model.patch_size": [8], "spectral.enabled": [False],
                                                   "seed": [3]}))
    from sweeps.spec import grid_plans

    assert plans[0].trial_id == grid_plans(fixed)[0].trial_id
    shifted = spec_from_dict(_tree(seeds={"start": 2, "step": 1, "max": 3, "first_seed": 10}))
    assert round_seeds(shifted, 1) == [10, 11] and round_seeds(shifted, 2) == [12]
    with pytest.raises(SpecError, match=r"round 7: the spec plans rounds 1..6"):
        round_seeds(spec, 7)


def test_dry_run_shows_the_rounds_of_the_shipped_adaptive_demo(tmp_path):
    spec = load_spec("sweeps/configs/demo_adaptive.yaml")
    lines = describe_trials(spec)
    assert lines[0].startswith("adaptive up to 6 rounds, seeds per arm 3, 5, 7, 9, 11, 12")
    rounds = [line for line in lines if line.startswith("round ")]
    assert rounds == ["round 1   seeds [0, 1, 2]: 12 trials (phase grid-r1)",
                      "round 2   seeds [3, 4]: 8 trials (phase grid-r2)",
                      "round 3   seeds [5, 6]: 8 trials (phase grid-r3)",
                      "round 4   seeds [7, 8]: 8 trials (phase grid-r4)",
                      "round 5   seeds [9, 10]: 8 trials (phase grid-r5)",
                      "round 6   seeds [11]: 4 trials (phase grid-r6)"]
    assert sum(line.startswith("grid-r") for line in lines) == 48


@pytest.mark.parametrize("changes, message", [
    ({"grid": {"model.patch_size": [8, 4]}},
     "seeds: adaptive seeds need a grid that varies spectral.enabled over [false, true] "
     "(got grid.spectral.enabled: None)"),
    ({"grid": {"spectral.enabled": [True]}},
     "seeds: adaptive seeds need a grid that varies spectral.enabled over [false, true] "
     "(got grid.spectral.enabled: [True])"),
    ({"grid": {"spectral.enabled": [False, True], "seed": [0, 1]}},
     "grid.seed: [0, 1] listed together with 'seeds'; adaptive seeds choose the seeds of each round"),
    ({"grid": {"spectral.enabled": [False, True], "spectral.kappa": [10.0, 30.0]}},
     "grid.spectral.kappa: adaptive seeds pair each SF run with the baseline of its seed"),
    ({"seeds": {"start": 5, "step": 2, "max": 4}}, "seeds: max=4 must be at least start=5"),
    ({"seeds": {"start": 1, "step": 2, "max": 4}}, "seeds.start: Input should be greater than or equal to 2"),
    ({"seeds": {"start": 3, "step": 2, "max": 12, "stop": "never"}}, "seeds.stop: Input should be 'decided'"),
    ({"base": {"model": {"preset": "jit-tiny"}, "data": {"name": "grf", "image_size": 32},
               "eval": {"denoise_loss": False}}},
     "'eval/denoise_loss' is never reported by these trials"),
    ({"search": {"space": {"spectral.alpha": {"type": "float", "low": 0.5, "high": 4.0}}}},
     "seeds: adaptive seeds apply to a grid; a spec with a 'search' section cannot have them"),
])
def test_invalid_adaptive_specs_name_the_key(changes, message):
    with pytest.raises(SpecError) as err:
        spec_from_dict(_tree(**changes))
    assert message in str(err.value)


@pytest.mark.slow
def test_adaptive_sweep_killed_after_round_1_resumes_at_round_2(tmp_path):
    spec = write_spec(tmp_path / "adaptive.yaml", name="adaptive", grid={"spectral.enabled": [False, True]},
                      seeds=ADAPTIVE, base__spectral={"schedule": "none"},
                      base__optim={"batch_size": 32, "lr": 1e-3, "total_images": 1600, "ema_decays": [0.99]},
                      base__eval={"every_images": 0, "num_samples": 64, "batch_size": 64, "metrics": ["fd_pixel"],
                                  "denoise_batch": 32, "denoise_t_points": 10, "grid_size": 4})
    client = client_for(tmp_path)

    log = tmp_path / "first.log"

    def round_1_recorded():
        # the decision is recorded in MLflow first, then printed: wait for both, or the kill may fall between them
        if "[round 1] continuing after" not in log.read_text():
            return False
        runs = sweep_runs(client, "adaptive")
        return bool(runs) and runs[0].data.tags.get("specforce.adaptive.round") == "1"

    proc = start_cli(["sweep", str(spec), "--num-cpus", "2"], tmp_path, log)
    try:
        wait_for(round_1_recorded, 900, proc, "round 1 analysed")
    finally:
        kill_group(proc)  # the driver and its embedded Ray, no cleanup: round 2 may have started
    first = log.read_text()
    assert "[round 1] patch 8: +0 [+0, +0] undecided" in first
    round_1 = {r.data.tags["specforce.trial_id"]: r for r in trial_runs(client, "adaptive")
               if r.data.params["seed"] in ("0", "1")}
    assert len(round_1) == 4 and all(r.info.status == "FINISHED" for r in round_1.values())

    refused = start_cli(["sweep", str(spec)], tmp_path, tmp_path / "refused.log")
    assert refused.wait(timeout=120) == 2
    assert "already holds phase(s) ['grid-r1'" in (tmp_path / "refused.log").read_text()

    # the kill may come after a round-2 trial completed: resume must neither rerun it nor lose it (CI once saw Tune's
    # restored state lack such a trial, so that only 1 of round 2's 2 trials was counted)
    round_2_done = {r.data.tags["specforce.trial_id"] for r in trial_runs(client, "adaptive")
                    if r.data.params.get("seed") == "2" and r.info.status == "FINISHED"
                    and r.data.tags.get("specforce.status") == "completed"}
    out = run_cli(["sweep", str(spec), "--resume", "--num-cpus", "2"], tmp_path)
    seen = f"round-2 trials completed before the resume: {sorted(round_2_done)}\nfirst run:\n{first}\nresumed:\n{out}"
    assert "[adaptive] resuming: round(s) 1-1 finished and analysed, continuing at round 2" in out, seen
    assert "[grid-r1]" not in out and "[round 1" not in out, seen  # round 1 is never rerun, not even restored
    assert "[round 2] STOP (max reached)" in out and "sweep 'adaptive': 2 trials (0 failed)" in out, seen
    for trial_id in round_2_done:
        assert f"trial {trial_id} finished" not in out, seen
    if round_2_done:
        assert f"[grid-r2] {len(round_2_done)} of 2 trial(s) already completed in MLflow: not rerun" in out, seen
    if len(round_2_done) < 2:  # with both completed, no Tuner starts: the round is only analysed
        assert f"[grid-r2] {2 - len(round_2_done)} trial(s)" in out, seen

    runs = trial_runs(client, "adaptive")
    ids = [r.data.tags["specforce.trial_id"] for r in runs]
    assert len(ids) == 6 == len(set(ids)), seen  # 2 arms x 3 seeds, no duplicated run
    assert sorted((r.data.params["spectral.enabled"], r.data.params["seed"]) for r in runs) == \
        [(arm, seed) for arm in ("False", "True") for seed in ("0", "1", "2")]
    for run in runs:
        assert run.info.status == "FINISHED", seen
        if run.data.tags["specforce.trial_id"] in round_1:  # untouched since round 1
            before = round_1[run.data.tags["specforce.trial_id"]]
            assert run.info.end_time == before.info.end_time
            assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [800, 1600]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert steps == sorted(set(steps)) and steps[-1] == 1600, (steps, seen)  # round 2 too: each step once
    parents = sweep_runs(client, "adaptive")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    tags = parent.data.tags
    assert tags["specforce.adaptive.round"] == "2" and tags["specforce.adaptive.decision"] == "max_reached"
    assert tags["specforce.adaptive.reason"] == "max 3 seeds reached; undecided: patch 8"
    design = json.loads(tags["specforce.adaptive.design"])
    assert design["looks"] == [2, 3] and design["family_size"] == 1 and design["primary"] == "eval/denoise_loss"
    history = client.get_metric_history(parent.info.run_id, "sweep/round")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 2.0)]
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "adaptive")] == \
        ["adaptive/round-1.json", "adaptive/round-2.json"]
    assert sorted(p.name for p in (tmp_path / "ray_results" / "adaptive").glob("grid-r*")) == ["grid-r1", "grid-r2"]

    from analysis.adaptive import adaptive_summary

    summary = adaptive_summary(f"sqlite:///{tmp_path / 'mlflow.db'}", parent.info.run_id)
    assert summary.rounds == 2 and summary.outcome == "max_reached"
    assert summary.seeds_per_arm.to_dict("records") == [
        {"patch": 8, "arm": "baseline", "seeds": 3, "seed list": "0, 1, 2"},
        {"patch": 8, "arm": "SF", "seeds": 3, "seed list": "0, 1, 2"}]
    assert summary.comparisons[["comparison", "n", "status"]].to_dict("records") == [
        {"comparison": "patch 8", "n": 3, "status": "undecided"}]
    assert "it reached the maximum of 3 seeds per arm" in summary.paragraphs[0]


def _parent(tmp_path, spec):
    from sweeps import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.prepare_store(uri)
    exp = tracking.get_or_create_experiment(client, spec.name)
    return client, uri, tracking.start_parent_run(client, exp, spec.name, {}, False, run_name="x")


def test_resume_refuses_a_changed_design_and_skips_a_decided_sweep(tmp_path, capsys):
    from sweeps.adaptive import DESIGN_TAG, AdaptiveRounds

    spec = spec_from_dict(_tree())
    client, uri, parent = _parent(tmp_path, spec)
    first = AdaptiveRounds(spec, client=client, parent_run_id=parent, tracking_uri=uri, resume=False)
    phase, space = next(iter(first))  # records the design, then hands round 1 to run_sweep
    assert phase == "grid-r1" and len(space["plan"]["grid_search"]) == 12
    assert json.loads(client.get_run(parent).data.tags[DESIGN_TAG])["family_size"] == 3

    edited = spec_from_dict(_tree(analysis={"min_effect": 0.05}))
    with pytest.raises(SpecError, match=r"--resume: the adaptive design of sweep 'a' changed \(min_effect: None -> "
                                        r"0.05\); its stopping rule cannot change between looks"):
        next(iter(AdaptiveRounds(edited, client=client, parent_run_id=parent, tracking_uri=uri, resume=True)))

    for key, value in (("specforce.adaptive.round", "2"), ("specforce.adaptive.decision", "decided"),
                       ("specforce.adaptive.reason", "every comparison decided: effect in patch 8")):
        client.set_tag(parent, key, value)
    resumed = AdaptiveRounds(spec, client=client, parent_run_id=parent, tracking_uri=uri, resume=True)
    assert list(resumed) == []  # a decided sweep runs no further round
    assert "[adaptive] already stopped after round 2 (decided): every comparison decided" in capsys.readouterr().out
