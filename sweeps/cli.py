"""The `specforce` command line: train one run, sweep a spec on Ray, submit it to a cluster, report, open the UI.

    specforce demo                                     # the README's main job (CPU, ~10 min)
    specforce train sweeps/configs/tiny_train.yaml --out runs/tiny
    specforce sweep sweeps/configs/smoke.yaml --dry-run
    specforce sweep sweeps/configs/smoke.yaml [--resume] [--tracking-uri URI] [--storage DIR]
    specforce submit sweeps/configs/smoke.yaml --address http://127.0.0.1:8265
    specforce status|logs|stop JOB_ID --address http://127.0.0.1:8265
    specforce report --experiment demo --out reports/demo
    specforce eval runs/tiny/ema.pt --num-samples 1000
    specforce prepare /data/imagenet /data/in256 --dataset imagenet --image-size 256
    specforce ui

Every command has --help. Defaults: MLflow store `sqlite:///<cwd>/mlflow.db`, Ray storage `<cwd>/ray_results`.
A bad input is refused before any work starts with one line, `specforce <command>: <what>: <why> (got <value>)`, and
exit code 2; `--debug` (or SPECFORCE_DEBUG=1) adds the traceback. Unexpected errors print a traceback and exit 1
(sweeps/errors.py has the contract).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import specforce_contracts as C

SHIPPED = pathlib.Path(__file__).resolve().parent / "configs"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one refusal line naming the flag (argparse's default prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text!r})") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text!r})")
    return value


def tcp_port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a TCP port in 1..65535 (got {text!r})") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a TCP port in 1..65535 (got {text!r})")
    return value


def _cluster_is_here(address: str | None) -> bool:
    """An embedded local Ray (no --address, not inside a Ray Job): trials run on this machine's files and devices."""
    return not address and not os.environ.get("RAY_ADDRESS")


def _add_common(p: argparse.ArgumentParser, storage: bool = True) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help=f"MLflow tracking URI (default: sqlite:///<cwd>/{C.DEFAULT_STORE_FILE}; http://host:port for a "
                   "server)")
    if storage:
        p.add_argument("--storage", default=None,
                       help=f"Ray storage path for checkpoints (default: <cwd>/{C.DEFAULT_STORAGE_DIR})")


def _add_num_cpus(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-cpus", type=positive_int, default=None, help="CPUs of the embedded local Ray (default: all)")


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true", help="stream Ray's and the workers' logs to the terminal "
                   "(by default they go to <storage>/<name>/logs/, and the terminal shows one progress view)")


def _spec_path(text: str) -> pathlib.Path:
    path = pathlib.Path(text)
    if not path.exists() and (SHIPPED / text).exists():  # `specforce sweep smoke.yaml` finds shipped specs
        return SHIPPED / text
    return path


def _load_spec(text: str):
    from sweeps.spec import SpecError, load_spec

    path = _spec_path(text)
    if not path.exists():
        shipped = ", ".join(sorted(p.name for p in SHIPPED.glob("*.yaml")))
        raise SpecError(f"sweep spec {text!r}: does not exist (shipped specs: {shipped})")
    return load_spec(path)


# ---------------------------------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from sweeps.commands.train import train_command

    return train_command(args.config, pathlib.Path(args.out), sets=args.set or [], dry_run=args.dry_run,
                         tracking_uri=args.tracking_uri, experiment=args.experiment, run_name=args.run_name)


# ---------------------------------------------------------------------------------------------------- sweep
def cmd_sweep(args) -> int:
    from sweeps import tracking
    from sweeps.preflight import check_spec_environment, check_storage
    from sweeps.spec import describe_trials

    spec = _load_spec(args.spec)
    # refused here, before Ray or MLflow start; a remote cluster checks its own files and devices
    here = _cluster_is_here(args.address)
    # (a cluster's driver may start before its MLflow service answers: MLflow's own retries cover that case)
    tracking.check_tracking_uri(args.tracking_uri, creates_store=True, reach=here)
    check_storage(args.storage)
    if here:
        check_spec_environment(spec, num_cpus=args.num_cpus)
    if args.dry_run:
        import yaml

        print(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False), end="")
        lines = describe_trials(spec)
        print(f"# valid spec {spec.name!r}: {len(lines)} line(s) of trials")
        print("\n".join(lines))
        return 0
    from sweeps.runner import run_sweep

    out = run_sweep(spec, tracking_uri=args.tracking_uri, storage=args.storage, resume=args.resume,
                    address=args.address, num_cpus=args.num_cpus, verbose=args.verbose)
    print(f"sweep {out.name!r}: {out.trials} trials ({out.errored} failed) in {out.seconds:.0f}s; "
          f"MLflow experiment {out.experiment_id}, parent run {out.parent_run_id}")
    if out.best:
        print(f"best: {json.dumps(out.best, default=str)}")
    return 0 if out.errored == 0 else 1


