"""Jobs of the analytics pipeline: `analytics` (the main job) and its helpers."""
