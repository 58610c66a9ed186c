"""Tests of the views stage (`transforms/views`)."""
