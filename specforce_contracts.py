"""The names and records every layer shares, in one place: metric keys and their directions, the t-buckets, the
MLflow tag and artifact names, the default tracking store, and the trial record a worker sends its driver.

Standard library only: `trainers` (inside Ray workers), `sweeps` (the driver) and `analysis` (no torch) all import
it, and none of them may import another layer to learn a name (docs/design.md §2; tests/test_layout.py checks both).
A name written anywhere else as a string literal is a copy that can drift; read it from here.

    python -m specforce_contracts                      # print the metric registry
    python -c "import specforce_contracts as c; print(c.emitted_metrics(['fid', 'kid'], denoise_loss=True))"
    python -c "import specforce_contracts as c; print(c.direction('eval/cls_accuracy_digitcnn'))"   # higher

Metric registry: every key the training loop, the evaluator and the sweep driver log, slash-namespaced, with
step = training images seen (docs/design.md §3). `direction` is `lower` or `higher` (is better) for quality measures and
`none` for numbers that describe a run but do not rank it (a spread, a data-vs-data floor, a rate, a time). Keys
with a `{...}` part are patterns (`eval/fd_{extractor}`); `lookup` tries exact keys first, then patterns in order.
`emitted_metrics` says which keys a trial with given `eval.metrics` reports: the spec validator accepts exactly
those as search and primary metrics, and tests hold the evaluator to it.

Trial record (`TrialRecord`): what one trial actually ran, built by the worker once (trainers/training/record.py) and sent
with its first report; the driver logs exactly that, as params (`TrialRecord.params`) and as the JSON artifact
`ARTIFACT_TRIAL_RECORD`. The Spectral Forcing operator's own description (`SpectralForcing.describe()`) is logged
under `spectral.used.*`, so an analysis reads the alpha, r0 and cutoffs used instead of re-deriving them.
"""
from __future__ import annotations

import json
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

# ------------------------------------------------------------------------------------------------------ directions
LOWER, HIGHER, NONE = "lower", "higher", "none"  # none: describes a run, does not rank it
DIRECTIONS = (LOWER, HIGHER, NONE)

# ---------------------------------------------------------------------------------------- evaluator options, names
EVAL_PREFIX = "eval/"
TRAIN_PREFIX = "train/"
SWEEP_PREFIX = "sweep/"
# eval.metrics options (trainers/evaluation/evaluator.py): what to measure; each emits the keys of `EMITS` below
EVAL_METRIC_OPTIONS = ("fd_pixel", "fid", "is", "classifier", "spectrum", "kid")
CLASSIFIER_DATASETS = ("mnist", "digits")  # eval.metrics `classifier` needs a digit dataset
CLASSIFIER_EXTRACTOR = "digitcnn"  # trainers/evaluation/classifier.py: fd_digitcnn, cls_*_digitcnn, kid_digitcnn
PIXEL_EXTRACTOR = "pixel"
FLOOR_SUFFIX, STD_SUFFIX = "_floor", "_std"
# eval/spec_err_<band>: bands of the normalised radius f = k / (H/2) (trainers/evaluation/radial_spectrum.py)
SPECTRUM_BANDS: dict[str, tuple[float, float]] = {"low": (0.0, 1 / 3), "mid": (1 / 3, 2 / 3), "high": (2 / 3, 1.0)}
SPEC_ERR_PREFIX = "eval/spec_err_"

# the held-out denoising loss (eval.denoise_loss): overall and per t-bucket, buckets [lo, hi) except the last [lo, hi]
DENOISE_LOSS = "eval/denoise_loss"
DENOISE_BUCKET_PREFIX = "eval/denoise_loss_t"
T_BUCKET_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

