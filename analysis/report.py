"""`specforce report`: from an experiment's MLflow runs to the verdict, tables, plots, report.html and report.md.

Writes into --out: report.html (self-contained), report.md, runs.parquet, history.parquet, comparisons.csv,
interactions.csv, excluded.csv, resolution.csv (which sample-quality measures separate the arms at this n), regime.csv
and regime_trend.csv (SF gain vs patch compression ratio, when the runs vary it) and the PNGs; logs them under `report/` on the sweep's parent run (the latest sweep
of the experiment unless --sweep-run-id names one). Prints the verdict sentence and the report's path.

    python -m analysis.report --experiment demo --tracking-uri sqlite:///mlflow.db --out reports/demo
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis.artifacts import read_image, read_text
from analysis.compare import Comparison, compare_arms, metric_values
from analysis.intervals import PAIRED, method_label
from analysis.runs import RunTables, load_tables, metric_columns
from analysis.search import SearchSummary, search_summary, spec_search_space
from analysis.sections import build_sections, excluded_by_run
from analysis import plots
from analysis.regime import ratio_table, regime_sentences, trend_table, varies_ratio
from analysis.resolution import order_secondary, resolution_table
from analysis.render import to_html, to_markdown
from analysis.schedules import schedule_from_params
from analysis.tables import write_parquet
from analysis.forest import forest_rows, plot_forest
from analysis.front import primary_caption
from analysis.headline import interaction_table, main_interaction, main_rows, primary_table, secondary_table
from analysis.latex import write_latex
from analysis.verdict import main_group, missing_arms, pct, power_messages, verdict
import specforce_contracts as C
from specforce_contracts import SF_DEFAULTS, default_tracking_uri

NOTE_TAG = "mlflow.note.content"  # MLflow's run description (shown in the UI's run list and run page)
HEADLINE = (C.FID, C.FD_PIXEL, C.DENOISE_LOSS, C.IS)
DEFAULT_PRIMARY = C.DENOISE_LOSS  # the low-variance measure (docs/design.md §4), when the runs logged it
SPECTRAL_ERRORS = tuple(C.SPEC_ERR_PREFIX + band for band in C.SPECTRUM_BANDS)


@dataclass
class ReportResult:
    verdict: str  # the plain-sentence answer for the primary metric
    out_dir: Path
    html_path: Path
    md_path: Path
    runs_path: Path
    history_path: Path
    comparisons_path: Path
    metrics: list[str]
    comparison: Comparison
    messages: list[str]  # what is missing and what to run (missing arms, then pairs needed for 80% power)
    excluded: pd.DataFrame  # one row per run kept apart, with reasons
    figures: dict[str, Path] = field(default_factory=dict)
    search: SearchSummary | None = None
    logged_run_id: str | None = None  # the sweep run the report was logged to (None: not logged)
    primary: str = ""  # the metric the headline speaks about
    primary_source: str = ""  # where it came from: the argument, the spec's analysis section, or the default
    regime: list[str] = field(default_factory=list)  # SF gain vs compression ratio in words (when the runs vary it)
    resolution: pd.DataFrame | None = None  # floor measures: do they separate the arms at this n (analysis.resolution)
    tex_path: Path | None = None  # report.tex (booktabs tables table_*.tex beside it)


def default_metrics(runs: pd.DataFrame) -> list[str]:
    """Headline metrics first (the first one drives the verdict), then other extractors, spectra, t buckets."""
    have = metric_columns(runs)
    head = [m for m in HEADLINE if m in have]
    extractors = sorted(m for m in have
                        if m.startswith(C.FD_PREFIX) and not m.endswith(C.FLOOR_SUFFIX) and m not in head)
    kernels = sorted(m for m in have if m.startswith(C.KID_PREFIX) and not m.endswith((C.FLOOR_SUFFIX, C.STD_SUFFIX)))
    spectra = [m for m in SPECTRAL_ERRORS if m in have]
    buckets = sorted(m for m in have if m.startswith(C.DENOISE_BUCKET_PREFIX))
    return head + extractors + kernels + spectra + buckets


def _check_metrics(metrics: Sequence[str] | None, runs: pd.DataFrame) -> list[str]:
    have = metric_columns(runs)
    if metrics is None:
        chosen = default_metrics(runs)
        if not chosen:
            raise ValueError(f"the runs report no eval/* metric to compare; metrics logged: {have}")
        return chosen
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"metrics must be a non-empty list of metric names, got {metrics!r}")
    unknown = [m for m in metrics if m not in have]
    if unknown:
        raise ValueError(f"metrics {unknown} were not logged by any run; available: {have}")
    return list(dict.fromkeys(metrics))


def _target_run(client: MlflowClient, tables: RunTables, sweep_run_id: str | None) -> str | None:
    if sweep_run_id is not None:
        try:
            client.get_run(sweep_run_id)
        except MlflowException as err:
            raise ValueError(f"sweep_run_id {sweep_run_id!r} is not a run in this tracking store: {err}") from err
        return sweep_run_id
    if tables.sweeps.empty:
        return None
    return str(tables.sweeps.sort_values("start_time").iloc[-1]["run_id"])


def _spec_space(tracking_uri: str, tables: RunTables) -> tuple[dict, str | None]:
    """Search space and metric from the newest sweep that logged a spec with a search section."""
    for run_id in tables.sweeps.sort_values("start_time", ascending=False)["run_id"]:
        space, metric, _ = spec_search_space(read_text(tracking_uri, run_id, C.ARTIFACT_SPEC))
        if space:
            return space, metric
    return {}, None


def spec_analysis(tracking_uri: str, tables: RunTables, sweep_run_id: str | None) -> tuple[dict, str | None]:
    """The `analysis` section of the logged spec (spec/spec.json on a sweep parent run) and that run's id: the named
    sweep's when given, else the newest sweep that logged one; ({}, None) when no sweep logged a spec with it."""
    sweeps = tables.sweeps.sort_values("start_time", ascending=False)["run_id"].tolist()
    if sweep_run_id is not None:
        sweeps = [sweep_run_id] + [r for r in sweeps if r != sweep_run_id]
    for run_id in sweeps:
        text = read_text(tracking_uri, run_id, C.ARTIFACT_SPEC)
        if not text:
            continue
        try:
            section = json.loads(text).get("analysis")
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"spec/spec.json of sweep run {run_id} is not a JSON object: {err}") from err
        if isinstance(section, dict):
            return section, run_id
    return {}, None


