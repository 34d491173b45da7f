"""The driver side: configuration, the Ray runtime, ingest (the fingerprint job), storage,
search, MIDI matching, training, the web page and synthetic data."""
