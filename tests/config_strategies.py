"""Hypothesis strategies for training configs and sweep specs, and the tiny real run a drawn config must survive.

Used by tests/test_config_properties.py. The strategies draw every section and key of the schema, edge values
included (zero, one, bounds of open and closed ranges, None, inf/nan, wrong types), over ranges kept small enough
that one run takes about a second on one CPU core: images of 1..16 pixels, batches of at most 16, one or two
optimizer steps, a few sampler steps. What they leave out (each would need what a CPU test cannot have or afford):
Inception metrics (fid, is: weights are downloaded), torch.compile, CUDA, cifar10/imagenet files.

    PYTHONPATH=tests .venv/bin/python -c "from config_strategies import config_trees; print(config_trees().example())"
"""
from __future__ import annotations

import pathlib

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from specforce_contracts import flatten
from trainers.training.config import ConfigError, TrainConfig

INF, NAN = float("inf"), float("nan")


# A quarter of the drawn trees are "wild": their numbers may also lie just outside the schema's range or be
# non-finite. The rest stay inside it (ends included), so that most trees can pass the loader and reach the run.
_WILD = [False]


def edge_floats(lo: float, hi: float, *, open_lo: bool = False, open_hi: bool = False) -> st.SearchStrategy:
    """Floats in the range, its ends (or the nearest values inside an open end), and (wild trees) values just
    outside it and non-finite ones."""
    a, b = lo + 1e-6 if open_lo else lo, hi - 1e-6 if open_hi else hi
    inside = st.one_of(st.floats(a, b), st.floats(a, b), st.sampled_from((a, b)))
    return st.one_of(inside, st.sampled_from((lo - 1e-9, lo, hi, hi + 1e-9, INF, NAN))) if _WILD[0] else inside


def small_ints(lo: int, hi: int) -> st.SearchStrategy:
    return st.one_of(st.integers(lo, hi), st.sampled_from((lo, hi, 0, -1))) if _WILD[0] else st.integers(lo, hi)


def divisor_of(n: int, extra: tuple = ()) -> st.SearchStrategy:
    """A divisor of n (what the rules ask for), or in wild trees anything from `extra` too."""
    divisors = tuple(d for d in range(1, n + 1) if n % d == 0)
    return st.sampled_from(divisors + (extra if _WILD[0] else ()))


def _maybe(key: str, value: st.SearchStrategy) -> st.SearchStrategy:
    """{key: value} or {}: a key left out keeps its default, which is part of the range too."""
    return st.one_of(st.just({}), value.map(lambda v: {key: v}))


def _section(**keys: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional=keys)


def grf_options() -> st.SearchStrategy:
    return _section(alpha_data=edge_floats(0.01, 4.0), num_samples=st.sampled_from((None, 1, 2, 7, 16, 33)),
                    channels=small_ints(1, 4))


@st.composite
def data_sections(draw, folder: pathlib.Path) -> dict:
    name = draw(st.sampled_from(("grf",) * 6 + ("digits", "digits", "imagefolder")))
    data = {"name": name, "image_size": draw(st.sampled_from((1, 2, 3, 6) + (4, 8, 8, 12, 16, 16) * 2))}
    if name == "grf":
        data["options"] = draw(grf_options())
    elif name == "imagefolder":
        data["root"] = str(folder)
        data["options"] = draw(_section(hflip=st.sampled_from((None, True, False)), verify=st.booleans()))
    data.update(draw(_section(seed=small_ints(0, 3), num_workers=st.sampled_from((0, 0, 0, 1)),
                              pin_memory=st.sampled_from((None, False)), persistent_workers=st.booleans(),
                              prefetch_factor=st.sampled_from((None, 1, 2)))))
    if not _WILD[0] and not data.get("num_workers"):
        data.pop("prefetch_factor", None)  # needs loader workers: refused (a rule), so drawn only in wild trees
    return data


FAST_METRICS = ("fd_pixel", "spectrum", "kid")
ALL_METRICS = FAST_METRICS + ("classifier",)  # the digit classifier trains for seconds before its first use


