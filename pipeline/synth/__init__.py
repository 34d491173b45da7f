"""Synthetic music, MIDI, degradations and broken files: one generator for the demo
library, the tests and the benchmarks."""