TRAIN_LOSS, TRAIN_LR, TRAIN_IMAGES_PER_S = "train/loss", "train/lr", "train/images_per_s"
FID, IS, FD_PIXEL = "eval/fid", "eval/is", "eval/fd_pixel"  # "fid"/"is" always mean Inception-v3 2015-12-05
FD_PREFIX, KID_PREFIX = "eval/fd_", "eval/kid"  # every Fréchet distance (but eval/fid) and every kernel distance
EVAL_SECONDS = "eval/seconds"
SWEEP_SECONDS, SWEEP_TRIALS, SWEEP_ERRORED = "sweep/seconds", "sweep/trials", "sweep/errored"
SWEEP_ROUND, SWEEP_SEEDS_PER_ARM = "sweep/round", "sweep/seeds_per_arm"  # adaptive sweeps, step = round
IMAGES_KEY = "images"  # the step of a metrics row (metrics.jsonl, Tune results): training images seen


def edge_name(v: float) -> str:
    """0.2 -> "0.2", 0.25 -> "0.25": one decimal when it is exact, else the shortest form."""
    return f"{v:.1f}" if round(v, 1) == v else f"{v:g}"


def t_bucket_names(edges: Iterable[float] = T_BUCKET_EDGES) -> tuple[str, ...]:
    """("0.0-0.2", "0.2-0.4", ...): the suffixes of the per-bucket denoising-loss keys."""
    e = [float(v) for v in edges]
    return tuple(f"{edge_name(lo)}-{edge_name(hi)}" for lo, hi in zip(e, e[1:]))


def denoise_bucket_key(lo: float, hi: float) -> str:
    return f"{DENOISE_BUCKET_PREFIX}{edge_name(float(lo))}-{edge_name(float(hi))}"


def denoise_loss_keys(edges: Iterable[float] = T_BUCKET_EDGES) -> tuple[str, ...]:
    """eval/denoise_loss and its per-bucket keys, in bucket order."""
    return (DENOISE_LOSS,) + tuple(DENOISE_BUCKET_PREFIX + name for name in t_bucket_names(edges))


def kid_name(fd_metric: str) -> str:
    """The KID key that goes with an FD key (no `eval/`): fid -> kid (Inception), fd_pixel -> kid_pixel,
    fd_<x> -> kid_<x>."""
    return "kid" if fd_metric == "fid" else "kid_" + fd_metric.removeprefix("fd_")


