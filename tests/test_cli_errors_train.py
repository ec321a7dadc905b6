"""`specforce train`, `eval` and `prepare` refuse every bad config, checkpoint and dataset in one line, before any
work starts, and leave nothing behind: the table of refusals for one run and its data (the contract:
sweeps/errors.py; the check each row passes: tests/refusal_helpers.py). "{in}" is the inputs folder.

    .venv/bin/python -m pytest tests/test_cli_errors_train.py -q
"""
from __future__ import annotations

import pytest

from refusal_helpers import Row, busy_port, check_refusal, cuda, inputs  # noqa: F401 (fixtures)

ROWS = [
    # ------------------------------------------------------------------------------------------------ train
    Row("train-config-missing", ["train", "{in}/nope.yaml"], "config file '{in}/nope.yaml': does not exist"),
    Row("train-yaml-syntax", ["train", "{in}/syntax.yaml"], "{in}/syntax.yaml: line 4, column 5: invalid YAML"),
    Row("train-yaml-python-tag", ["train", "{in}/evil.yaml"], "constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    Row("train-yaml-not-mapping", ["train", "{in}/list.yaml"], "top level must be a mapping of sections"),
    Row("train-preset-typo", ["train", "{in}/preset.yaml"], "model.preset: unknown preset, did you mean 'jit-tiny'?"),
    Row("train-dataset-typo", ["train", "{in}/dataset.yaml"], "data.name: unknown dataset, did you mean 'imagenet'?"),
    Row("train-option-typo", ["train", "{in}/option.yaml"], "data.options.alpha_dta: unknown option of dataset 'grf' (did you mean 'alpha_data'?"),
    Row("train-option-value", ["train", "{in}/optval.yaml"], "data.options.alpha_data: must be a positive finite number (got -1)"),
    Row("train-root-missing-key", ["train", "{in}/noroot.yaml"], "data.root: dataset 'imagefolder' reads files"),
    Row("train-root-not-found", ["train", "{in}/missroot.yaml"], "data.root: folder does not exist (got '{in}/nowhere')"),
    Row("train-root-for-grf", ["train", "{in}/grfroot.yaml"], "data.root: dataset 'grf' reads no files"),
    Row("train-empty-class", ["train", "{in}/emptycls.yaml"], "class folder '{in}/photos_empty/dog' has no images"),
    Row("train-corrupt-image-past-512", ["train", "{in}/corrupt.yaml"], "1 unreadable image(s) under '{in}/photos_bad': '{in}/photos_bad/b/zzz_broken.png'"),
    Row("train-device-cuda", ["train", "{in}/cuda.yaml"], "device: CUDA is not available on this machine", skip=cuda),
    Row("train-inception-missing", ["train", "{in}/fid.yaml"], "eval.inception_weights: no such file (got '{in}/no_such_inception.pth')"),
    Row("train-classifier-on-grf", ["train", "{in}/classifier.yaml"], "eval.metrics: 'classifier' needs a digit dataset"),
    Row("train-out-is-file", ["train", "{in}/tiny.yaml", "--out", "{in}/a_file"], "--out: exists and is a file, not a folder"),
    Row("train-out-below-file", ["train", "{in}/tiny.yaml", "--out", "{in}/a_file/run"], "--out: {in}/a_file is a file"),
    Row("train-out-other-config", ["train", "{in}/tiny.yaml", "--out", "{in}/other_run"], "was written by a different config (optim.lr: 0.5 -> 0.001)"),
    Row("train-set-no-equals", ["train", "{in}/tiny.yaml", "--set", "model.patch_size"], "--set: expects KEY=VALUE"),
    Row("train-set-unknown-key", ["train", "{in}/tiny.yaml", "--set", "model.pach_size=4"], "model.pach_size: unknown key (did you mean 'patch_size'?)"),
    Row("train-set-bad-yaml", ["train", "{in}/tiny.yaml", "--set", "optim.betas=[0.9"], "--set optim.betas: the value is not valid YAML"),
    Row("train-tracking-file", ["train", "{in}/tiny.yaml", "--tracking-uri", "file:///tmp/mlruns"], "--tracking-uri: the file: store is deprecated"),
    Row("train-tracking-bogus", ["train", "{in}/tiny.yaml", "--tracking-uri", "bogus://x"], "--tracking-uri: unknown tracking store scheme"),
    Row("train-tracking-unreachable", ["train", "{in}/tiny.yaml", "--tracking-uri", "http://127.0.0.1:{port}"], "--tracking-uri: MLflow server not reachable"),
    Row("train-experiment-name", ["train", "{in}/tiny.yaml", "--experiment", "../x"], "--experiment: '../x' is not a valid name"),
    Row("train-patch-size", ["train", "{in}/tiny.yaml", "--dry-run", "--set", "model.patch_size=7"], "model.patch_size: patch size 7 does not divide data.image_size 32"),
    Row("train-dry-run-sees-data", ["train", "{in}/corrupt.yaml", "--dry-run"], "zzz_broken.png"),
    # ---------------------------------------------- train: escapes found by the property-based search
    *[Row(f"train-escape-{name}", ["train", "{in}/tiny.yaml", "--dry-run", *[a for kv in sets for a in ("--set", kv)]],
          needle) for name, sets, needle in [
        ("t-points", ["eval.denoise_t_points=2"], "eval.denoise_t_points: the held-out loss is reported per t bucket "
         "[0.0, 0.2, 0.4, 0.6, 0.8, 1.0] and bucket [0.0, 0.2] would hold no t of the grid; use at least 5 points (got 2)"),
        ("preset-patch", ["model.patch_size=null", "data.image_size=30"], "model.patch_size: the preset jit-tiny's "
         "patch size 4 does not divide data.image_size 30"),
        ("cfg-interval", ["sample.cfg_interval=[0.9, 0.1]"], "sample.cfg_interval: expected [lo, hi] with 0 <= lo <= "
         "hi <= 1 (got [0.9, 0.1])"),
        ("grf-train-split", ["data.options.num_samples=8"], "optim.batch_size: larger than the grf train split (8 "
         "images) (got 16)"),
        ("grf-test-split", ["eval.denoise_batch=100"], "eval.denoise_batch: larger than the grf test split (64 images) "
         "(got 100)"),
        ("grf-channels", ["data.options.channels=2"], "data.options.channels: sample grids and Inception read (1, 3) "
         "channels, the data has 2 (got 2)"),
        ("window-1", ["spectral.window_size=1"], "spectral.window_size: a DCT window needs at least 2 pixels per side "
         "(got 1)"),
        ("kappa-inf", ["spectral.kappa=.inf"], "spectral.kappa: Input should be a finite number (got inf)"),
        ("betas", ["optim.betas=[1.0, 0.95]"], "optim.betas: AdamW's betas must each lie in [0, 1) (got [1.0, 0.95])"),
        ("betas-unbounded-step", ["optim.betas=[0.999999, 0.0]"], "optim.betas: Adam needs beta1^2 < sqrt(beta2) for "
         "a bounded step (Kingma & Ba 2015) (got [0.999999, 0.0])"),
        ("fd-pixel-dims", ["data.image_size=64", "data.options.channels=3", "eval.metrics=[fd_pixel]"],
         "eval.metrics: 'fd_pixel' at 3x64x64 needs a 12288-d covariance (limit 8192)"),
        ("snr-fit-bins", ["data.image_size=4", "model.patch_size=4", "spectral.enabled=true", "spectral.schedule=snr"],
         "spectral.r0: the snr schedule fits alpha and r0 to the data's radial spectrum, which at data.image_size 4 "
         "has 1 bins"),
        ("spectrum-size", ["data.image_size=2", "model.patch_size=2", "eval.metrics=[spectrum]"],
         "eval.metrics: 'spectrum' needs data.image_size >= 4 (3 radial shells) (got ['spectrum'])"),
        ("c-min-above-c-max", ["spectral.c_min=0.5", "spectral.c_max=0.2"], "spectral.c_min: c_min=0.5 must not "
         "exceed c_max=0.2 (got 0.5)"),
        ("noise-left-in-samples", ["flow.noise_scale=40", "sample.t_eps_last=0.99", "sample.steps=3",
                                   "eval.metrics=[fd_pixel]"], "flow.noise_scale: with sample.t_eps_last 0.99 and 3 "
         "euler steps the samples keep 0.293 of the initial noise"),
    ]],
    # --------------------------------------------- train: the plug-in denoiser contract, refused at load
    *[Row(f"train-model-target-{name}", ["train", "{in}/tiny.yaml", "--dry-run", "--set", "model.patch_size=null",
                                         *[a for kv in sets for a in ("--set", kv)]], needle) for name, sets, needle in [
        ("import", ["model.target=no_such_pkg.nets:build"], "model.target: module 'no_such_pkg.nets' does not import"),
        ("name", ["model.target=trainers.model.unet:build_unett"], "model.target: module 'trainers.model.unet' has no attribute "
         "'build_unett' (got 'trainers.model.unet:build_unett')"),
        ("option", ["model.target=trainers.model.unet:build_unet", "model.options.depth=3"], "model.options: ['depth'] not "
         "accepted by model.target 'trainers.model.unet:build_unet'"),
        ("builder-raises", ["model.target=trainers.model.unet:build_unet", "model.options.base_channels=0"],
         "model.target: the builder raised ValueError: base_channels, num_res_blocks and channel_mult must be "
         "positive"),
        ("predicts", ["model.target=trainers.model.unet:build_unet", "model.predicts=score"], "model.predicts: Input should "
         "be 'x', 'v' or 'eps' (got 'score')"),
    ]],
    Row("train-escape-snr-fit-data", ["train", "{in}/digits_snr.yaml", "--dry-run"], "spectral.r0: the snr schedule "
        "fits a power law to the training images' spectrum, and digits at 8 px has none"),
    Row("train-escape-digits-test-split", ["train", "{in}/digits_heldout.yaml", "--dry-run"], "eval.denoise_batch: "
        "larger than the digits test split (180 images) (got 256)"),
    # --------------------------------------------------------------------------------------- prepared data
    Row("train-prepared-image-size", ["train", "{in}/prepared_size.yaml", "--dry-run"],
        "data.image_size is 16 but the prepared dataset at '{in}/prep8' holds 8 px images"),
    Row("train-prepared-shard-missing", ["train", "{in}/prepared_shard.yaml", "--dry-run"],
        "prepared: shard '{in}/prep8_broken/train/shard-00001.npy' is missing"),
    Row("prepare-dest-other-size", ["prepare", "{in}/photos", "{in}/prep8", "--dataset", "imagefolder",
                                    "--image-size", "16"], "DEST: already holds a prepared dataset with image_size 8"),
    # ------------------------------------------------------------------------------------------------- eval
    Row("eval-missing", ["eval", "{in}/nowhere/ema.pt"], "checkpoint '{in}/nowhere/ema.pt': no such file"),
    Row("eval-truncated", ["eval", "{in}/trunc/ema.pt"], "checkpoint '{in}/trunc/ema.pt': not a readable torch checkpoint, truncated or corrupt"),
    Row("eval-yaml-named-pt", ["eval", "{in}/yamlpt/ema.pt"], "checkpoint '{in}/yamlpt/ema.pt': not a torch checkpoint"),
    Row("eval-state-dict", ["eval", "{in}/statedict/ema.pt"], "checkpoint '{in}/statedict/ema.pt': not a specforce checkpoint"),
    Row("eval-folder", ["eval", "{in}/ok"], "checkpoint '{in}/ok': not a file"),
    Row("eval-num-samples-zero", ["eval", "{in}/ok/ema.pt", "--num-samples", "0"], "argument --num-samples: must be a positive integer (got '0')"),
    Row("eval-num-samples-one", ["eval", "{in}/ok/ema.pt", "--num-samples", "1"], "--num-samples (eval.num_samples"),
    Row("eval-metric-unknown", ["eval", "{in}/ok/ema.pt", "--metrics", "fdd"], "--metrics (eval.metrics: unknown metric 'fdd'"),
    Row("eval-inception-missing", ["eval", "{in}/ok/ema.pt", "--metrics", "fid", "--inception-weights", "{in}/none.pth"], "eval.inception_weights: no such file"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_refused_in_one_line_and_leaves_nothing(row, inputs, tmp_path, busy_port, monkeypatch, capsys):
    check_refusal(row, inputs, tmp_path, busy_port, monkeypatch, capsys)
