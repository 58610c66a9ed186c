"""Tests of the ingest stage (`transforms/ingest`)."""