# --------------------------------------------------------------------------------------------------- report
def cmd_report(args) -> int:
    from analysis.report import main as report_main
    from sweeps import tracking
    from sweeps.preflight import check_out_dir

    # a report reads a store: a missing sqlite file is refused, never created (with its folders) as an empty store
    args.tracking_uri = tracking.check_tracking_uri(args.tracking_uri, creates_store=False)
    check_out_dir(args.out or pathlib.Path("reports") / "+".join(args.experiment))
    return report_main(args)


# ----------------------------------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from analysis.report import build_report
    from sweeps import tracking
    from sweeps.preflight import check_out_dir, check_spec_environment, check_storage
    from sweeps.runner import run_sweep

    spec = _load_spec(args.spec)
    uri = tracking.check_tracking_uri(args.tracking_uri, creates_store=True)
    check_storage(args.storage)
    check_out_dir(args.out or f"reports/{spec.name}")
    check_spec_environment(spec, num_cpus=args.num_cpus)
    storage = args.storage or str(pathlib.Path.cwd() / C.DEFAULT_STORAGE_DIR)
    resume = (pathlib.Path(storage) / spec.name).exists()
    if resume:
        print(f"demo: continuing the sweep found in {storage}/{spec.name} (delete it to start over)")
    out = run_sweep(spec, tracking_uri=uri, storage=storage, resume=resume, num_cpus=args.num_cpus,
                    verbose=args.verbose)
    report_dir = pathlib.Path(args.out or f"reports/{spec.name}")
    # the spec declares the primary metric (the demo's: the held-out denoising loss, the low-variance measure at
    # this scale, docs/design.md §4); every other metric the trials logged is reported as secondary
    result = build_report([spec.name], uri, report_dir, sweep_run_id=out.parent_run_id,
                          primary=spec.analysis.primary)
    print()
    print(f"verdict: {result.verdict}")
    print(f"report:  {pathlib.Path(result.html_path).resolve()}")
    print(f"browse runs: specforce ui --tracking-uri {uri}")
    return 0 if out.errored == 0 else 1


