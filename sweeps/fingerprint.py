"""The sweep's storage remembers which spec it ran, so `--resume` never mixes two experiments in one sweep.

    python -m sweeps.fingerprint sweeps/configs/smoke.yaml          # print the resolved keys and the fingerprint

Trial ids hash only a trial's overrides (sweeps/spec.py), so resuming after editing the spec's `base` would continue
old trials' checkpoints under the new config. `check_or_record`, called at the top of `run_sweep` before Ray or
MLflow start, writes `<storage>/<name>/spec_fingerprint.json` (the sha256 of the resolved spec, and the resolved spec
as dotted keys) when a sweep starts, and on `--resume` compares: a different spec is refused with the keys that
changed, e.g. `base.optim.lr: 0.001 -> 0.002`.

What counts: the resolved base config (defaults filled in, so `base_config:` vs inline and spelling a default out
make no difference), grid, search, seeds, resources.workers, and any other field a later spec version adds.
What does not (scheduling and prose, which never change a trial's result): description, max_concurrent_trials,
max_failures, resources other than workers, search.max_concurrent, and analysis -- except in an adaptive sweep
(`seeds:`), where the primary metric, min_effect and confidence decide which rounds run, so they count.
Storage may be a local folder or a pyarrow filesystem URI (s3://, gs://, ...), like Ray's.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import sys
from typing import Any

from sweeps.spec import SpecError, SweepSpec, base_config

FILE_NAME = "spec_fingerprint.json"
IGNORED = ("description", "max_concurrent_trials", "max_failures", "resources.cpus_per_worker",
           "resources.gpus_per_worker", "resources.use_gpu", "search.max_concurrent", "analysis")


def resolved_spec(spec: SweepSpec) -> dict[str, Any]:
    """Dotted keys -> values of everything that decides the trials' results (see the module docstring)."""
    tree = spec.model_dump(mode="json", exclude={"name", "base", "base_config"})
    flat = {f"base.{k}": v for k, v in base_config(spec).flat().items()}
    flat.update(_flatten_all(tree))
    ignored = IGNORED if spec.seeds is None else tuple(p for p in IGNORED if p != "analysis")
    return {k: v for k, v in sorted(flat.items())
            if not any(k == p or k.startswith(p + ".") for p in ignored)}


def _flatten_all(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and not (prefix == "" and key == "grid"):
            out.update(_flatten_all(value, f"{prefix}{key}."))
        elif isinstance(value, dict) and value:  # grid keys are dotted config keys already: keep them whole
            out.update({f"grid.{k}": v for k, v in value.items()})
        else:
            out[f"{prefix}{key}"] = value
    return out


def fingerprint(resolved: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every key that differs ('(absent)' where one side lacks it).

    A key the recorded spec lacks is no change when it holds its default now: a newer specforce added the option,
    and its default reproduces the old behaviour (so upgrading never blocks a resume)."""
    from trainers.training.config import TrainConfig

    defaults = {f"base.{k}": v for k, v in TrainConfig().flat().items()}
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "(absent)"), new.get(key, "(absent)")
        if key not in old and _same(b, defaults.get(key) if key.startswith("base.") else None):
            continue
        if not _same(a, b):
            lines.append(f"{key}: {_show(a)} -> {_show(b)}")
    return lines


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _show(value: Any) -> str:
    return value if value == "(absent)" else json.dumps(value, default=str)


def check_resume(spec: SweepSpec, sweep_dir: str | pathlib.Path) -> bool:
    """Refuse resuming `sweep_dir` with `spec` when its recorded spec differs; True when the record matches exactly,
    False when there is none or it differs only by options a newer specforce added (at their defaults)."""
    location = f"{str(sweep_dir).rstrip('/')}/{FILE_NAME}"
    recorded = _read(location)
    if recorded is None:
        print(f"note: {location} is missing (a sweep started before specforce recorded spec fingerprints); "
              "recording the current spec", file=sys.stderr, flush=True)
        return False
    current = resolved_spec(spec)
    if recorded.get("fingerprint") == fingerprint(current):
        return True
    changes = changed_keys(recorded.get("resolved", {}), current)
    if changes:
        shown = "; ".join(changes[:12]) + (f"; and {len(changes) - 12} more" if len(changes) > 12 else "")
        raise SpecError(f"--resume: the spec differs from the one sweep {spec.name!r} was started with "
                        f"({location}): {shown}. Resuming would continue the old trials under the new settings "
                        "and mix two experiments: restore those keys, or start a new sweep (another name or "
                        "--storage)")
    return False


def check_or_record(spec: SweepSpec, sweep_dir: str | pathlib.Path, resume: bool) -> str:
    """Refuse `--resume` with a spec other than the recorded one; record the spec when a sweep starts (or when a
    resumed sweep has no exact record yet). Returns the fingerprint."""
    current = resolved_spec(spec)
    digest = fingerprint(current)
    if resume and check_resume(spec, sweep_dir):
        return digest
    _write(f"{str(sweep_dir).rstrip('/')}/{FILE_NAME}", {"name": spec.name, "fingerprint": digest,
                                                         "resolved": current})
    return digest


def _is_uri(location: str) -> bool:
    return "://" in location


def _read(location: str) -> dict[str, Any] | None:
    if _is_uri(location):
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(location)
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with fs.open_input_stream(path) as f:
            text = f.read().decode()
    else:
        p = pathlib.Path(location)
        if not p.is_file():
            return None
        text = p.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(f"--resume: {location} is not valid JSON ({err}); delete it to resume without the check") from None


def _write(location: str, record: dict[str, Any]) -> None:
    text = json.dumps(record, indent=2, sort_keys=True, default=str)
    if _is_uri(location):
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(location)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(text.encode())
        return
    p = pathlib.Path(location)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(p)  # atomic: a crash never leaves half a fingerprint that would refuse every resume


if __name__ == "__main__":
    from sweeps.spec import load_spec

    resolved = resolved_spec(load_spec(sys.argv[1]))
    print(json.dumps(resolved, indent=2, default=str))
    print(fingerprint(resolved))