def choose_primary(primary: str | None, spec: dict, spec_run: str | None, chosen: list[str],
                   have: list[str]) -> tuple[str, str]:
    """(primary metric, where it came from): the argument, else the spec's analysis.primary, else
    eval/denoise_loss when compared, else the first compared metric."""
    if primary is not None:
        if primary not in have:
            raise ValueError(f"primary metric {primary!r} was not logged by any run; available: {have}")
        return primary, "set by --primary"
    if spec.get("primary"):
        declared = spec["primary"]
        if declared not in have:
            raise ValueError(f"analysis.primary {declared!r} in the spec logged on sweep run {spec_run} was not "
                             f"logged by any run; available: {have} (override it with --primary)")
        return declared, "declared in the spec's analysis.primary"
    if DEFAULT_PRIMARY in chosen:
        return DEFAULT_PRIMARY, "default: the held-out denoising loss"
    return chosen[0], "default: the first compared metric"


def _setting(value, spec: dict, key: str, default):
    """The argument when given, else the spec's analysis.<key> when set, else the default."""
    if value is not None:
        return value
    return spec[key] if spec.get(key) is not None else default


def _schedule_configs(runs: pd.DataFrame, best: pd.DataFrame) -> list[tuple[str, dict]]:
    grid_sf = runs[(runs["sf"] == True) & runs["search"].isna()]  # noqa: E712
    picks = [r for _, r in grid_sf.iterrows()]
    if len(best):
        picks += [runs.set_index("run_id").loc[best.iloc[0]["run_id"]].rename(best.iloc[0]["run_id"])]
    configs: dict[str, dict] = {}
    for row in picks:
        # a trial that failed before logging its config has NaN in every params column: no schedule to draw
        params = {k.removeprefix("params."): v for k, v in row.items() if str(k).startswith("params.") and pd.notna(v)}
        if params.get("spectral.schedule") in (None, "none"):
            continue
        kw = schedule_from_params(params)
        label = _schedule_label(kw) + (" · best searched" if row.get("search") == C.SEARCH_OPTUNA else "")
        configs.setdefault(label, kw)
    if not configs:  # no SF run: show what the options look like at their defaults
        configs = {_schedule_label({"schedule": s}): {"schedule": s} for s in ("linear", "contour", "constant")}
    return list(configs.items())[:6]


