"""The `specforce` commands that do their own work, one module each; sweeps/cli.py parses and dispatches to them.

- train.py: `specforce train`, one run without Ray, logged to MLflow directly;
- evaluate.py: `specforce eval`, sample and evaluate a saved checkpoint;
- prepare.py: `specforce prepare`, convert a dataset once into uint8 shards;
- submit.py: `specforce submit|status|logs|stop`, a sweep as a Ray Job on a cluster (staged_sweep.py: its cluster side).

Each is also usable as a library, e.g.
    .venv/bin/python -c "from sweeps.commands.prepare import prepare_dataset; help(prepare_dataset)"
`specforce sweep` and `specforce demo` run sweeps/runner.py; `specforce report` runs analysis/report.py.
"""
