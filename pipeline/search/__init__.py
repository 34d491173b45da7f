"""Queries on the fingerprints: the on-disk index, identify a clip, find duplicates."""