# --------------------------------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class MetricSpec:
    key: str  # exact key, or a pattern with {extractor} / {band} / {bucket} parts
    direction: str  # LOWER | HIGHER | NONE
    producer: str  # "loop", "denoise_loss", an eval.metrics option, or "driver"
    summary: str

    @property
    def is_pattern(self) -> bool:
        return "{" in self.key

    @property
    def regex(self) -> re.Pattern[str]:
        parts = re.split(r"\{[a-z_]+\}", self.key)
        return re.compile("^" + r"[A-Za-z0-9_.\-]+".join(re.escape(p) for p in parts) + "$")


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(TRAIN_LOSS, LOWER, "loop", "training v-loss, mean since the last log line"),
    MetricSpec(TRAIN_LR, NONE, "loop", "learning rate"),
    MetricSpec(TRAIN_IMAGES_PER_S, NONE, "loop", "training throughput"),
    MetricSpec(EVAL_SECONDS, NONE, "loop", "wall time of one evaluation"),
    MetricSpec(DENOISE_LOSS, LOWER, "denoise_loss", "held-out v-loss: fixed batch, noise and t grid"),
    MetricSpec(DENOISE_BUCKET_PREFIX + "{bucket}", LOWER, "denoise_loss", "held-out v-loss inside one t-bucket"),
    # floors and spreads first: the generic patterns below would match them too
    MetricSpec("eval/fd_{extractor}_floor", NONE, "evaluator", "data-vs-data Fréchet distance at the same n"),
    MetricSpec("eval/fid_floor", NONE, "fid", "data-vs-data FID at the same n"),
    MetricSpec("eval/kid_{extractor}_floor", NONE, "kid", "data-vs-data KID"),
    MetricSpec("eval/kid_floor", NONE, "kid", "data-vs-data KID (Inception)"),
    MetricSpec("eval/kid_{extractor}_std", NONE, "kid", "SD of half-size subset KID estimates"),
    MetricSpec("eval/kid_std", NONE, "kid", "SD of half-size subset KID estimates (Inception)"),
    MetricSpec("eval/is_std", NONE, "is", "SD of the Inception Score over 10 splits"),
    MetricSpec(FD_PIXEL, LOWER, "fd_pixel", "Fréchet distance of raw pixels"),
    MetricSpec(FID, LOWER, "fid", "FID, Inception-v3 2015-12-05 pool3 (torch-fidelity)"),
    MetricSpec(IS, HIGHER, "is", "Inception Score"),
    MetricSpec(f"eval/fd_{CLASSIFIER_EXTRACTOR}", LOWER, "classifier", "Fréchet distance of digit-CNN features"),
    MetricSpec("eval/fd_{extractor}", LOWER, "evaluator", "Fréchet distance of another extractor's features"),
    MetricSpec("eval/kid", LOWER, "kid", "kernel distance of Inception features"),
    MetricSpec("eval/kid_{extractor}", LOWER, "kid", "kernel distance of pixels or another extractor's features"),
    MetricSpec("eval/cls_accuracy_{extractor}", HIGHER, "classifier", "the classifier's held-out accuracy"),
    MetricSpec("eval/cls_label_acc_{extractor}", HIGHER, "classifier",
               "share of samples classified as the label they were generated for"),
    MetricSpec("eval/cls_score_{extractor}", HIGHER, "classifier", "exp E KL(p(y|x) || p(y)) of the classifier"),
    MetricSpec(SPEC_ERR_PREFIX + "{band}", LOWER, "spectrum", "mean |log10 power error| in one frequency band"),
    MetricSpec(SWEEP_SECONDS, NONE, "driver", "wall time of the sweep"),
    MetricSpec(SWEEP_TRIALS, NONE, "driver", "trials run"),
    MetricSpec(SWEEP_ERRORED, NONE, "driver", "trials that errored"),
    MetricSpec(SWEEP_ROUND, NONE, "driver", "adaptive rounds analysed (step = round)"),
    MetricSpec(SWEEP_SEEDS_PER_ARM, NONE, "driver", "seeds per arm after a round (step = round)"),
)
_EXACT = {m.key: m for m in METRICS if not m.is_pattern}


def lookup(key: str) -> MetricSpec | None:
    """The registry entry of a metric key (exact keys first, then patterns in registry order); None if unknown."""
    if key in _EXACT:
        return _EXACT[key]
    return next((m for m in METRICS if m.is_pattern and m.regex.match(key)), None)


def direction(key: str) -> str:
    """LOWER, HIGHER or NONE; an unknown key (e.g. a user's own metric) counts as lower-is-better, like a loss."""
    spec = lookup(key)
    return spec.direction if spec is not None else LOWER


def higher_is_better(key: str) -> bool:
    return direction(key) == HIGHER


def search_mode(key: str) -> str:
    """Optuna/Tune mode for a metric: "max" for higher-is-better, else "min"."""
    return "max" if higher_is_better(key) else "min"


