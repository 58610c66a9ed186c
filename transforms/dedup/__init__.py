"""Dedup: retries dropped by idempotency key, state sharded over the key space."""