@st.composite
def config_trees(draw, folder: pathlib.Path = pathlib.Path("/nonexistent"), wild: bool | None = None,
                 metrics: tuple[str, ...] = FAST_METRICS) -> dict:
    """A config tree (the YAML a user writes) drawn across the schema; many are invalid, on purpose.
    wild=None: a quarter of the trees are wild (see _WILD)."""
    # read by edge_floats/small_ints/divisor_of while this tree's strategies are built
    _WILD[0] = draw(st.integers(0, 3)) == 0 if wild is None else wild
    batch = draw(st.integers(1, 16))
    data = draw(data_sections(folder))
    size = data["image_size"]
    tree = {
        "model": draw(_section(preset=st.sampled_from(("jit-tiny",) * 4 + ("JIT-Tiny", "jit-small")),
                               # None keeps the preset's patch (4 or 8 here), which must divide the size too
                               patch_size=st.one_of(st.none() if size % 8 == 0 or _WILD[0] else divisor_of(size),
                                                    divisor_of(size, (0, 3, 5, 16))),
                               bottleneck=st.sampled_from((None, 1, 3, 32) + ((0,) if _WILD[0] else ())),
                               compile_mode=st.sampled_from(("default",)))),
        "data": data,
        "spectral": draw(_section(
            enabled=st.booleans(), schedule=st.sampled_from(("linear", "contour", "snr", "constant", "none")),
            c_min=edge_floats(0.0, 1.0), c_max=edge_floats(0.0, 1.0, open_lo=True), c_const=edge_floats(0.0, 1.0, open_lo=True),
            kappa=edge_floats(0.0, 100.0, open_lo=True), alpha=edge_floats(0.0, 8.0, open_lo=True),
            r0=st.one_of(st.none(), edge_floats(0.0, 4.0, open_lo=True)),
            fit_from_data=st.booleans(), window_size=st.one_of(st.none(), divisor_of(size, (1, 3, 5))),
            identity_at_data=st.booleans())),
        "flow": draw(_section(p_mean=edge_floats(-3.0, 3.0), p_std=edge_floats(0.0, 3.0, open_lo=True),
                              t_eps=edge_floats(0.0, 1.0, open_lo=True, open_hi=True),
                              noise_scale=st.one_of(edge_floats(0.0, 4.0, open_lo=True), st.just(50.0)), label_drop=edge_floats(0.0, 1.0))),
        "optim": {"batch_size": batch, "lr": 1e-3,
                  "total_images": draw(st.sampled_from((batch, batch, 2 * batch, batch + 1) + ((batch - 1,) if _WILD[0] else ()))),
                  **draw(_section(blr=edge_floats(0.0, 1e-2, open_lo=True), weight_decay=edge_floats(0.0, 0.1),
                                  betas=st.tuples(edge_floats(0.0, 1.0, open_hi=True), edge_floats(0.0, 1.0, open_hi=True)),
                                  warmup_images=st.sampled_from((0, 1, batch, 10 * batch)),
                                  grad_clip=st.one_of(st.none(), edge_floats(0.0, 10.0, open_lo=True)),
                                  ema_decays=st.lists(edge_floats(0.0, 1.0, open_lo=True, open_hi=True), min_size=0 if _WILD[0] else 1,
                                                     max_size=3),
                                  ema_warmup=st.booleans(), amp=st.sampled_from(("auto", "off", "bf16")),
                                  fused=st.sampled_from((False, "auto"))))},
        # sampler steps and t points always drawn small: their defaults (50 heun steps, 20 points) cost seconds
        "sample": {"steps": draw(small_ints(1, 3)), **draw(_section(
                                sampler=st.sampled_from(("euler", "heun")), cfg_scale=edge_floats(0.0, 4.0),
                                cfg_interval=st.tuples(edge_floats(0.0, 1.0), edge_floats(0.0, 1.0)),
                                ema_index=small_ints(0, 3 if _WILD[0] else 0),
                                t_eps_last=st.one_of(st.none(), edge_floats(0.0, 1.0, open_lo=True, open_hi=True))))},
        "eval": {"batch_size": draw(st.integers(1, 16)), "num_samples": draw(small_ints(2, 12)),
                 "denoise_batch": draw(small_ints(1, 16)), "grid_size": draw(small_ints(1, 3)),
                 "denoise_t_points": draw(small_ints(2, 12) if _WILD[0] else st.integers(5, 12)),
                 **draw(_section(every_images=st.sampled_from((0, batch)), grid_every_images=st.sampled_from((0, batch)),
                                 metrics=st.lists(st.sampled_from(metrics),
                                                  max_size=3, unique=True),
                                 denoise_loss=st.booleans()))},
        **draw(_section(seed=small_ints(0, 3), log_every_images=st.sampled_from((1, batch)),
                        checkpoint_every_images=st.sampled_from((0, batch)), save_checkpoint=st.booleans())),
        "device": "cpu",
    }
    if not _WILD[0] and size % 4 and tree["model"].get("patch_size") is None:  # the presets' patch is 4
        tree["model"]["patch_size"] = draw(divisor_of(size))
    if not _WILD[0]:  # ordered pairs, as the rules ask (wild trees keep them as drawn)
        sf, interval = tree["spectral"], tree["sample"].get("cfg_interval")
        if "c_min" in sf and "c_max" in sf:
            sf["c_min"], sf["c_max"] = sorted((sf["c_min"], sf["c_max"]))
        if interval:
            tree["sample"]["cfg_interval"] = tuple(sorted(interval))
        betas = tree["optim"].get("betas")
        if betas and not betas[0] ** 2 < betas[1] ** 0.5:  # Adam's bounded-step condition (config_rules)
            tree["optim"]["betas"] = (0.0, betas[1] or 0.5)
    return tree


def image_folder(root: pathlib.Path) -> pathlib.Path:
    """Two classes of 8 tiny PNGs: an `imagefolder` dataset whose train and test split are this folder."""
    for i in range(16):
        path = root / f"c{i % 2}" / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, (10, 10, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
    return root


KNOWN_KEYS = set(flatten(TrainConfig().model_dump(mode="json"))) | set(TrainConfig.model_fields)


def assert_one_line_naming_a_key(err: Exception) -> None:
    """A refusal is one line whose first part is a dotted key path of the config (or a data section's split)."""
    text = str(err)
    assert "\n" not in text, text
    head = text.split(":", 1)[0].strip()
    assert isinstance(err, ConfigError) or type(err).__name__ == "SpecError", repr(err)
    ok = (head in KNOWN_KEYS or head.startswith(("data.options.", "data (")) or
          any(head.startswith(k + ".") for k in TrainConfig.model_fields))
    assert ok, f"the refusal does not start with a config key: {text}"