def _option_keys(option: str, options: tuple[str, ...]) -> list[str]:
    """Keys (without eval/) one eval.metrics option emits, given the other options requested with it."""
    cls = CLASSIFIER_EXTRACTOR
    if option == "fd_pixel":
        return ["fd_pixel", "fd_pixel" + FLOOR_SUFFIX]
    if option == "fid":  # the Inception pass also gives the Inception Score
        return ["fid", "fid" + FLOOR_SUFFIX, "is", "is" + STD_SUFFIX]
    if option == "is":
        return ["is", "is" + STD_SUFFIX]
    if option == "classifier":
        return [f"fd_{cls}", f"fd_{cls}{FLOOR_SUFFIX}", f"cls_accuracy_{cls}", f"cls_score_{cls}",
                f"cls_label_acc_{cls}"]
    if option == "spectrum":
        return [SPEC_ERR_PREFIX.removeprefix(EVAL_PREFIX) + band for band in SPECTRUM_BANDS]
    if option == "kid":  # raw pixels always, plus every other feature source requested with it
        sources = ["fd_pixel"] + (["fid"] if "fid" in options else []) + ([f"fd_{cls}"] if "classifier" in options
                                                                          else [])
        return [kid_name(s) + suffix for s in sources for suffix in ("", STD_SUFFIX, FLOOR_SUFFIX)]
    raise ValueError(f"unknown eval metric {option!r}; known: {', '.join(EVAL_METRIC_OPTIONS)}")


def evaluator_keys(options: Iterable[str]) -> set[str]:
    """Keys without `eval/` the evaluator can return for these eval.metrics options (floors are left out only
    when no second real set exists, with a warning; cls_label_acc_* only for labelled samples)."""
    opts = tuple(options)
    return {k for option in opts for k in _option_keys(option, opts)}


def emitted_metrics(options: Iterable[str], *, denoise_loss: bool,
                    edges: Iterable[float] = T_BUCKET_EDGES) -> set[str]:
    """Every metric key a trial with these eval settings reports (the spec validator's list)."""
    names = {TRAIN_LOSS, TRAIN_LR, TRAIN_IMAGES_PER_S, EVAL_SECONDS}
    if denoise_loss:
        names.update(denoise_loss_keys(edges))
    names.update(EVAL_PREFIX + k for k in evaluator_keys(options))
    return names


# -------------------------------------------------------------------------------------------------- MLflow names
PARENT_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"  # opens the runs table
ROLE_TAG = "specforce.role"
ROLE_SWEEP, ROLE_TRIAL, ROLE_TRAIN = "sweep", "trial", "train"
STATUS_TAG = "specforce.status"  # refines MLflow's FINISHED; its absence never excludes a run (docs/design.md §3)
STATUS_RUNNING, STATUS_COMPLETED, STATUS_STOPPED_EARLY = "running", "completed", "stopped_early"
STATUS_FAILED, STATUS_INTERRUPTED = "failed", "interrupted"
TRIAL_ID_TAG = "specforce.trial_id"
SWEEP_KEY_TAG = "specforce.sweep_key"
RUN_NAME_TAG = "specforce.run_name"  # `specforce train` runs: found again by name on a rerun
SEARCH_TAG, SEARCH_OPTUNA = "specforce.search", "optuna"
PROVENANCE_TAG = "specforce.provenance"  # JSON: per metric, extractor, weights, sample count, reference set
ADAPTIVE_DESIGN_TAG = "specforce.adaptive.design"
ADAPTIVE_ROUND_TAG = "specforce.adaptive.round"
ADAPTIVE_DECISION_TAG = "specforce.adaptive.decision"
ADAPTIVE_REASON_TAG = "specforce.adaptive.reason"
JOB_SPEC_METADATA = "specforce.spec"  # Ray Jobs metadata of `specforce submit`

# artifacts (paths inside a run's artifact root) and the folders the loop writes them to
ARTIFACT_SPEC = "spec/spec.json"  # sweep parent run: the spec as run
ARTIFACT_REPORT_DIR = "report"  # sweep parent run: `specforce report` output
ARTIFACT_ADAPTIVE_ROUND = "adaptive/round-{}.json"  # sweep parent run, per round
ARTIFACT_CONFIG_DIR = "config"
ARTIFACT_RESOLVED_CONFIG = "config/resolved.yaml"
ARTIFACT_TRIAL_RECORD = "config/record.json"  # TrialRecord.to_json()
ARTIFACT_SAMPLES_DIR, ARTIFACT_SPECTRAL_DIR, ARTIFACT_EVAL_DIR = "samples", "spectral", "eval"
ARTIFACT_CHECKPOINTS_DIR, ARTIFACT_LOGS_DIR = "checkpoints", "logs"
ARTIFACT_FINAL_SAMPLES = "samples/final.png"
ARTIFACT_SPECTRA = "eval/spectra.json"

