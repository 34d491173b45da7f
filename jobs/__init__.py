"""Thin entry points: ``python -m jobs.NAME`` and the ``chromaray`` console script."""