def _schedule_label(kw: dict) -> str:
    s, kw = kw["schedule"], {**SF_DEFAULTS, **kw}  # what the label leaves out ran at the operator's defaults
    detail = {"linear": f"c_min={kw['c_min']:g}, c_max={kw['c_max']:g}",
              "contour": f"α={kw['alpha']:.3g}, c_min={kw['c_min']:g}",
              "snr": f"α={kw['alpha']:.3g}, r0={kw.get('r0') or 0:.3g}",
              "constant": f"c={kw['c_const']:g}"}[s]
    return f"{s} ({detail})"


def _front(runs: pd.DataFrame) -> tuple[float, float] | None:
    cols = (f"params.{C.DATA_SPECTRUM_PARAMS['alpha']}", f"params.{C.DATA_SPECTRUM_PARAMS['r0']}")
    if not all(c in runs for c in cols):
        return None
    fits = runs[list(cols)].apply(pd.to_numeric, errors="coerce").dropna()
    return (float(fits.iloc[:, 0].median()), float(fits.iloc[:, 1].median())) if len(fits) else None


def _samples(tracking_uri: str, values: pd.DataFrame) -> tuple[dict, dict]:
    """Final sample grid of one seed per (patch, arm), the same seed for both arms when they share one."""
    grids, labels = {}, {}
    for patch, at in values.groupby("patch_size"):
        base, sf = at[at["sf"] == False], at[at["sf"] == True]  # noqa: E712
        common = sorted(set(base["seed"]) & set(sf["seed"]))
        for is_sf, arm in ((False, base), (True, sf)):
            pick = arm[arm["seed"] == common[0]] if common else arm.sort_values("seed")
            grids[(int(patch), is_sf)] = (read_image(tracking_uri, pick.iloc[0]["run_id"], C.ARTIFACT_FINAL_SAMPLES)
                                          if len(pick) else None)
        seed_note = f", seed {int(common[0])}" if common else ""
        tokens = at["tokens"].dropna()
        labels[int(patch)] = f"patch {int(patch)}" + (f" ({int(tokens.iloc[0])} tokens)" if len(tokens) else "") \
            + seed_note
    return grids, labels


def _figures(out: Path, tracking_uri: str, tables: RunTables, metrics: list[str], comparison: Comparison,
             search: SearchSummary | None, ratios: pd.DataFrame | None = None) -> dict[str, Path]:
    primary = metrics[0]
    group = main_group(comparison, primary)
    headline = [m for m in metrics if not m.startswith(C.DENOISE_BUCKET_PREFIX)][:4]
    values = {m: metric_values(tables.runs, m, main_group(comparison, m)) for m in headline}
    head_table = comparison.comparisons[comparison.comparisons["metric"].isin(headline)]
    rows, inter = forest_rows(main_rows(comparison, primary), main_interaction(comparison, primary))
    figs = {
        "forest": plot_forest(rows, inter, primary, f"{pct(comparison.confidence)} "
                              f"{method_label(comparison.method)} interval", out / "forest.png"),
        "metric_vs_patch": plots.plot_metric_vs_patch(values, out / "metric_vs_patch.png"),
        "gain_vs_tokens": plots.plot_gain_vs_tokens(head_table, out / "gain_vs_tokens.png"),
        "bucket_gains": plots.plot_bucket_gains(comparison.comparisons, out / "gain_per_t_bucket.png"),
    }
    if ratios is not None and varies_ratio(ratios):
        figs["gain_vs_ratio"] = plots.plot_gain_vs_ratio(ratios, out / "gain_vs_compression_ratio.png")
    primary_values = metric_values(tables.runs, primary, group)
    figs["training_curves"] = plots.plot_training_curves(tables.history, primary_values, [C.TRAIN_LOSS, primary],
                                                         out / "training_curves.png")
    grids, labels = _samples(tracking_uri, primary_values)
    figs["samples"] = plots.plot_samples(grids, labels, out / "samples.png")
    best = search.best if search else pd.DataFrame()
    figs["schedules"] = plots.plot_schedules(_schedule_configs(tables.runs, best), _front(tables.runs),
                                             out / "cutoff_schedules.png")
    if search is not None:
        baselines = metric_values(tables.runs, search.metric)
        figs["alpha"] = plots.plot_alpha(search.sf_runs, baselines[baselines["sf"] == False],  # noqa: E712
                                         search.metric, out / "metric_vs_alpha.png")
        figs["importance"] = plots.plot_importance(search.importance, search.metric, search.n_trials,
                                                   out / "importance.png")
    return {k: v for k, v in figs.items() if v is not None}