# ------------------------------------------------------------------------------ a run folder (`train --out`, a trial)
RUN_CONFIG_FILE = "config.yaml"  # the resolved config, written at the start
RUN_CHECKPOINT_FILE = "checkpoint.pt"  # model, EMA, optimizer, counters: what a resume reads
RUN_EMA_FILE = "ema.pt"  # the sampling weights, written at the end (`specforce eval` reads it)
RUN_METRICS_FILE = "metrics.jsonl"  # every metrics row of rank 0, one JSON object a line

# ------------------------------------------------------------------------------------ tracking store, Ray storage
DEFAULT_STORE_FILE = "mlflow.db"
DEFAULT_STORAGE_DIR = "ray_results"  # a sweep's Ray storage when --storage is not given


def default_storage(cwd: str | pathlib.Path | None = None) -> str:
    """`<cwd>/ray_results`, absolute: Ray's trial processes run in other working directories."""
    return str((pathlib.Path(cwd or pathlib.Path.cwd()) / DEFAULT_STORAGE_DIR).resolve())


def default_tracking_uri(cwd: str | pathlib.Path | None = None) -> str:
    """MLflow's default store (docs/design.md §3) made absolute: `sqlite:///<cwd>/mlflow.db`, symlinks resolved.
    Absolute because Ray processes run in other working directories."""
    return f"sqlite:///{(pathlib.Path(cwd or pathlib.Path.cwd()) / DEFAULT_STORE_FILE).resolve()}"


# ---------------------------------------------------------------------------------------------------------- params
# params that describe what a run measured or derived, not how it was configured: never a comparison's context
DATA_SPECTRUM_PREFIX = "data.spectrum_"  # power-law fit of the training data's spectrum: alpha, r0
FITTED_PREFIX = "spectral.fitted_"  # the snr schedule's own fit (when it fitted): alpha, r0
DATA_SPECTRUM_PARAMS = {k: DATA_SPECTRUM_PREFIX + k for k in ("alpha", "r0")}
FITTED_PARAMS = {k: FITTED_PREFIX + k for k in ("alpha", "r0")}
SF_USED_PREFIX = "spectral.used."  # + each key of SpectralForcing.describe()
# The training data's digest (first 12 hex digits of its identity), logged for datasets that read files (a prepared
# dataset's manifest digest, a raw folder's listing digest): a context param, so runs on different data never pair.
DATA_DIGEST_PARAM = "data.digest"
DATA_DIGEST_CHARS = 12
DERIVED_PARAMS = ("model.tokens", "model.parameters", "model.bottleneck", "model.compression_ratio")
MODEL_TOKENS, MODEL_PARAMETERS, MODEL_BOTTLENECK, MODEL_COMPRESSION_RATIO = DERIVED_PARAMS
# model.options.<key> and model.reported.<key> (trainers/model/contract.py) restate what model.target and the
# model.options param already fix: listed here so they never lengthen a comparison's context label
MEASURED_PARAM_PREFIXES = (DATA_SPECTRUM_PREFIX, FITTED_PREFIX, SF_USED_PREFIX, MODEL_TOKENS, MODEL_PARAMETERS,
                           MODEL_COMPRESSION_RATIO, "model.options.", "model.reported.")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config tree -> dotted keys (the MLflow param names); `options` mappings stay one value."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and key != "options":
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


# ------------------------------------------------------------------------- Spectral Forcing: schedules and c(t)
SF_SCHEDULES = ("none", "linear", "contour", "snr", "constant")
# The operator's defaults (config `spectral:`, SpectralForcing's keywords, the report's labels): c(t) in radius units
SF_DEFAULTS = {"schedule": "linear", "c_min": 0.05, "c_max": 1.0, "c_const": 0.5, "kappa": 30.0, "alpha": 2.0,
               "t_eps": 0.05}


