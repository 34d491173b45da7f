"""Verification of an alignment between two fingerprints: the one bit-error-rate score that
identify (a clip against a track) and duplicates (a track against a track) both decide on.

score = (BER of all 32 bits + BER of the 12 temporal bits) / 2. The temporal bits (12-23) are
the ones that tell apart two songs playing the same chords; weighting them separates in- from
out-of-library queries better than the plain BER (see pipeline.config.IdentifyConfig).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from actors.fingerprint import DECIMATE, N_BITS, popcount32

__all__ = ["DELTA_MASK", "Verification", "contrast", "query_contrast", "verify_codes", "verify_query"]

DELTA_MASK = np.uint32(0x00FFF000)  # bits 12-23: temporal comparisons
_N_DELTA_BITS = 12


class Verification(NamedTuple):
    ber: float  # over all 32 bits
    n: int  # codes compared
    ber_delta: float  # over the 12 temporal bits

    @property
    def score(self) -> float:
        return 0.5 * (self.ber + self.ber_delta)


_NO_OVERLAP = Verification(1.0, 0, 1.0)


def verify_codes(a: np.ndarray, b: np.ndarray, d: int, valid: np.ndarray | None = None) -> Verification:
    """Codes ``a`` against ``b`` on the same code grid, ``b[i + d]`` aligned to ``a[i]``; only
    the codes of ``a`` where ``valid`` (a mask like ``a``) is true count."""
    lo = max(0, -d)
    hi = min(len(a), len(b) - d)
    if hi <= lo:
        return _NO_OVERLAP
    x = a[lo:hi] ^ b[lo + d: hi + d]
    if valid is not None:
        x = x[valid[lo:hi]]
    n = len(x)
    if n == 0:
        return _NO_OVERLAP
    errors = popcount32(x).sum()
    errors_d = popcount32(x & DELTA_MASK).sum()
    return Verification(float(errors) / (N_BITS * n), n, float(errors_d) / (_N_DELTA_BITS * n))


def _on_code_grid(qcodes: np.ndarray, valid: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The query frames that fall on the library's code grid at ``offset`` (library analysis
    frame = query frame + offset; library codes every DECIMATE-th frame), their validity and
    the library code index of the first one."""
    j0 = (-offset) % DECIMATE
    return qcodes[j0::DECIMATE], valid[j0::DECIMATE], (j0 + offset) // DECIMATE


def verify_query(qcodes: np.ndarray, valid: np.ndarray, lib: np.ndarray, offset: int) -> Verification:
    """Query codes (one per analysis frame, ``valid`` mask) against library codes (one every
    DECIMATE-th frame) at ``offset`` (library analysis frame = query frame + offset)."""
    a, va, d = _on_code_grid(qcodes, valid, offset)
    return verify_codes(a, lib, d, va)


def contrast(a: np.ndarray, b: np.ndarray, d: int, *, shifts: Sequence[int], min_codes: int,
             valid: np.ndarray | None = None) -> float:
    """Median score at ``d + shifts`` (codes) minus the score at ``d``: how much better the
    alignment is than the same codes slid by a few seconds along the same track. Static chroma
    (drum loops, drones) agrees at any offset and has a contrast near 0. Shifts comparing fewer
    than ``min_codes`` codes are left out; 0 when none is left."""
    aligned = verify_codes(a, b, d, valid).score
    shifted = [v.score for v in (verify_codes(a, b, d + k, valid) for k in shifts) if v.n >= min_codes]
    return float(np.median(shifted)) - aligned if shifted else 0.0


def query_contrast(qcodes: np.ndarray, valid: np.ndarray, lib: np.ndarray, offset: int, *,
                   shifts: Sequence[int], min_codes: int) -> float:
    """:func:`contrast` of a query (one code per analysis frame) at ``offset`` analysis frames."""
    a, va, d = _on_code_grid(qcodes, valid, offset)
    return contrast(a, lib, d, shifts=shifts, min_codes=min_codes, valid=va)
