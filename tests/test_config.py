"""Training config: defaults, validation messages that name the key path, overrides, safe YAML."""
import pytest

from trainers.training.config import ConfigError, config_from_dict, load_config, set_dotted


def test_defaults_are_a_valid_tiny_run():
    cfg = config_from_dict({})
    assert cfg.model.preset == "jit-tiny" and cfg.data.image_size == 32
    assert cfg.spectral.kappa == 30.0 and cfg.spectral.c_min == 0.05 and cfg.spectral.c_max == 1.0
    assert cfg.optim.betas == (0.9, 0.95)
    # JiT recipe: lr = blr * batch / 256 unless lr is given
    assert cfg.optim.learning_rate == pytest.approx(5e-5 * 64 / 256)
    assert config_from_dict({"optim": {"lr": 1e-3}}).optim.learning_rate == 1e-3


@pytest.mark.parametrize("tree, needle", [
    ({"model": {"patch_size": 7}}, "model.patch_size: patch size 7 does not divide data.image_size 32"),
    ({"model": {"pach_size": 4}}, "model.pach_size: unknown key (did you mean 'patch_size'?)"),
    ({"optim": {"blr": -1}}, "optim.blr"),
    ({"spectral": {"schedule": "cosine"}}, "spectral.schedule"),
    ({"spectral": {"c_min": 0.5, "c_max": 0.2}}, "spectral.c_min: c_min=0.5 must not exceed c_max=0.2 (got 0.5)"),
    ({"eval": {"metrics": ["fdd"]}}, "eval.metrics: unknown metric 'fdd'"),
    ({"spectral": {"window_size": 5}}, "spectral.window_size: 5 does not divide"),
    ({"optim": {"ema_decays": [1.5]}}, "optim.ema_decays"),
    ({"sample": {"ema_index": 3}}, "sample.ema_index"),
    # cross-field rules of trainers/training/config_rules.py (issue 23): what the run relies on, refused at load
    ({"eval": {"denoise_t_points": 4}}, "eval.denoise_t_points: the held-out loss is reported per t bucket"),
    ({"data": {"image_size": 10}}, "model.patch_size: the preset jit-tiny's patch size 4 does not divide "
                                   "data.image_size 10"),
    ({"sample": {"cfg_interval": [0.5, 1.5]}}, "sample.cfg_interval: expected [lo, hi] with 0 <= lo <= hi <= 1"),
    ({"optim": {"betas": [0.9, 1.0]}}, "optim.betas: AdamW's betas must each lie in [0, 1) (got [0.9, 1.0])"),
    ({"optim": {"betas": [0.9, 0.5]}}, "optim.betas: Adam needs beta1^2 < sqrt(beta2)"),
    ({"flow": {"noise_scale": float("nan")}}, "flow.noise_scale: Input should be a finite number"),
    ({"spectral": {"window_size": 1}}, "spectral.window_size: a DCT window needs at least 2 pixels per side"),
    ({"data": {"options": {"num_samples": 8}}}, "optim.batch_size: larger than the grf train split (8 images) (got 64)"),
    ({"data": {"options": {"channels": 4}}}, "data.options.channels: sample grids and Inception read (1, 3)"),
    ({"data": {"image_size": 4}, "spectral": {"enabled": True, "schedule": "snr"}},
     "spectral.r0: the snr schedule fits alpha and r0"),
])
def test_errors_name_the_key_path_and_value(tree, needle):
    with pytest.raises(ConfigError) as err:
        config_from_dict(tree)
    assert needle in str(err.value)


def test_load_config_overrides_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {preset: jit-tiny}\nseed: 3\n")
    cfg = load_config(path, {"model.patch_size": 8, "spectral.enabled": True})
    assert (cfg.model.patch_size, cfg.spectral.enabled, cfg.seed) == (8, True, 3)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(Exception) as err:
        load_config(path)
    assert "python/object" in str(err.value)


def test_flat_keys_match_the_mlflow_contract():
    flat = config_from_dict({"model": {"patch_size": 4}}).flat()
    for key in ("model.patch_size", "model.preset", "spectral.enabled", "spectral.schedule", "spectral.alpha",
                "spectral.c_min", "spectral.kappa", "data.name", "data.image_size", "seed"):
        assert key in flat


def test_rules_that_hold_pass():
    # the edges the rules allow: 5 t points, the preset's patch dividing the size, a fitted snr at 16 px, beta1 0
    cfg = config_from_dict({"eval": {"denoise_t_points": 5}, "data": {"image_size": 16},
                            "spectral": {"enabled": True, "schedule": "snr"}, "optim": {"betas": [0.0, 0.0001]},
                            "sample": {"cfg_interval": [0.0, 0.0]}})
    assert cfg.eval.denoise_t_points == 5 and cfg.model.patch_size is None
    # a rule of an unused feature does not apply: no held-out loss, no t buckets
    assert config_from_dict({"eval": {"denoise_loss": False, "denoise_t_points": 2}}).eval.denoise_t_points == 2


def test_world_rules_name_the_workers_key():
    from trainers.training.config_rules import check_world

    check_world(config_from_dict({"optim": {"batch_size": 12}}), 3)
    with pytest.raises(ValueError, match=r"resources.workers: does not divide optim.batch_size 12 \(got 5\)"):
        check_world(config_from_dict({"optim": {"batch_size": 12}}), 5)


def test_set_dotted_refuses_to_descend_into_a_value():
    tree = {"seed": 1}
    with pytest.raises(ConfigError, match="seed.x"):
        set_dotted(tree, "seed.x", 2)