def sf_cutoff(schedule: str, t: Any, ops: Any, *, c_min: float, c_max: float, alpha: float, r0: float | None,
              c_const: float) -> Any:
    """The SF cutoff c(t) (t = 0 noise, t = 1 data), element-wise over an array `t` of any library.

    The one written form of the formula: trainers/model/spectral_forcing.py calls it on torch tensors and
    analysis/schedules.py on NumPy arrays. `ops` gives `where(cond, a, b)`, `clip(x, lo, hi)` (either bound may be
    None) and `full_like(x, value)` for that library; the rest is arithmetic both support. `none` is +inf.
    linear c_min + (c_max - c_min) t; constant c_const; contour min(c_max, c_min (1 - t)^(-2/alpha));
    snr clip(r0 (t / (1 - t))^(2/alpha), c_min, c_max). At t = 1 contour and snr are c_max, with no inf * 0.
    """
    if schedule == "none":
        return ops.full_like(t, float("inf"))
    if schedule == "linear":
        return c_min + (c_max - c_min) * t
    if schedule == "constant":
        return ops.full_like(t, c_const)
    at_data = t >= 1.0
    # 1 - t and t / (1 - t) are evaluated only where t < 1
    one_minus = ops.where(at_data, ops.full_like(t, 1.0), 1.0 - t)
    if schedule == "contour":
        front = c_min * one_minus ** (-2.0 / alpha) if c_min > 0 else ops.full_like(t, 0.0)
        return ops.where(at_data, ops.full_like(t, c_max), ops.clip(front, None, c_max))
    if schedule != "snr":
        raise ValueError(f"schedule: unknown schedule {schedule!r}; choose one of {SF_SCHEDULES}")
    ratio = ops.where(at_data, ops.full_like(t, 1.0), t / one_minus)
    return ops.where(at_data, ops.full_like(t, c_max), ops.clip(r0 * ratio ** (2.0 / alpha), c_min, c_max))


# ---------------------------------------------------------------------------------------------------- trial record
RECORD_VERSION = 1
# keys of a worker's report (a Tune result) besides its metrics: the driver turns them into MLflow writes
REPORT_RECORD_KEY = "specforce/record"  # TrialRecord.to_json(), with a worker's first report
REPORT_HISTORY_KEY = "specforce/history"  # JSON list of metric rows {images, key: value} since the run began
REPORT_PROVENANCE_KEY = "specforce/provenance"  # JSON: the evaluation provenance (tag PROVENANCE_TAG)


