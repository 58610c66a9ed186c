"""Tests of the dedup stage (`transforms/dedup`)."""
