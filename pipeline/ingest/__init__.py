"""The fingerprint job: discover files, plan what is new, stream it through the Ray Data
graph, and commit the results (sink, progress, metrics)."""
