"""Enrich: user profiles joined from a side input or by cached lookups."""
