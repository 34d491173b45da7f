"""Configuration of the work done inside workers (frozen, picklable, hashable).

The driver-side loader (pipeline.config) fills these from YAML, profiles,
environment and CLI options.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DSPConfig:
    """Analysis parameters. Defaults are librosa's, so parity is like for like."""

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    hpss_kernel_size: int = 31  # frames (harmonic, time axis) and bins (percussive, freq axis)
    hpss_power: float = 2.0
    hpss_margin: float = 1.0
    n_chroma: int = 12
    n_mels: int = 128
    onset_lag: int = 1
    onset_max_size: int = 1
    top_db: float = 80.0
    tempo_start_bpm: float = 120.0
    tempo_std_bpm: float = 1.0
    tempo_ac_size_s: float = 8.0
    tempo_max_bpm: float = 320.0

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate / self.hop_length

    def version(self) -> str:
        """Changes whenever a parameter changes: stored rows of another version are recomputed."""
        import hashlib

        return "f1-" + hashlib.sha1(repr(sorted(asdict(self).items())).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class BatchConfig:
    """How the feature actors size their batches (see actors.features.batching)."""

    device: str = "auto"  # auto | cpu | gpu
    memory_fraction: float = 0.8  # of free device memory (GPU) or process/cgroup limit (CPU)
    memory_budget_bytes: int = 0  # >0 forces a budget (tests, shared machines)
    max_tracks_per_batch: int = 16
    min_chunk_seconds: float = 5.0
