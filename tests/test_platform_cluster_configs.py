"""Static checks of the GPU cluster configs and the CUDA Dockerfile (nothing here can launch them).

    .venv/bin/python -m pytest tests/test_platform_cluster_configs.py -q

The Ray cluster-launcher config is validated against the JSON schema that Ray itself ships; the KubeRay
manifests against the structure KubeRay requires and our own rules (GPU requests, token auth, the
interpreter named in the entrypoint, storage every node can reach); the Dockerfile against the layout
the manifests assume. `docker build` needs an engine, which this machine lacks.
"""
from __future__ import annotations

import json
import pathlib
import re
import shlex
import tomllib
from importlib.metadata import version

import jsonschema
import pytest
import ray.autoscaler
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "platform" / "cluster"
DOCKERFILE = ROOT / "platform" / "docker" / "Dockerfile"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())  # join continuation lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def pod_specs(cluster_spec: dict) -> list[dict]:
    return [cluster_spec["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in cluster_spec["workerGroupSpecs"]]


@pytest.mark.parametrize("path", sorted((ROOT / "platform").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_platform_yaml_loads_safely(path):
    assert isinstance(yaml.safe_load(path.read_text()), dict)


# ---- Ray cluster launcher -----------------------------------------------------------------------------
def test_cluster_launcher_config_matches_rays_own_schema():
    schema = json.loads((pathlib.Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(load("aws-gpu.yaml"), schema)


def test_cluster_launcher_nodes_head_cpu_workers_gpu():
    cfg = load("aws-gpu.yaml")
    types = cfg["available_node_types"]
    assert cfg["provider"]["type"] == "aws"
    head = types[cfg["head_node_type"]]
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))  # CPU head
    workers = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert workers and all(t["node_config"]["InstanceType"].startswith(("g5.", "g6.", "p4", "p5")) for t in workers)
    assert sum(t["max_workers"] for t in workers) >= 1
    assert all(t["min_workers"] <= t["max_workers"] <= cfg["max_workers"] for t in workers)
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--num-cpus=0" in head_start  # trials stay off the driver's node


def test_cluster_launcher_security_defaults():
    cfg = load("aws-gpu.yaml")
    head_start = " ".join(cfg["head_start_ray_commands"])
    worker_start = " ".join(cfg["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    for cmd in (head_start, worker_start):
        assert "RAY_AUTH_MODE=token" in cmd
    token_path = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+)", head_start).group(1)
    assert token_path in cfg["file_mounts"], "the token file must be shipped to every node"
    assert "disabled" not in yaml.safe_dump(cfg)


def test_cluster_launcher_uses_the_image_and_installs_the_synced_project():
    cfg = load("aws-gpu.yaml")
    assert cfg["docker"]["image"] == load("raycluster.yaml")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    mount = next(remote for remote, local in cfg["file_mounts"].items() if local == ".")
    assert any(f"pip install" in c and mount in c for c in cfg["setup_commands"])
    assert {".venv", ".git"} <= set(cfg["rsync_exclude"])


# ---- KubeRay ------------------------------------------------------------------------------------------
def check_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == version("ray"), "cluster Ray must match the project's Ray"
    assert spec["authOptions"] == {"mode": "token"}
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    # KubeRay passes rayStartParams as `--key=value` strings; non-string YAML values are rejected.
    for params in [head["rayStartParams"]] + [g["rayStartParams"] for g in spec["workerGroupSpecs"]]:
        assert all(isinstance(v, str) for v in params.values()), params
    assert head["rayStartParams"]["num-cpus"] == "0"
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"].get("limits", {})]
    assert gpu_groups, "no GPU worker group"
    for g in gpu_groups:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        res = g["template"]["spec"]["containers"][0]["resources"]
        # Kubernetes requires GPU requests == limits; an integer count per pod.
        assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
        assert int(res["limits"]["nvidia.com/gpu"]) >= 1
    images = set()
    for pod in pod_specs(spec):
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            images.add(c["image"])
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (c["name"], kind)
            assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes, c["name"]
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env.get("RAY_AUTH_MODE", "token") != "disabled"
    assert len(images) == 1, "head and workers must run the same image (same Ray, same code)"


def test_raycluster_manifest():
    doc = load("raycluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    assert doc["metadata"]["name"]
    check_cluster_spec(doc["spec"])


def test_rayjob_manifest_and_entrypoint():
    doc = load("rayjob.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    spec = doc["spec"]
    check_cluster_spec(spec["rayClusterSpec"])
    assert spec["rayClusterSpec"] == load("raycluster.yaml")["spec"], "rayjob's cluster drifted from raycluster.yaml"
    assert spec["shutdownAfterJobFinishes"] is True
    argv = shlex.split(spec["entrypoint"])
    # DESIGN §4: Ray runs the entrypoint with the head's PATH, so the interpreter is named explicitly ...
    assert argv[0].startswith("/") and pathlib.PurePosixPath(argv[0]).name.startswith("python")
    # ... and it is the one the image installed the project into.
    assert dict(dockerfile_env())["SPECFORCE_PYTHON"] == argv[0]
    assert argv[1:5] == ["-m", "sweeps.cli", "sweep", "/app/sweeps/configs/imagenet_jit_b32_b16.yaml"]
    opts = dict(zip(argv[5::2], argv[6::2]))
    assert opts["--tracking-uri"] == "http://mlflow:5000"
    assert opts["--address"] == "auto"  # join the RayJob's cluster, not an embedded Ray inside the head pod
    # Ray Train checkpoints must be reachable from every node: storage on a volume all pods mount.
    storage = pathlib.PurePosixPath(opts["--storage"])
    for pod in pod_specs(spec["rayClusterSpec"]):
        mounts = [pathlib.PurePosixPath(m["mountPath"]) for m in pod["containers"][0]["volumeMounts"]]
        assert any(storage.is_relative_to(m) for m in mounts), pod["containers"][0]["name"]


# ---- Dockerfile ----------------------------------------------------------------------------------------
def dockerfile_env() -> list[tuple[str, str]]:
    pairs = []
    for op, rest in dockerfile_instructions():
        if op == "ENV":
            pairs += [tuple(kv.split("=", 1)) for kv in shlex.split(rest)]
    return pairs


def test_dockerfile_structure():
    ins = dockerfile_instructions()
    ops = [op for op, _ in ins]
    args = dict(rest.split("=", 1) for op, rest in ins if op == "ARG" and "=" in rest)
    assert ops[0] in {"ARG", "FROM"} and "FROM" in ops
    base = next(rest for op, rest in ins if op == "FROM").replace("${BASE_IMAGE}", args.get("BASE_IMAGE", ""))
    assert "cuda" in base, base
    assert ("WORKDIR", "/app") in ins
    copied = {rest.split()[0] for op, rest in ins if op == "COPY"}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert {p.split(".")[0] for p in packages} <= copied, "every package of pyproject must be in the image"
    assert "platform" not in copied  # infrastructure only; and never a Python package
    runs = " ".join(rest for op, rest in ins if op == "RUN")
    assert "psycopg2-binary" in runs  # the image can talk to the PostgreSQL tracking store
    last_user = [rest for op, rest in ins if op == "USER"][-1]
    assert last_user not in {"root", "0"}
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN"), "installs must precede USER"
    python = dict(dockerfile_env())["SPECFORCE_PYTHON"]
    assert python in json.loads(next(rest for op, rest in ins if op == "CMD"))


def test_dockerfile_copies_exist_in_the_build_context():
    # The build context is the repo root; everything the image COPYs must exist there (README.md is the
    # lead's and may not be written yet).
    for op, rest in dockerfile_instructions():
        if op == "COPY":
            for src in shlex.split(rest)[:-1]:
                assert (ROOT / src).exists() or src == "README.md", src
