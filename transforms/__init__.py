"""Composable PTransforms of the analytics pipeline, one module per concern."""
