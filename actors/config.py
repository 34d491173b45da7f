"""The one configuration scheme: typed, frozen dataclasses with ``to_dict``/``from_dict``.

Every setting of the project derives from :class:`Settings`: the worker-side
configs here (DSP analysis, batch planning), the driver-side ones in
:mod:`pipeline.config` (pipeline, identify) and the training profiles and loop.
The driver-side loader (pipeline.config) fills them from YAML, profiles,
environment and CLI options. Being frozen, they are hashable and travel to
Ray workers by pickling unchanged.
"""
from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from actors.errors import ChromarayError

__all__ = ["BatchConfig", "DSPConfig", "Settings", "require", "require_positive"]


S = TypeVar("S", bound="Settings")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` converted to the field's declared type (YAML and environment give strings)."""
    if isinstance(annotation, type) and issubclass(annotation, Settings):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ChromarayError(f"{where} must be a mapping of options, got {value!r}")
        return annotation.from_dict(value, where=where)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        if len(options) == 1:  # Optional[X]: X's own message is the precise one
            return _coerce(value, options[0], where)
        for option in options:
            try:
                return _coerce(value, option, where)
            except (ChromarayError, TypeError, ValueError):
                continue
        raise ChromarayError(f"bad value {value!r} for {where}")
    if annotation is bool:
        if isinstance(value, str):
            low = value.strip().lower()
            if low not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ChromarayError(f"bad value {value!r} for {where}: expected true or false")
            return low in {"1", "true", "yes", "on"}
        return bool(value)
    if annotation in (int, float) and isinstance(value, bool):
        raise ChromarayError(f"bad value {value!r} for {where}: expected a number")
    if annotation in (int, float, str):
        try:
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError("not an integer")
            return annotation(value)
        except (TypeError, ValueError) as exc:
            raise ChromarayError(f"bad value {value!r} for {where}: {exc}") from None
    if origin is tuple:
        args = typing.get_args(annotation)
        if isinstance(value, str):  # environment: "1.0,1.02,0.98"
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ChromarayError(f"bad value {value!r} for {where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ChromarayError(f"bad value {value!r} for {where}: expected {len(args)} items")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
    return value


def require(ok: bool, message: str) -> None:
    """A config invariant; ``from_dict`` adds where the bad value came from."""
    if not ok:
        raise ChromarayError(message)


def require_positive(cfg: Any, *names: str, allow_zero: bool = False) -> None:
    """Each named field is > 0 (>= 0 with ``allow_zero``)."""
    for name in names:
        v = getattr(cfg, name)
        require(v >= 0 if allow_zero else v > 0, f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")


@dataclass(frozen=True)
class Settings:
    """Base of every config: frozen, ``to_dict`` for storage, ``from_dict`` with checked keys and types."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any], *, where: str | None = None) -> S:
        """An instance from a mapping: unknown keys and uncoercible values raise one ChromarayError."""
        where = where or cls.__name__
        hints = typing.get_type_hints(cls)
        known = {f.name for f in fields(cls) if f.init}
        unknown = set(data) - known
        if unknown:
            raise ChromarayError(f"unknown option(s) {sorted(unknown)} in {where}; known: {sorted(known)}")
        values = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
        try:
            return cls(**values)
        except (TypeError, ValueError, ChromarayError) as exc:
            raise ChromarayError(f"bad value in {where}: {exc}") from None

    def replace(self: S, where: str | None = None, **changes: Any) -> S:
        """A copy with ``changes`` applied, coerced and checked like :meth:`from_dict`."""
        return type(self).from_dict({**{f.name: getattr(self, f.name) for f in fields(self) if f.init},
                                     **changes}, where=where)


@dataclass(frozen=True)
class DSPConfig(Settings):
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

    def __post_init__(self) -> None:
        require_positive(self, "sample_rate", "n_fft", "hop_length", "hpss_kernel_size", "hpss_power", "n_mels",
                         "onset_lag", "onset_max_size", "top_db", "tempo_start_bpm", "tempo_std_bpm",
                         "tempo_ac_size_s", "tempo_max_bpm")
        require(self.hpss_margin >= 1, f"hpss_margin must be >= 1, got {self.hpss_margin!r}")
        require(self.n_chroma == 12, f"n_chroma must be 12 (fingerprints compare the 12 pitch classes), "
                                     f"got {self.n_chroma!r}")

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate / self.hop_length

    def version(self) -> str:
        """Changes whenever a parameter changes: stored rows of another version are recomputed."""
        import hashlib

        return "f1-" + hashlib.sha1(repr(sorted(asdict(self).items())).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class BatchConfig(Settings):
    """How the feature actors size their batches (see actors.features.batching)."""

    device: str = "auto"  # auto | cpu | gpu
    memory_fraction: float = 0.8  # of free device memory (GPU) or process/cgroup limit (CPU)
    memory_budget_bytes: int = 0  # >0 forces a budget (tests, shared machines)
    max_tracks_per_batch: int = 16
    min_chunk_seconds: float = 5.0

    def __post_init__(self) -> None:
        require(self.device in ("auto", "cpu", "gpu"), f"device must be auto, cpu or gpu, got {self.device!r}")
        require(0 < self.memory_fraction <= 1, f"memory_fraction must be in (0, 1], got {self.memory_fraction!r}")
        require_positive(self, "memory_budget_bytes", allow_zero=True)
        require_positive(self, "max_tracks_per_batch", "min_chunk_seconds")
