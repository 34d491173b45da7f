"""Queries on the fingerprints: the on-disk index (index), the one alignment score (score),
identify a clip (identify), find duplicates (duplicates)."""
