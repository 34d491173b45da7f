"""Run configuration: frozen dataclasses, loaded from YAML, then environment,
then CLI options (later wins).

YAML mirrors the dataclass nesting::

    dsp: {sample_rate: 22050, hop_length: 512}
    batch: {memory_fraction: 0.7}
    pipeline: {chunk_seconds: 300, feature_actors: 2}

Environment overrides use ``CHROMARAY_<SECTION>__<FIELD>``, e.g.
``CHROMARAY_PIPELINE__FEATURE_ACTORS=4``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from actors.config import BatchConfig, DSPConfig
from actors.errors import ChromarayError

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"})
MIDI_EXTENSIONS = frozenset({".mid", ".midi"})


@dataclass(frozen=True)
class PipelineConfig:
    """How work is spread over Ray."""

    chunk_seconds: float = 300.0  # longer files stream through the actors in spans of this length
    files_per_shard: int = 16  # manifest rows per Ray Data input block
    feature_actors: int = 0  # 0 = one per free CPU left after decoding (at least 1)
    feature_batch_rows: int = 4  # rows per map_batches call; the actor sub-batches by memory
    # Different CPU shares keep Ray Data from fusing decoding into the feature actors,
    # so decoding streams ahead in tasks while the actors analyse.
    decode_cpus: float = 0.5
    feature_cpus: float = 1.0
    feature_gpus: float = 0.0  # >0 only when the cluster has GPUs (checked before submitting)
    parquet_rows_per_part: int = 64
    progress_interval_s: float = 2.0


@dataclass(frozen=True)
class ChromarayConfig:
    dsp: DSPConfig = field(default_factory=DSPConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, to: Any) -> Any:
    if isinstance(to, bool):
        if isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "on"}
        return bool(value)
    return type(to)(value)


def _apply(section: Any, overrides: Mapping[str, Any], where: str) -> Any:
    names = {f.name for f in fields(section)}
    unknown = set(overrides) - names
    if unknown:
        raise ChromarayError(f"unknown option(s) {sorted(unknown)} in {where}; known: {sorted(names)}")
    try:
        return replace(section, **{k: _coerce(v, getattr(section, k)) for k, v in overrides.items()})
    except (TypeError, ValueError) as exc:
        raise ChromarayError(f"bad value in {where}: {exc}") from exc


def read_yaml(path: str | os.PathLike, *, what: str) -> dict[str, Any]:
    """A YAML mapping from a file, or one ChromarayError line saying what is wrong with it."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ChromarayError(f"{what} {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ChromarayError(f"{what} {p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ChromarayError(f"{what} {p} must hold a mapping of options")
    return data


def load_config(path: str | os.PathLike | None = None, *, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                environ: Mapping[str, str] | None = None) -> ChromarayConfig:
    """YAML file (optional) < environment < explicit overrides ({section: {field: value}})."""
    cfg = ChromarayConfig()
    layers: list[tuple[str, Mapping[str, Mapping[str, Any]]]] = []
    if path is not None:
        layers.append((str(path), read_yaml(path, what="config file")))
    env: dict[str, dict[str, str]] = {}
    for key, value in (os.environ if environ is None else environ).items():
        if key.startswith("CHROMARAY_") and "__" in key:
            section, _, name = key[len("CHROMARAY_"):].lower().partition("__")
            env.setdefault(section, {})[name] = value
    layers.append(("environment", env))
    layers.append(("command line", overrides or {}))
    for where, layer in layers:
        for section, values in layer.items():
            if not hasattr(cfg, section):
                raise ChromarayError(f"unknown config section {section!r} in {where}")
            cfg = replace(cfg, **{section: _apply(getattr(cfg, section), values, where)})
    return cfg
