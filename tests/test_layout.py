"""Guards for the repository layout (DESIGN.md §2)."""
import ast
import importlib
import pathlib
import platform
import subprocess
import sys
import sysconfig

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_platform_folder_is_not_a_python_package():
    # `platform` is a standard-library module; an __init__.py here would shadow it in every
    # process started from the repo root, Ray workers included.
    assert (ROOT / "platform").is_dir()
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_import_platform_is_the_standard_library_from_repo_root():
    out = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.__file__); print(platform.system())"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert pathlib.Path(out[0]).resolve().parent == stdlib
    assert out[1] == platform.system()  # the real module's answer, the same as in this process


# ------------------------------------------------------------------------------------------- import direction
CONTRACTS = "specforce_contracts"
TORCH_FAMILY = ("torch", "torchvision", "torch_fidelity")
LAYERS = ("trainers", "sweeps", "analysis")


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def imports_of(path: pathlib.Path, root: pathlib.Path = ROOT) -> list[tuple[int, str]]:
    """(line, module) for every import in a file, wherever it sits (top level, function bodies, `if TYPE_CHECKING`),
    plus `importlib.import_module("x")` / `__import__("x")` with a literal name. Relative imports are resolved
    against the file's place under `root` (`from .. import x` in trainers/data/ is trainers.x)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(root).parent.parts
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level - 1 <= len(package) else ()
                found.append((node.lineno, ".".join(base + ((node.module,) if node.module else ())) or "."))
            elif node.module != "__future__":
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def forbidden(layer: str, module: str) -> str | None:
    """Why `layer` may not import `module` (DESIGN.md §2), or None."""
    top = _top(module)
    if layer == CONTRACTS:
        if top not in sys.stdlib_module_names:
            return "specforce_contracts imports the standard library only"
    elif layer == "trainers":
        if top in ("sweeps", "analysis"):
            return "trainers imports neither sweeps nor analysis"
    elif layer == "analysis":
        if top in TORCH_FAMILY:
            return "analysis never imports torch (a report needs no torch)"
        if top in ("trainers", "sweeps"):
            return "analysis reads MLflow/parquet only: it imports neither trainers nor sweeps (both reach torch)"
    return None


def layering_violations(root: pathlib.Path) -> list[str]:
    files = [root / f"{CONTRACTS}.py"] if (root / f"{CONTRACTS}.py").exists() else []
    for layer in LAYERS:
        files += sorted((root / layer).rglob("*.py"))
    problems = []
    for path in files:
        rel = path.relative_to(root)
        layer = CONTRACTS if path.stem == CONTRACTS and path.parent == root else rel.parts[0]
        for line, module in imports_of(path, root):
            why = forbidden(layer, module)
            if why:
                problems.append(f"{rel}:{line}: import {module}: {why}")
    return problems


def test_every_module_imports_one_way():
    """DESIGN.md §2, checked on every module's source (not only what importing a package's __init__ pulls in):

    - trainers imports neither sweeps nor analysis (it runs inside workers and knows nothing of Ray Tune or MLflow);
    - analysis never imports torch, torchvision, torch_fidelity, trainers or sweeps: a report is built from MLflow
      and parquet alone, and every sweeps module reaches trainers (sweeps.spec -> trainers.training.config -> the registries
      that import torch), so importing sweeps would pull torch in;
    - specforce_contracts, which every layer imports for names, imports only the standard library;
    - sweeps may import trainers, analysis and the contracts.
    Imports inside functions count (a lazy import runs too); so do importlib.import_module/__import__ with a
    literal name."""
    files = [p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")]
    assert len(files) > 40 and (ROOT / f"{CONTRACTS}.py").is_file()
    assert layering_violations(ROOT) == []


def test_layering_check_catches_planted_imports(tmp_path):
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "trainers" / "ok.py").write_text("import torch\nfrom specforce_contracts import METRICS\n")
    (tmp_path / "trainers" / "bad.py").write_text("def f():\n    from sweeps.tracking import x\n")
    (tmp_path / "trainers" / "worse.py").write_text("import importlib\nimportlib.import_module('analysis.runs')\n")
    (tmp_path / "analysis" / "bad.py").write_text("import numpy\nif False:\n    import torch.nn as nn\n")
    (tmp_path / "analysis" / "rel.py").write_text("from ..trainers import loop\nfrom . import runs\n")
    (tmp_path / "analysis" / "sw.py").write_text("from sweeps import spec\n")
    (tmp_path / "sweeps" / "ok.py").write_text("import torch\nimport trainers.training.loop\nimport analysis.runs\n")
    (tmp_path / f"{CONTRACTS}.py").write_text("import json\nimport yaml\n")
    found = layering_violations(tmp_path)
    assert sorted(f.split(":")[0] + ":" + f.split(":")[1] for f in found) == sorted([
        f"{CONTRACTS}.py:2", "trainers/bad.py:2", "trainers/worse.py:2", "analysis/bad.py:3", "analysis/rel.py:1",
        "analysis/sw.py:1"]), found


def test_packages_import_one_way():
    # analysis must not need torch to build a report; trainers must not import sweeps/analysis.
    code = (
        "import sys, analysis, specforce_contracts; "
        "assert 'torch' not in sys.modules, 'analysis imported torch'; "
        "import trainers; assert 'sweeps' not in sys.modules and 'analysis' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    assert pathlib.Path(importlib.import_module("trainers").__file__).resolve() == ROOT / "trainers" / "__init__.py"
