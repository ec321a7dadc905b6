"""`specforce eval CHECKPOINT`: sample from a saved run's weights and evaluate them as its training loop did.

    specforce eval runs/tiny/ema.pt --num-samples 500                 # the sampling weights `train` saves at the end
    specforce eval runs/tiny/checkpoint.pt --metrics fd_pixel spectrum  # a checkpoint: its EMA shadow sample.ema_index

The model, SF operator, sampler, held-out loss and evaluator come from the loop's own builders
(trainers/training/builders.py, trainers/evaluation/heldout.py) and its evaluation step
(`trainers.training.loop.evaluate_weights`), built from the config stored in the checkpoint with the command's
overrides; the held-out denoising loss is always computed. Writes
`<checkpoint folder>/eval-<checkpoint name>/` (config.yaml, metrics.jsonl, eval/*.json) and prints the metrics and
their provenance as JSON. Reference statistics are cached in the runs folder's `.cache` (as `train` does).
CPU check: `.venv/bin/python -m pytest tests/test_train_cli.py tests/test_cli_errors.py -q -k eval`.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import torch

import specforce_contracts as C
from trainers.training.config import TrainConfig


def checkpoint_config(state: dict[str, Any], path: pathlib.Path, *, num_samples: int | None,
                      metrics: list[str] | None, inception_weights: str | None) -> TrainConfig:
    """The checkpoint's config with the command's eval overrides (and the held-out loss on). A bad override is
    reported under its flag; a stored config this version cannot read, under the checkpoint's path."""
    from trainers.training.checkpoint import CheckpointError
    from trainers.training.config import ConfigError, config_from_dict

    tree = dict(state["config"])
    ev = dict(tree.get("eval", {}))
    if num_samples is not None:  # 0 is a value to refuse, not "not given"
        ev["num_samples"] = num_samples
    if metrics is not None:
        ev["metrics"] = metrics
    if inception_weights is not None:
        ev["inception_weights"] = inception_weights
    ev["denoise_loss"] = True
    tree["eval"] = ev
    try:
        return config_from_dict(tree)
    except ConfigError as err:
        given = {"num_samples": "--num-samples", "metrics": "--metrics", "inception_weights": "--inception-weights"}
        flag = next((f for k, f in given.items() if str(err).startswith(f"eval.{k}")), None)
        if flag:
            raise ConfigError(f"{flag} ({err})") from None
        raise CheckpointError(f"checkpoint {str(path)!r}: its config is not valid for this specforce ({err})") from None


def load_sampling_weights(model: torch.nn.Module, state: dict[str, Any], cfg: TrainConfig) -> None:
    """Puts the weights the loop samples with into `model`: ema.pt holds them as they are; checkpoint.pt holds the
    training weights and the EMA shadows, of which `sample.ema_index` is copied in (as the loop's swap does)."""
    model.load_state_dict(state["model"])
    if "ema" in state:
        from trainers.model.ema import EMA

        ema = EMA(model, decays=cfg.optim.ema_decays, warmup=cfg.optim.ema_warmup)
        ema.load_state_dict(state["ema"])
        ema.copy_to(model, cfg.sample.ema_index)


def evaluate_checkpoint(path: pathlib.Path, *, num_samples: int | None = None, metrics: list[str] | None = None,
                        inception_weights: str | None = None) -> dict[str, Any]:
    """{"images_seen", "eval/...": value, ..., "provenance"} of the checkpoint at `path` (module docstring)."""
    from sweeps.preflight import check_inception_weights
    from trainers.training.accel import compile_blocks
    from trainers.training.builders import build_dataset_for, build_denoiser, build_evaluator, build_flow, build_heldout
    from trainers.training.checkpoint import load_checkpoint
    from trainers.training.config import dump_yaml
    from trainers.training.environment import check_environment
    from trainers.training.loop import Hooks, evaluate_weights

    state = load_checkpoint(path)
    cfg = checkpoint_config(state, path, num_samples=num_samples, metrics=metrics,
                            inception_weights=inception_weights)
    check_environment(cfg)
    if "fid" in cfg.eval.metrics or "is" in cfg.eval.metrics:
        check_inception_weights(cfg, dry_run=False)
    built = build_denoiser(cfg)
    model, device, dataset = built.model, built.device, built.dataset
    if cfg.model.compile:  # sampling runs the same compiled blocks as the run's own evaluations
        compile_blocks(model, device=device, mode=cfg.model.compile_mode)
    out_dir = path.parent / f"eval-{path.stem}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / C.RUN_CONFIG_FILE).write_text(dump_yaml(cfg))  # the resolved config next to every output
    eval_set = build_dataset_for(cfg, "test")
    evaluator = build_evaluator(cfg, eval_set, device, path.parent.parent / ".cache")
    load_sampling_weights(model, state, cfg)
    images = int(state["images_seen"])
    with torch.no_grad():
        out, provenance = evaluate_weights(cfg, model, channels=dataset.channels, num_classes=dataset.num_classes,
                                           device=device, rank=0, flow=build_flow(cfg, dataset.num_classes),
                                           heldout=build_heldout(cfg, eval_set, device),
                                           evaluator=evaluator, out_dir=out_dir, on_artifact=lambda *_: None)
    with (out_dir / C.RUN_METRICS_FILE).open("a") as f:
        f.write(json.dumps({C.IMAGES_KEY: images, **out}) + "\n")
    Hooks().on_metrics(images, out)  # the loop's progress line
    return {"images_seen": images, **out, "provenance": provenance}
