"""Guards for the repository layout (docs/design.md §2)."""
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


# inside trainers, each job imports only its own subpackage and those before it here (docs/design.md §2)
TRAINERS_ORDER = ("distributed", "data", "model", "evaluation", "training")


def trainers_part(dotted: str) -> str | None:
    """trainers.model.jit -> "model"; trainers.distributed -> "distributed"; trainers itself -> None."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "trainers" else None


def forbidden(layer: str, module: str, importer: str = "") -> str | None:
    """Why `layer` (the file `importer`, dotted) may not import `module` (docs/design.md §2), or None."""
    top = _top(module)
    if layer == "trainers" and top == "trainers":
        mine, theirs = trainers_part(importer), trainers_part(module)
        if mine in TRAINERS_ORDER and theirs in TRAINERS_ORDER \
                and TRAINERS_ORDER.index(theirs) > TRAINERS_ORDER.index(mine):
            return (f"trainers.{mine} may not import trainers.{theirs} (order inside trainers: "
                    f"{' < '.join(TRAINERS_ORDER)})")
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
        importer = ".".join(rel.with_suffix("").parts)
        for line, module in imports_of(path, root):
            why = forbidden(layer, module, importer)
            if why:
                problems.append(f"{rel}:{line}: import {module}: {why}")
    return problems


def test_every_module_imports_one_way():
    """docs/design.md §2, checked on every module's source (not only what importing a package's __init__ pulls in):

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


def _empty_layers(root: pathlib.Path) -> None:
    """The three layer packages, empty, under `root`: a tree to plant imports in."""
    for layer in LAYERS:
        (root / layer).mkdir()
        (root / layer / "__init__.py").write_text("")


def test_layering_check_catches_planted_imports(tmp_path):
    _empty_layers(tmp_path)
    (tmp_path / "trainers" / "ok.py").write_text("import torch\nfrom specforce_contracts import METRICS\n")
    (tmp_path / "trainers" / "bad.py").write_text("def f():\n    from sweeps.tracking import x\n")
    (tmp_path / "trainers" / "worse.py").write_text("import importlib\nimportlib.import_module('analysis.runs')\n")
    (tmp_path / "analysis" / "bad.py").write_text("import numpy\nif False:\n    import torch.nn as nn\n")
    (tmp_path / "analysis" / "rel.py").write_text("from ..trainers import loop\nfrom . import runs\n")
    (tmp_path / "analysis" / "sw.py").write_text("from sweeps import spec\n")
    (tmp_path / "sweeps" / "ok.py").write_text("import torch\nimport trainers.training.loop\nimport analysis.runs\n")
    (tmp_path / f"{CONTRACTS}.py").write_text("import json\nimport yaml\n")
    for part in ("model", "training", "evaluation"):
        (tmp_path / "trainers" / part).mkdir()
    (tmp_path / "trainers" / "model" / "up.py").write_text("import torch\nfrom trainers.training.loop import Trainer\n")
    (tmp_path / "trainers" / "model" / "ok.py").write_text("from trainers.data.loader import x\nimport trainers.model.jit\n")
    (tmp_path / "trainers" / "training" / "ok.py").write_text("from trainers.evaluation import evaluator\n")
    (tmp_path / "trainers" / "evaluation" / "up.py").write_text("if 0:\n    from trainers.training.config import C\n")
    (tmp_path / "trainers" / "distributed.py").write_text("from trainers.model import flow\n")
    found = layering_violations(tmp_path)
    assert sorted(f.split(":")[0] + ":" + f.split(":")[1] for f in found) == sorted([
        f"{CONTRACTS}.py:2", "trainers/bad.py:2", "trainers/worse.py:2", "analysis/bad.py:3", "analysis/rel.py:1",
        "analysis/sw.py:1", "trainers/model/up.py:2", "trainers/evaluation/up.py:2", "trainers/distributed.py:1"]), found


def test_packages_import_one_way():
    # analysis must not need torch to build a report; trainers must not import sweeps/analysis.
    code = (
        "import sys, analysis, specforce_contracts; "
        "assert 'torch' not in sys.modules, 'analysis imported torch'; "
        "import trainers; assert 'sweeps' not in sys.modules and 'analysis' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    assert pathlib.Path(importlib.import_module("trainers").__file__).resolve() == ROOT / "trainers" / "__init__.py"


# ------------------------------------------------------------------------------------------------- import circles
def module_files(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
    """Dotted name -> file, for the contracts and every module of the three layers (packages as `pkg.__init__`)."""
    files = {CONTRACTS: root / f"{CONTRACTS}.py"} if (root / f"{CONTRACTS}.py").exists() else {}
    for layer in LAYERS:
        for path in (root / layer).rglob("*.py"):
            files[".".join(path.relative_to(root).with_suffix("").parts)] = path
    return files


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of this project it imports (every import, function-level and TYPE_CHECKING ones
    included, as `imports_of` reads them). `from pkg import name` points at `pkg.name` when that is a module, and
    at `pkg.__init__` too; any other import points at the longest dotted prefix that is a module."""
    files = module_files(root)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        targets = [m for _, m in imports_of(path, root)]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets += [f"{node.module}.{alias.name}" for alias in node.names]  # may name submodules
        for target in targets:
            parts = target.split(".")
            for n in range(len(parts), 0, -1):
                dotted = ".".join(parts[:n])
                hit = next((m for m in (dotted, dotted + ".__init__") if m in files), None)
                if hit:
                    if hit != name:
                        graph[name].add(hit)
                    break
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(circles)


def test_no_module_imports_itself_back():
    """No import circles (docs/design.md §2): a file never reaches itself through the modules it imports, lazily or
    under TYPE_CHECKING included, so each file can be read, tested and moved after the ones it stands on."""
    graph = import_graph(ROOT)
    assert len(graph) > 40 and sum(map(len, graph.values())) > 80  # the graph is really read
    assert import_circles(graph) == []


def test_circle_check_catches_planted_circles(tmp_path):
    _empty_layers(tmp_path)
    (tmp_path / "sweeps" / "a.py").write_text("from sweeps.b import f\n")
    (tmp_path / "sweeps" / "b.py").write_text("def f():\n    from sweeps import c\n")
    (tmp_path / "sweeps" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sweeps.a\n")
    (tmp_path / "analysis" / "x.py").write_text("from analysis.y import g\n")
    (tmp_path / "analysis" / "y.py").write_text("import numpy\n")
    assert import_circles(import_graph(tmp_path)) == [["sweeps.a", "sweeps.b", "sweeps.c"]]
