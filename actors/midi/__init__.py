"""MIDI inside workers: parsing, notes, chroma, tokens (:mod:`actors.midi.analysis`) and
chroma/DTW alignment to recordings (:mod:`actors.midi.align`)."""