def build_report(experiments: list[str], tracking_uri: str, out_dir: Path, *, metrics: Sequence[str] | None = None,
                 sweep_run_id: str | None = None, log_to_mlflow: bool = True, confidence: float | None = None,
                 n_resamples: int = 10_000, primary: str | None = None, method: str | None = None,
                 min_effect: float | None = None) -> ReportResult:
    """Load, compare, plot, render and (optionally) log the report; returns what it wrote and the verdict.

    primary / confidence / method / min_effect: None takes the value from the `analysis` section of the sweep's
    logged spec (spec/spec.json), else the defaults (eval/denoise_loss when logged, 0.95, Student-t, the observed
    effect)."""
    if isinstance(experiments, str):
        experiments = [experiments]
    out = Path(out_dir)
    tables = load_tables(experiments, tracking_uri)
    trials = tables.runs[tables.runs["role"] == C.ROLE_TRIAL] if len(tables.runs) else tables.runs
    if trials.empty:
        raise ValueError(f"experiment(s) {experiments} in {tracking_uri} have no trial runs "
                         "(tag specforce.role=trial): run a sweep first")
    chosen = _check_metrics(metrics, tables.runs)
    client = MlflowClient(tracking_uri)
    target = _target_run(client, tables, sweep_run_id) if log_to_mlflow else None
    spec, spec_run = spec_analysis(tracking_uri, tables, sweep_run_id)
    primary, primary_source = choose_primary(primary, spec, spec_run, chosen, metric_columns(tables.runs))
    chosen = [primary] + [m for m in chosen if m != primary]  # the primary leads: the verdict speaks about it
    confidence = _setting(confidence, spec, "confidence", 0.95)
    method = _setting(method, spec, "method", "t")
    min_effect = _setting(min_effect, spec, "min_effect", None)
    from analysis.adaptive import adaptive_summary, register_confseq

    adaptive_run = sweep_run_id or spec_run or _target_run(client, tables, None)  # the newest sweep by default
    adaptive = adaptive_summary(tracking_uri, adaptive_run, tables.runs) if adaptive_run else None
    if adaptive is not None:  # the sweep chose its seeds from the data: its intervals must be anytime-valid
        method, confidence = register_confseq(adaptive.design), 1.0 - adaptive.design["alpha"]
    comparison = compare_arms(tables.runs, chosen, confidence=confidence, n_resamples=n_resamples, method=method,
                              primary=primary, min_effect=min_effect)
    sentence = verdict(comparison, primary)
    resolution = resolution_table(tables.runs, comparison)
    chosen = order_secondary(chosen, resolution)  # measures that separate the arms at this n lead the secondary list
    ratios = ratio_table(tables.runs, comparison, primary)
    trends = trend_table(ratios, comparison)
    regime = regime_sentences(ratios, trends, comparison) if varies_ratio(ratios) else []
    missing = missing_arms(tables.runs)
    messages = missing + power_messages(comparison)
    space, spec_metric = _spec_space(tracking_uri, tables)
    search = None
    if (tables.runs["search"] == C.SEARCH_OPTUNA).any():
        metric = spec_metric if spec_metric in metric_columns(tables.runs) else chosen[0]
        search = search_summary(tables.runs, metric, space)

    out.mkdir(parents=True, exist_ok=True)
    runs_path, history_path = write_parquet(tables.runs, tables.history, out)
    comparisons_path = out / "comparisons.csv"
    comparison.comparisons.to_csv(comparisons_path, index=False)
    comparison.interactions.to_csv(out / "interactions.csv", index=False)
    excluded = excluded_by_run(comparison.excluded, chosen)
    excluded.to_csv(out / "excluded.csv", index=False)
    resolution.to_csv(out / "resolution.csv", index=False)
    if regime:
        ratios.to_csv(out / "regime.csv", index=False)
        trends.to_csv(out / "regime_trend.csv", index=False)
    figures = _figures(out, tracking_uri, tables, chosen, comparison, search, ratios)

    title = f"Spectral Forcing ablation · {', '.join(experiments)}"
    subtitle = (f"{len(trials)} trial runs in {len(tables.sweeps)} sweep(s) · tracking store {tracking_uri} · "
                f"generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    sections = build_sections(tables, chosen, comparison, sentence, missing, excluded, figures, search,
                              primary_source, regime=(regime, ratios, trends), resolution=resolution,
                              n_resamples=n_resamples)
    if adaptive is not None:  # right after the verdict: seeds per arm, rounds, why the sweep stopped
        sections.insert(1, adaptive.section())
    footer = ("For papers: report.tex and its booktabs tables (table_*.tex); every figure also as PDF and SVG beside "
              "the PNG. Data: runs.parquet, history.parquet, comparisons.csv, interactions.csv.")
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(to_html(title, subtitle, sections, footer), encoding="utf-8")
    md_path.write_text(to_markdown(title, sections, subtitle, footer), encoding="utf-8")
    tex_path = write_paper_files(out, title, sentence, sections, comparison, chosen, figures, tables.runs)
    if target is not None:
        client.log_artifacts(target, str(out), artifact_path=C.ARTIFACT_REPORT_DIR)
        # the run list's Description column shows the note: the answer without opening a file
        client.set_tag(target, NOTE_TAG, sentence)
    return ReportResult(sentence, out, html_path, md_path, runs_path, history_path, comparisons_path, chosen,
                        comparison, messages, excluded, figures, search, target, primary, primary_source, regime,
                        resolution, tex_path)


