"""Driver side: sweep specs, Ray Tune + Optuna, Ray Train trial launch, MLflow bookkeeping, the `specforce` CLI."""
