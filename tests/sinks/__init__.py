"""Tests of the sinks stage (`transforms/sinks`)."""
