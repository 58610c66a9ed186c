"""The serving layer: tiered, tenant-scoped queries over the hot and cold tiers."""
