"""The read-only progress page (FastAPI app + static assets)."""
