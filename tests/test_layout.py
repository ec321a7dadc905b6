"""Guards for the repository layout (DESIGN.md §2)."""
import importlib
import pathlib
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
    assert out[1]  # platform.system() works, so it is the real module


def test_packages_import_one_way():
    # analysis must not need torch to build a report; trainers must not import sweeps/analysis.
    code = (
        "import sys, analysis; "
        "assert 'torch' not in sys.modules, 'analysis imported torch'; "
        "import trainers; assert 'sweeps' not in sys.modules and 'analysis' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    assert importlib.import_module("trainers")
