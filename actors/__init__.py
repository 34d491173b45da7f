"""Work that runs inside Ray workers: DSP kernels, the feature chain, decoding, fingerprints,
MIDI analysis, models and the training loop. Nothing here but actors.train.loop imports Ray."""
