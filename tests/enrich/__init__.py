"""Tests of the enrich stage (`transforms/enrich`)."""
