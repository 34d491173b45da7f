"""Synthetic training sequences: token streams and feature frames with known structure, for
the sequence models' tests (a model that learns them must beat the trivial baselines)."""
from __future__ import annotations

import numpy as np

__all__ = ["VOCAB", "chord_frames", "markov_tokens"]

#: Token ids of :func:`markov_tokens` by default.
VOCAB = 24


def markov_tokens(rng: np.random.Generator, n: int, succ1: np.ndarray, succ2: np.ndarray, *,
                  vocab: int = VOCAB) -> np.ndarray:
    """``n`` token ids from a sparse Markov chain: next = succ1[t] w.p. 0.7, succ2[t] w.p. 0.2,
    uniform over ``vocab`` w.p. 0.1 (entropy rate ~1.0 nat/token against ~3.1 for a unigram
    predictor at 24 ids, so a model that learns the transitions beats the baseline by far)."""
    seq = np.empty(n, np.int32)
    seq[0] = rng.integers(vocab)
    u = rng.random(n)
    noise = rng.integers(0, vocab, n)
    for i in range(1, n):
        t = seq[i - 1]
        seq[i] = succ1[t] if u[i] < 0.7 else succ2[t] if u[i] < 0.9 else noise[i]
    return seq


def chord_frames(rng: np.random.Generator, n: int, hold: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Chroma (n, 12) and onset (n,) of an I-V-vi-IV progression in C or G, ``hold`` frames a
    chord, with noise; onset 1 at chord changes and 0.3 on the beat."""
    key = int(rng.choice([0, 7]))  # C or G major: held-out tracks share keys with training ones
    degrees = [(0, 4, 7), (7, 11, 2), (9, 0, 4), (5, 9, 0)]  # I V vi IV (pitch classes rel. to key)
    chroma = np.zeros((n, 12), np.float32)
    onset = np.zeros(n, np.float32)
    for t in range(n):
        for pc in degrees[(t // hold) % 4]:
            chroma[t, (pc + key) % 12] = 1.0
        onset[t] = 1.0 if t % hold == 0 else 0.3 if t % (hold // 2) == 0 else 0.0
    chroma = np.clip(chroma * 0.9 + 0.1 * rng.random(chroma.shape, dtype=np.float32), 0, None)
    chroma /= chroma.max(axis=1, keepdims=True)
    onset = onset + 0.05 * rng.random(n, dtype=np.float32)
    return chroma.astype(np.float32), onset.astype(np.float32)
