"""Sinks: staging, the hot warehouse commits (DuckDB, BigQuery), the cold tier and the dead letters."""
