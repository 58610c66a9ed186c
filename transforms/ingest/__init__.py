"""Ingest: records from the sources, batched, decoded and checked against the contract."""
