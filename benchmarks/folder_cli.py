"""The command line that bench_data and bench_formats share: both time readers of a generated (or given)
ImageNet-like folder in interleaved rounds, print a Markdown table and can write their figures as JSON.

    .venv/bin/python -m benchmarks.bench_formats --quick        # one of the benchmarks that use it (CPU, ~1 min)
    .venv/bin/python -m benchmarks.bench_data --quick           # the other (CPU, ~1 min)
"""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any


def folder_parser(doc: str, *, images_help: str, quick_help: str, min_seconds: float,
                  min_seconds_help: str) -> argparse.ArgumentParser:
    """The options both benchmarks start with, in this order: --images, --folder, --quick, --rounds, --min-seconds
    (each adds its own after them, then --out)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000, help=images_help)
    ap.add_argument("--folder", help="an existing ImageNet-like folder (default: generate one in a temp dir)")
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median reported)")
    ap.add_argument("--min-seconds", type=float, default=min_seconds, help=min_seconds_help)
    return ap


def add_out(ap: argparse.ArgumentParser) -> None:
    """The last option of both: where to write the figures as JSON."""
    ap.add_argument("--out", help="write the result as JSON here")


def report(result: dict[str, Any], table: Callable[[dict[str, Any]], str], out: str | None) -> dict[str, Any]:
    """Print the result's table and, with `out`, write the result there as JSON (numpy floats as floats)."""
    print(table(result))
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=1, default=float)
    return result
