"""The checks a training config needs from the machine it will run on, before anything is written.

`check_environment(cfg)`: the device exists, the files the config names exist, and the datasets index cleanly
(folder datasets verify every image, trainers/data/folder.py), with the data-dependent rules of
trainers/training/config_rules.py applied to the built datasets. Called by `specforce train`, `specforce eval`, and a
sweep's preflight when its Ray cluster is this machine.

    python -c "from trainers.training.config import config_from_dict; \
from trainers.training.environment import check_environment; check_environment(config_from_dict({'device': 'cpu'}))"
"""
from __future__ import annotations

import pathlib

from trainers.training.config import ConfigError, TrainConfig


def check_environment(cfg: TrainConfig, *, build_data: bool = True) -> None:
    """The checks that need this machine, not only the config: the device exists, files the config names exist, and
    (build_data) the datasets index cleanly (folder datasets verify every image; see trainers/data/folder.py).
    Raises ConfigError naming the key.
    """
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device: CUDA is not available on this machine (torch.cuda.is_available() is False); "
                              "use device: auto or cpu (got 'cuda')")
    weights = cfg.eval.inception_weights
    if weights is not None and not pathlib.Path(weights).expanduser().is_file():
        raise ConfigError(f"eval.inception_weights: no such file (got {weights!r})")
    from trainers.data.loader import DATASETS, build_dataset

    cls = DATASETS[cfg.data.name]
    if cls.uses_root and "://" not in cfg.data.root:  # a URI (s3://, gs://) is opened by the dataset itself
        root = pathlib.Path(cfg.data.root)
        if not root.exists():
            raise ConfigError(f"data.root: folder does not exist (got {cfg.data.root!r})")
        if not root.is_dir():
            raise ConfigError(f"data.root: not a folder (got {cfg.data.root!r})")
    if not build_data or cfg.data.options.get("download"):  # a download is the run's job, not a check's
        return
    splits = ["train"] + (["test"] if cfg.eval.metrics or cfg.eval.denoise_loss else [])
    built = {}
    for split in splits:
        try:
            built[split] = build_dataset(cfg.data.name, image_size=cfg.data.image_size, split=split,
                                         root=cfg.data.root, seed=cfg.data.seed, **cfg.data.options)
        except (ValueError, TypeError, OSError) as err:
            raise ConfigError(f"data ({cfg.data.name}, {split} split): {' '.join(str(err).split())}") from None
    # the rules on channels and split sizes, with the sizes these files give (grf's were checked at load)
    from trainers.training.config_rules import check_data

    train = built["train"]
    try:
        check_data(cfg, channels=train.channels, train_size=len(train),
                   test_size=len(built["test"]) if "test" in built else len(train))
        if cfg.model.target is not None:  # the builder probed with the data's own channels and classes
            from trainers.model.contract import check_model

            check_model(cfg, channels=train.channels, num_classes=train.num_classes)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    s = cfg.spectral
    if s.enabled and s.schedule == "snr" and (s.r0 is None or s.fit_from_data):
        # the run fits the power law to these images (trainers/builders.build_spectral): data without one refuses
        from trainers.training.builders import spectrum_sample
        from trainers.model.spectral_forcing import fit_power_law

        try:
            fit_power_law(spectrum_sample(train), noise_var=cfg.flow.noise_scale ** 2)
        except ValueError as err:
            key = "spectral.fit_from_data" if s.fit_from_data else "spectral.r0"
            raise ConfigError(f"{key}: the snr schedule fits a power law to the training images' spectrum, and "
                              f"{cfg.data.name} at {cfg.data.image_size} px has none ({' '.join(str(err).split())}); "
                              f"set spectral.r0 and fit_from_data: false (got {getattr(s, key.split('.')[1])!r})") from None
