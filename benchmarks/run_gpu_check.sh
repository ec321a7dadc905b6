#!/usr/bin/env bash
# The one prepared GPU check: benchmarks/bench_gpu.py (and the gpu_flops, gpu_timing and gpu_sections modules it runs)
# on a bare GPU machine that has torch (and numpy, scipy, Pillow, PyYAML, matplotlib, torchvision) but not pydantic
# or torch-fidelity, and cannot reach PyPI.
#
# 1) Here, with PyPI (once; the wheels are ignored by git and travel as a carried folder):
#        bash benchmarks/run_gpu_check.sh fetch-wheels        # ~3 MB into .whl/ for CPython 3.12, manylinux x86_64
# 2) On the GPU machine, from the repository root (the device tool: carry [".whl"], timeout_s 600):
#        bash benchmarks/run_gpu_check.sh                     # ~4 min on one H200; JSON + log under $OUT
#    It installs the wheels into /tmp/site only for modules that are missing (nothing else, no network),
#    prints nvidia-smi, runs the benchmark under a 540 s limit and leaves $OUT/bench_gpu.json and $OUT/bench_gpu.log.
#
# Anywhere else (a workstation with CUDA and `make setup` done) `make bench-gpu` is the same benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WHEELS=.whl
# versions known to work with trainers/ (those of this repository's .venv when the script was written)
PINS="pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 torch-fidelity==0.4.0"

if [ "${1:-}" = "fetch-wheels" ]; then
    mkdir -p "$WHEELS"
    grep -qx "/$WHEELS/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/$WHEELS/" >> .git/info/exclude; }
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" $PINS
    ls -la "$WHEELS"
    exit 0
fi

OUT="${OUT:-$PWD/reports}"
mkdir -p "$OUT"
missing=$("$PY" -c 'import importlib.util as u; print(" ".join(m for m in ("pydantic", "torch_fidelity") if u.find_spec(m) is None))')
if [ -n "$missing" ]; then
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "missing Python modules: $missing; run 'bash benchmarks/run_gpu_check.sh fetch-wheels' where PyPI is" \
             "reachable and carry $WHEELS/ to this machine" >&2
        exit 2
    fi
    echo "installing carried wheels for: $missing"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
"$PY" -c 'import torch, pydantic, torch_fidelity; print("torch", torch.__version__, "cuda", torch.version.cuda,
"pydantic", pydantic.VERSION, "torch-fidelity", torch_fidelity.__version__)'
set +e
timeout 540 "$PY" -m benchmarks.bench_gpu --out "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"
rc=${PIPESTATUS[0]}
echo "bench_gpu exit status: $rc (124 = stopped at 540 s; the JSON holds every section finished by then)"
exit "$rc"
