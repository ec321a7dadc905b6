# The README's commands. `make demo` and `make test` each set up .venv first (idempotent).
#   make demo   - install, run the demo ablation on embedded local Ray + local MLflow, write the report
#   make test   - install, run the fast test suite (slow end-to-end tests: `make test-slow`)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch and torchvision must come as a matched pair. On Linux x86_64 these are the builds that lie on this
# workplace's disk (and the normal CUDA builds from PyPI on a GPU machine); override for other platforms.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow bench ui clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

demo: setup
	$(VENV)/bin/specforce demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

bench: setup
	$(PY) -m benchmarks.run_all

# GPU benchmark: JiT-B/32 and B/16 on one GPU in ~4 min; without CUDA the same code at toy size on CPU.
# On a bare GPU machine without pydantic/torch-fidelity use benchmarks/run_gpu_check.sh instead.
.PHONY: bench-gpu
bench-gpu: setup
	$(PY) -m benchmarks.bench_gpu --out reports/bench_gpu.json

ui: setup
	$(VENV)/bin/specforce ui

clean:
	rm -rf $(VENV) mlflow.db mlartifacts ray_results reports