def _plain(value: Any) -> Any:
    """JSON-shaped copy (tuples -> lists, mappings -> dicts) so a record equals its round trip."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class TrialRecord:
    """What one trial ran: the resolved config tree (`TrainConfig.model_dump(mode="json")`), params derived from the
    built model (dotted keys, e.g. DERIVED_PARAMS), the power-law fit of the training data's spectrum ({"alpha", "r0"}, NaN when the
    data is no power law), the snr schedule's own fit ({} unless it fitted), and `SpectralForcing.describe()` of the
    operator the model used (None without SF). `dataset`: what the training data was ({"name", "digest", "source"},
    logged as the run's MLflow dataset input; None in records written before it existed)."""

    config: dict[str, Any]
    derived: dict[str, Any] = field(default_factory=dict)
    data_spectrum: dict[str, float] = field(default_factory=dict)
    fitted: dict[str, float] = field(default_factory=dict)
    spectral: dict[str, Any] | None = None
    version: int = RECORD_VERSION
    dataset: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.config, Mapping) or not self.config:
            raise ValueError(f"TrialRecord.config: the resolved config tree is required, got {self.config!r}")
        clash = [k for k in self.derived if not isinstance(k, str) or "." not in k
                 or k.startswith((DATA_SPECTRUM_PREFIX, FITTED_PREFIX, SF_USED_PREFIX))]
        if clash:
            raise ValueError(f"TrialRecord.derived: {clash} are not dotted derived-param names (data spectrum, snr "
                             "fit and the SF operator have their own fields)")
        for name, part in (("data_spectrum", self.data_spectrum), ("fitted", self.fitted)):
            if set(part) - {"alpha", "r0"}:
                raise ValueError(f"TrialRecord.{name}: keys must be alpha and r0, got {sorted(part)}")
        if self.dataset is not None and (not isinstance(self.dataset, Mapping)
                                         or set(self.dataset) != {"name", "digest", "source"}):
            raise ValueError(f"TrialRecord.dataset: keys must be name, digest and source, got {self.dataset!r}")
        for name in ("config", "derived", "data_spectrum", "fitted", "spectral", "dataset"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _plain(value))

    @classmethod
    def from_run(cls, config: Mapping[str, Any], extra_params: Mapping[str, Any],
                 spectral: Mapping[str, Any] | None, dataset: Mapping[str, str] | None = None) -> "TrialRecord":
        """From the loop's pieces: the config tree, its dotted extra params (model shape, data spectrum, snr fit),
        the SF operator's describe() and the training data's identity."""
        extra = dict(extra_params)
        pick = lambda names: {k: extra.pop(dotted) for k, dotted in names.items() if dotted in extra}  # noqa: E731
        data_spectrum, fitted = pick(DATA_SPECTRUM_PARAMS), pick(FITTED_PARAMS)
        return cls(dict(config), extra, data_spectrum, fitted, None if spectral is None else dict(spectral),
                   dataset=None if dataset is None else dict(dataset))

    def params(self) -> dict[str, Any]:
        """The run's MLflow params: dotted config keys, derived values (a resolved value replaces the config's None),
        the data spectrum fit, the snr fit, and the SF operator's arguments as `spectral.used.<name>`."""
        out = flatten(self.config)
        out.update(self.derived)
        out.update({DATA_SPECTRUM_PARAMS[k]: v for k, v in self.data_spectrum.items()})
        out.update({FITTED_PARAMS[k]: v for k, v in self.fitted.items()})
        if self.spectral is not None:
            out.update({SF_USED_PREFIX + k: v for k, v in self.spectral.items()})
        return out

    @property
    def total_images(self) -> int | None:
        value = self.config.get("optim", {}).get("total_images")
        return int(value) if value is not None else None

    def to_dict(self) -> dict[str, Any]:
        out = {"version": self.version, "config": self.config, "derived": self.derived,
               "data_spectrum": self.data_spectrum, "fitted": self.fitted, "spectral": self.spectral}
        if self.dataset is not None:
            out["dataset"] = self.dataset
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialRecord":
        if not isinstance(data, Mapping):
            raise ValueError(f"a trial record is a mapping, got {type(data).__name__}")
        version = data.get("version")
        if version != RECORD_VERSION:
            raise ValueError(f"trial record version {version!r}: this specforce reads version {RECORD_VERSION}")
        known = {"version", "config", "derived", "data_spectrum", "fitted", "spectral", "dataset"}
        if set(data) - known:
            raise ValueError(f"trial record: unknown keys {sorted(set(data) - known)}")
        return cls(config=data.get("config"), derived=data.get("derived") or {},
                   data_spectrum=data.get("data_spectrum") or {}, fitted=data.get("fitted") or {},
                   spectral=data.get("spectral"), version=version, dataset=data.get("dataset"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)  # NaN stays NaN (Python's JSON reads it back)

    @classmethod
    def from_json(cls, text: str) -> "TrialRecord":
        return cls.from_dict(json.loads(text))


if __name__ == "__main__":
    for m in METRICS:
        print(f"{m.key:<34} {m.direction:<7} {m.producer:<13} {m.summary}")
    print(f"t-buckets: {', '.join(t_bucket_names())}")