# ------------------------------------------------------------------------------------------------------- ui
def cmd_ui(args) -> int:
    from sweeps import tracking
    from sweeps.errors import UserError
    from sweeps.preflight import check_port

    if args.host not in ("127.0.0.1", "localhost") and not args.i_know_this_is_public:
        raise UserError("--host", "the MLflow UI has no authentication; pass --i-know-this-is-public to expose it "
                        "beyond this machine", args.host)
    uri = tracking.check_tracking_uri(args.tracking_uri, creates_store=True)
    check_port(args.host, args.port)  # before the store is created: a refused ui leaves nothing behind
    tracking.prepare_store(uri)
    print(f"MLflow UI for {uri}: http://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
    exe = pathlib.Path(sys.executable).with_name("mlflow")
    cmd = [str(exe) if exe.exists() else "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port)]
    os.execvp(cmd[0], cmd)
    return 0  # not reached


# ----------------------------------------------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    from sweeps.commands.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(pathlib.Path(args.checkpoint), num_samples=args.num_samples,
                                  metrics=args.metrics, inception_weights=args.inception_weights)
    print(json.dumps(metrics, indent=2))
    return 0


# ----------------------------------------------------------------------------------------------------- prepare
def cmd_prepare(args) -> int:
    from sweeps.commands.prepare import prepare_dataset, verify_prepared

    if args.verify:
        verify_prepared(args.src, workers=args.workers)  # `prepare --verify DEST`: the one folder is DEST
        return 0
    if args.dest is None or args.dataset is None or args.image_size is None:
        missing = [flag for flag, v in (("DEST", args.dest), ("--dataset", args.dataset),
                                        ("--image-size", args.image_size)) if v is None]
        from sweeps.errors import UserError

        raise UserError(missing[0], "is required (specforce prepare SRC DEST --dataset NAME --image-size N)")
    prepare_dataset(args.src, args.dest, dataset=args.dataset, image_size=args.image_size, workers=args.workers,
                    address=args.address, shard_size=args.shard_size, restart=args.restart,
                    progress=not args.no_progress)
    return 0


# ------------------------------------------------------------------------------------------ cluster jobs
def cmd_submit(args) -> int:
    from sweeps.commands.submit import submit

    _load_spec(args.spec)  # a missing spec is named before the cluster is contacted
    job_id = submit(_spec_path(args.spec), address=args.address, tracking_uri=args.tracking_uri,
                    storage=args.storage, wait=args.wait, resume=args.resume, verbose=args.verbose)
    print(job_id)
    return 0


def cmd_job(args) -> int:
    from sweeps.commands.submit import job_command

    return job_command(args.command, args.job_id, address=args.address, follow=getattr(args, "follow", False))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; with `command`, the report's arguments (which import the analysis stack, ~2 s) are added only
    when that command is `report`, so `specforce prepare`, `train`, `sweep` ... start without it."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="specforce", description=__doc__, formatter_class=fmt)
    parser.add_argument("--debug", action="store_true", help="show the traceback of a refused command "
                        "(also SPECFORCE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    debug = _Parser(add_help=False)
    # SUPPRESS: a subcommand's default must not overwrite `specforce --debug train ...`
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of a refused command (also SPECFORCE_DEBUG=1)")
    add_parser = sub.add_parser
    sub.add_parser = lambda *a, **kw: add_parser(*a, parents=[debug], **kw)  # every subcommand takes --debug

    p = sub.add_parser("train", help="train one run (no Ray) from a config YAML", formatter_class=fmt,
                       description="Train one model from a config. Re-running the same command resumes from "
                                   f"OUT/{C.RUN_CHECKPOINT_FILE}.\n\nexample: specforce train "
                                   "sweeps/configs/tiny_train.yaml "
                                   "--out runs/tiny --set spectral.enabled=true")
    p.add_argument("config", help="training config YAML (sections: model, data, spectral, flow, optim, sample, eval)")
    p.add_argument("--out", default="runs/train", help=f"run folder: checkpoint, sample grids, {C.RUN_METRICS_FILE}")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a dotted key, e.g. model.patch_size=8")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config, validate, exit")
    p.add_argument("--experiment", default="train", help="MLflow experiment for this run (default: train)")
    p.add_argument("--run-name", default=None, help="MLflow run name (default: the --out folder name)")
    p.add_argument("--no-mlflow", dest="tracking_uri", action="store_const", const="none",
                   help="do not log to MLflow")
    _add_common(p, storage=False)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="run a sweep spec (grid and/or Optuna search) on Ray", formatter_class=fmt,
                       description="Run every trial of a sweep spec as a Ray Train job and record it in MLflow.\n"
                                   "Without --address an embedded local Ray is started.\n\n"
                                   "example: specforce sweep sweeps/configs/smoke.yaml --dry-run")
    p.add_argument("spec", help="sweep spec YAML (path, or the name of a shipped spec such as smoke.yaml)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep without rerunning finished trials")
    p.add_argument("--dry-run", action="store_true", help="print the resolved spec and every trial, validate, exit")
    p.add_argument("--address", default=None, help="join an existing Ray cluster (ray://... or host:port)")
    _add_num_cpus(p)
    _add_verbose(p)
    _add_common(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("submit", help="submit a sweep spec to a Ray cluster as a Ray Job", formatter_class=fmt,
                       description="Submit `specforce sweep SPEC` to a Ray cluster with the Jobs API; the project "
                                   "travels in the runtime env.\nThe cluster must reach --tracking-uri (an MLflow "
                                   "server, not a local sqlite file).\nWith Ray token auth on, export RAY_AUTH_TOKEN "
                                   "(or RAY_AUTH_TOKEN_PATH) first.\n\n"
                                   "example: specforce submit smoke.yaml --address http://127.0.0.1:8265 "
                                   "--tracking-uri http://127.0.0.1:5000")
    p.add_argument("spec")
    p.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://HEAD:8265")
    p.add_argument("--wait", action="store_true", help="follow the job's logs until it ends; exit 1 if it failed")
    p.add_argument("--resume", action="store_true", help="pass --resume to the sweep on the cluster")
    _add_verbose(p)
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI the cluster can reach (an MLflow "
                   "server's http:// URL; a sqlite file only when the cluster is this machine)")
    p.add_argument("--storage", default=None, help="REQUIRED: Ray storage every node and a later --resume job can "
                   "reach: s3://bucket/path, gs://bucket/path, or an absolute path all nodes mount (NFS)")
    p.set_defaults(func=cmd_submit)

    for name, text in (("status", "show a submitted job's status"), ("logs", "print a submitted job's logs"),
                       ("stop", "stop a submitted job")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("job_id")
        p.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://HEAD:8265")
        if name == "logs":
            p.add_argument("--follow", action="store_true", help="stream until the job ends")
        p.set_defaults(func=cmd_job)

    p = sub.add_parser("report", help="analyse an experiment's runs and write the ablation report", formatter_class=fmt)
    if command in (None, "report"):
        from analysis.report import add_arguments

        add_arguments(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="run the demo ablation and its report (the README's first command)",
                       formatter_class=fmt,
                       description="Coarse vs fine tokenization x SF on/off on a small dataset, on embedded local "
                                   "Ray, then the report.\nRe-running continues an interrupted demo.")
    p.add_argument("--spec", default="demo.yaml", help="sweep spec (default: the shipped demo.yaml)")
    p.add_argument("--out", default=None, help="report folder (default: reports/<name>)")
    _add_num_cpus(p)
    _add_verbose(p)
    _add_common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for the sweep store")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=tcp_port, default=5000)
    p.add_argument("--i-know-this-is-public", action="store_true", help=argparse.SUPPRESS)
    _add_common(p, storage=False)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser(
        "prepare", help="convert a dataset once into a prepared dataset (ADM-cropped uint8 shards + manifest)",
        formatter_class=fmt, description=(
            "Decode, verify and ADM-centre-crop every image once, in parallel, and write uint8 .npy shards plus a "
            "manifest.json (counts, classes, image size, source, crop recipe, per-shard sha256). Train on it with "
            "data: {name: prepared, root: DEST, image_size: N} (DEST may later be copied to s3:// or gs://). "
            "Rerunning a killed prepare continues it; unreadable images are listed in one line."),
        epilog="examples:\n"
               "  specforce prepare /data/imagenet /data/in256 --dataset imagenet --image-size 256\n"
               "  specforce prepare photos/ data/photos64 --dataset imagefolder --image-size 64 --workers 2\n"
               "  specforce prepare - data/digits16 --dataset digits --image-size 16   # built-in data: SRC unused\n"
               "  specforce prepare /data/in256 --verify            # reread every shard, compare sha256s")
    p.add_argument("src", metavar="SRC", help="the source: a folder (imagenet: with train/ and val/; imagefolder: "
                   "<class>/<image>; cifar10: holding cifar-10-batches-py/); ignored for mnist and digits. With "
                   "--verify: the prepared folder to check")
    p.add_argument("dest", metavar="DEST", nargs="?", help="the prepared dataset's folder (new, empty, or an "
                   "interrupted prepare of the same source to continue)")
    p.add_argument("--dataset", choices=["imagenet", "imagefolder", "cifar10", "mnist", "digits"],
                   help="how to read SRC")
    p.add_argument("--image-size", type=positive_int, help="N: images are cropped to N x N (must equal the "
                   "training config's data.image_size)")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: every core here)")
    p.add_argument("--address", default=None, help="Ray cluster to run the shard tasks on (DEST must be storage "
                   "every node sees); default: processes on this machine")
    p.add_argument("--shard-size", type=positive_int, default=None,
                   help="images per shard (default: about 256 MB of pixels per shard, smaller for small "
                   "datasets so that there are at least 64 shards of >= 64 images)")
    p.add_argument("--restart", action="store_true", help="drop an interrupted prepare's shards and start over "
                   "(needed when SRC's listing changed)")
    p.add_argument("--verify", action="store_true", help="check an existing prepared dataset SRC: every shard's "
                   "size and sha256")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("eval", help="evaluate a finished run's EMA checkpoint (FID/IS, fd_*, spectra)")
    p.add_argument("checkpoint", help=f"{C.RUN_EMA_FILE} or {C.RUN_CHECKPOINT_FILE} written by a run")
    p.add_argument("--num-samples", type=positive_int, default=None,
                   help="samples to generate (default: the run's eval setting)")
    p.add_argument("--metrics", nargs="+", default=None, help="fd_pixel fid classifier spectrum (default: the run's)")
    p.add_argument("--inception-weights", default=None, help="local pt_inception-2015-12-05 weights file")
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sweeps.errors import debug_enabled, run_command

    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(next((w for w in words if not w.startswith("-")), None))
    args, extra = parser.parse_known_args(argv)
    if extra:  # named after the subcommand that refused them, like every other refusal
        parser.exit(2, f"specforce {args.command}: unrecognized arguments: {' '.join(extra)} "
                       f"(see specforce {args.command} --help)\n")
    debug = bool(getattr(args, "debug", False)) or debug_enabled([])
    return run_command(args.command, lambda: args.func(args), debug=debug)


if __name__ == "__main__":
    sys.exit(main())
