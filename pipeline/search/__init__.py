"""Queries on the fingerprints: the on-disk index (index), the one alignment score (score),
the indexed tracks by analysis settings (settings), identify a clip (identify), find
duplicates (duplicates)."""
