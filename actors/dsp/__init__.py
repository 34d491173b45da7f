"""Batched DSP kernels: one code path for NumPy (CPU) and CuPy (GPU), librosa 0.11 semantics.

Pure functions; the array module comes from the input (``actors.dsp.xp.get_xp``)
and results stay on the input's device. Batch axes lead, options are
keyword-only.

- :mod:`actors.dsp.xp`: the array module of an input, host copies, scipy.fft / ndimage per module;
- :mod:`actors.dsp.stft`: framing, window, rfft STFT, power/magnitude spectrograms;
- :mod:`actors.dsp.median`: sliding medians with scipy 'reflect' edges (bottleneck on CPU);
- :mod:`actors.dsp.hpss`: median-filtering HPSS, soft/hard masks (padded batches and time spans);
- :mod:`actors.dsp.chroma`: chroma filterbank and chroma from power;
- :mod:`actors.dsp.onset`: mel filterbank, onset strength (padded batches and time spans), tempo.

:mod:`actors.features.chain` runs these same functions; there is no second copy.
"""

__all__ = ["chroma", "hpss", "median", "onset", "stft", "xp"]
