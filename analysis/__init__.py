"""Reads MLflow runs into pandas/parquet, compares arms with uncertainty, writes reports. Never imports torch."""
