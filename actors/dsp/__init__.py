"""Batched DSP kernels: one code path for NumPy (CPU) and CuPy (GPU), librosa 0.11 semantics.

Pure functions; the array module comes from the input (``actors.dsp.xp.get_xp``)
and results stay on the input's device. Batch axes lead, options are
keyword-only.

- :mod:`actors.dsp.stft`: framing, window, rfft STFT, power/magnitude spectrograms;
- :mod:`actors.dsp.median`: sliding medians with scipy 'reflect' edges (bottleneck on CPU);
- :mod:`actors.dsp.hpss`: median-filtering HPSS, soft/hard masks;
- :mod:`actors.dsp.chroma`: chroma filterbank and chroma from power;
- :mod:`actors.dsp.onset`: mel filterbank, onset strength, tempo.
"""