def write_paper_files(out: Path, title: str, sentence: str, sections: list, comparison: Comparison,
                      metrics: list[str], figures: dict[str, Path], runs: pd.DataFrame) -> Path:
    """report.tex with table_primary/secondary/interaction.tex beside it (analysis.latex)."""
    primary = comparison.primary
    inter = interaction_table(comparison, metrics)
    paired = f"{pct(comparison.confidence)} {method_label(comparison.method)}"
    tables = [("table_primary", primary_caption(comparison, primary) + " Pairs: seed pairs (coarse / fine).",
               primary_table(runs, comparison, primary), True),
              ("table_secondary", f"Secondary metrics: Δ = SF − baseline over seed-matched pairs with its {paired} "
               "interval; pairs: seed pairs; Holm p over every secondary metric × patch size.",
               secondary_table(comparison, metrics), False),
              ("table_interaction", "Coarse vs fine: Δ(coarse) − Δ(fine), the difference of the mean SF gains at two "
               f"patch sizes, {method_label(comparison.interaction_method)} interval; pairs: seed pairs at each "
               "patch size.", inter, False)]
    captions = {Path(f.path): f.caption for s in sections for f in s.figures}
    methods = next((s.paragraphs for s in sections if s.title == "Methods"), [])
    return write_latex(out, title, sentence, tables, [(p, captions.get(p, p.stem)) for p in figures.values()],
                       methods)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--experiment", action="append", required=True, metavar="NAME",
                        help="MLflow experiment (= sweep spec name); repeat to analyse several together")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: sqlite:///mlflow.db in the working directory)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: reports/<experiment>)")
    parser.add_argument("--metric", action="append", default=None, metavar="NAME",
                        help="metric to compare, e.g. eval/fd_pixel; repeat for several (default: every eval "
                             "metric logged)")
    parser.add_argument("--primary", default=None, metavar="METRIC",
                        help="the metric the headline speaks about; the others are secondary, Holm-adjusted "
                             "(default: the spec's analysis.primary, else eval/denoise_loss when logged)")
    parser.add_argument("--method", default=None, choices=sorted(PAIRED),
                        help="interval method for the paired differences (default: the spec's analysis.method, "
                             "else t = Student-t)")
    parser.add_argument("--sweep-run-id", default=None,
                        help="log the report on this sweep run (default: the experiment's latest sweep run)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    return parser


def main(args: argparse.Namespace) -> int:
    uri = args.tracking_uri or default_tracking_uri()
    out = args.out or Path("reports") / "+".join(args.experiment)
    try:
        result = build_report(args.experiment, uri, out, metrics=args.metric, sweep_run_id=args.sweep_run_id,
                              log_to_mlflow=not args.no_log, primary=getattr(args, "primary", None),
                              method=getattr(args, "method", None))
    except ValueError as err:
        print(f"specforce report: error: {err}", file=sys.stderr)
        return 2
    print(result.verdict)
    for sentence in result.regime:
        print(f"  regime: {sentence}")
    for message in result.messages:
        print(f"  - {message}")
    if not args.no_log:
        print(f"logged to MLflow run {result.logged_run_id} under report/" if result.logged_run_id else
              "not logged to MLflow: the experiment has no sweep run (tag specforce.role=sweep)")
    print(f"report: {result.html_path.resolve()}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.splitlines()[0])
    sys.exit(main(add_arguments(parser).parse_args()))
