"""Run configuration: frozen dataclasses, loaded from YAML, then environment,
then CLI options (later wins).

YAML mirrors the dataclass nesting::

    dsp: {sample_rate: 22050, hop_length: 512}
    batch: {memory_fraction: 0.7}
    pipeline: {chunk_seconds: 300, feature_actors: 2}
    identify: {accept_score_long: 0.2}

Environment overrides use ``CHROMARAY_<SECTION>__<FIELD>``, e.g.
``CHROMARAY_PIPELINE__FEATURE_ACTORS=4``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from actors.config import BatchConfig, DSPConfig, Settings, require, require_positive
from actors.errors import ChromarayError

__all__ = ["AUDIO_EXTENSIONS", "MIDI_EXTENSIONS", "ChromarayConfig", "IdentifyConfig", "MatchConfig",
           "PipelineConfig", "load_config", "read_yaml"]


AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"})
MIDI_EXTENSIONS = frozenset({".mid", ".midi"})


@dataclass(frozen=True)
class PipelineConfig(Settings):
    """How work is spread over Ray."""

    chunk_seconds: float = 300.0  # longer files stream through their actor in spans of this length
    files_per_shard: int = 16  # at most this many files per worker call (one Parquet part per dataset each)
    feature_actors: int = 0  # 0 = one per CPU (per GPU with a GPU)
    feature_batch_rows: int = 4  # whole tracks per feature-chain call; the chain sub-batches by memory
    feature_cpus: float = 1.0
    feature_gpus: float = 0.0  # >0 only when the cluster has GPUs (checked before submitting)
    parquet_rows_per_part: int = 64  # tracks per part when tracks are stored in process (no workers)
    progress_interval_s: float = 2.0
    max_worker_crashes: int = 3  # a file whose processing killed its worker this often becomes an error row

    def __post_init__(self) -> None:
        require_positive(self, "chunk_seconds", "files_per_shard", "feature_batch_rows", "feature_cpus",
                         "parquet_rows_per_part", "progress_interval_s", "max_worker_crashes")
        require_positive(self, "feature_actors", "feature_gpus", allow_zero=True)


@dataclass(frozen=True)
class IdentifyConfig(Settings):
    """Decision thresholds of identify and duplicates (pipeline.search).

    Scores are (BER of all 32 bits + BER of the 12 temporal bits) / 2 of a verified
    candidate. ``accept_score_short`` applies when fewer than ``short_codes`` codes were
    compared (≈3 s clips), else ``accept_score_long``. Both were learned on data disjoint
    from the reported evaluation (see pipeline.search.identify and
    benchmarks/bench_identify.py --learn).
    """

    accept_score_short: float = 0.156
    accept_score_long: float = 0.202
    short_codes: int = 35
    min_aligned_codes: int = 12  # minimum aligned library codes of a verification (≈ 1.1 s)
    n_verify: int = 10  # candidates (track, offset) verified per speed variant
    n_flips: int = 6  # least reliable bits flipped per query frame (each flip is one more lookup)
    # First pass of the whole-clip search: exact codes only, at most this many postings (the rarest
    # codes first); 0: straight to the full pass. See pipeline.search.identify.search. Larger than
    # the full pass's budget (FingerprintIndex.max_postings_per_query) because its codes are 7x
    # fewer: at 10^6 tracks of the scale benchmark 400,000 found 16 of 16 clean clips, 200,000 13
    # and 100,000 13 (#12 note); below ~10^5 tracks a clip's exact codes hold fewer postings.
    quick_postings: int = 400_000
    speeds: tuple[float, ...] = (1.0, 1.02, 0.98)  # tried in order until one gives an accepted match
    duplicate_score: float = 0.202  # whole tracks: the long-clip threshold
    # A match must align much better than it mis-aligns (static chroma agrees at any offset):
    # contrast = median score at shifts of about 3 and 6 s minus the aligned score.
    min_query_contrast: float = 0.10  # identify
    min_alignment_contrast: float = 0.15  # duplicates
    contrast_shifts: tuple[int, ...] = (-64, -32, 32, 64)  # codes
    min_duplicate_overlap_s: float = 10.0
    # Music over music (another recording mixed in): when no whole-clip match is accepted, a
    # second search looks up each query code with up to ``mix_max_flips`` of its ``mix_weak_bits``
    # least reliable bits flipped; the ``mix_tracks`` tracks with most votes (any offset) and the
    # tracks of the ``mix_verify`` best-voted (track, offset) cells (every track of a library of at
    # most ``mix_tracks``) are swept at every alignment,
    # scored on windows of ``mix_window`` codes (≈1.5 s) by the mean of the best ``mix_keep``
    # fraction of the windows (1.0: all of them; windows with under half their codes valid are
    # left out). Accepted when the best track's score is <= mix_max_score and at least mix_min_gap
    # below the best score of every other swept track (its competitors for the same clip: a
    # calibration that does not depend on the library's size by construction; measured on a
    # 50-track library only). Clips shorter than mix_min_windows windows are not tried. mix_verify = 0 turns the
    # search off. mix_max_score / mix_min_gap: learned on the "learn" split (half the tracks) of
    # `benchmarks/bench_identify.py --queries-per-cond 6 --negatives-per-cond 4` (real music and
    # FluidSynth renderings, 2026-12-02: 26 of 30 right-track learn positives, 0 of 56 learn
    # negatives and wrong-track candidates within the margins of the accepted region).
    mix_verify: int = 30
    # Best-voted tracks (votes per track) swept at every alignment; a library of at most this many
    # tracks is swept whole. 24 -> 64 (#12): the true track was among the 24 best-voted of 50 in
    # 85 % of the benchmark's real mixes, among the 48 best in 94 %; 6 % get no vote at all.
    mix_tracks: int = 64
    mix_weak_bits: int = 16
    mix_max_flips: int = 2
    mix_window: int = 16
    mix_keep: float = 1.0  # measured better than the best half (0.5) or 0.75 once the gap calibrates (#12 note)
    mix_min_windows: int = 6
    mix_max_score: float = 0.383
    mix_min_gap: float = 0.0325
    # A partial match must also align clearly better than the same track does at most alignments:
    # its sweep's median score minus its best. Loop-based drum tracks reach 0.035-0.044 against an
    # out-of-library loop (tests/pipeline/search/test_identify.py); the least of the learn split's
    # accepted right tracks was 0.106 (#12 note).
    mix_min_sweep_contrast: float = 0.07

    def __post_init__(self) -> None:
        require_positive(self, "mix_verify", "mix_tracks", allow_zero=True)
        require(0 <= self.mix_weak_bits <= 32, f"mix_weak_bits must be in 0..32, got {self.mix_weak_bits!r}")
        require(0 <= self.mix_max_flips <= 3, f"mix_max_flips must be in 0..3, got {self.mix_max_flips!r}")
        require(0 < self.mix_keep <= 1, f"mix_keep must be in (0, 1], got {self.mix_keep!r}")
        require(0 < self.mix_max_score < 0.5, f"mix_max_score must be in (0, 0.5), got {self.mix_max_score!r}")
        require(0 <= self.mix_min_gap < 0.5, f"mix_min_gap must be in [0, 0.5), got {self.mix_min_gap!r}")
        require(0 <= self.mix_min_sweep_contrast < 0.5,
                f"mix_min_sweep_contrast must be in [0, 0.5), got {self.mix_min_sweep_contrast!r}")
        require(self.mix_window * 768 < 2 ** 15, f"mix_window must be at most 42 codes, got {self.mix_window!r}")
        require_positive(self, "mix_window", "mix_min_windows")
        for name in ("accept_score_short", "accept_score_long", "duplicate_score"):
            v = getattr(self, name)
            require(0 < v < 0.5, f"{name} must be in (0, 0.5) (0.5 is chance), got {v!r}")
        require_positive(self, "short_codes", "min_aligned_codes", "n_verify")
        require_positive(self, "quick_postings", allow_zero=True)
        require(0 <= self.n_flips <= 32, f"n_flips must be in 0..32, got {self.n_flips!r}")
        require(bool(self.speeds) and all(v > 0 for v in self.speeds), f"speeds must be > 0, got {self.speeds!r}")
        require_positive(self, "min_duplicate_overlap_s", allow_zero=True)


@dataclass(frozen=True)
class MatchConfig(Settings):
    """MIDI -> recording matching (pipeline.midi_match): acceptance and the candidate budget.

    A pair is accepted when its chance-corrected DTW alignment score reaches ``min_score``
    **and** it beats the same pair with the MIDI file transposed by each of the 11 other
    semitone shifts by at least ``min_gap`` (the *transposition gap*: a recording of the
    piece agrees with its score in one key only, while an unrelated piece in a related key
    agrees about as well at several shifts; this calibrates each pair against itself, in a
    library of any size). Only the ``verify_candidates`` best-scoring candidates are
    checked this way. ``transpose``: also match recordings played in another key (the best
    of the 12 shifts is the match; its shift is reported). The thresholds were learned on
    the train split of benchmarks/bench_midi.py with libraries of up to 10^4 recordings
    (see pipeline.midi_match).

    Candidates are retrieved by chord n-grams (actors.midi.retrieval) to ``max_candidates``;
    pairs with more than ``coarse_min_cells`` DTW cells at ~5 Hz are first ranked at ~1 Hz (``coarse_factor``)
    and only ``fine_candidates`` of them are aligned at full rate.
    ``workers``: MIDI files are matched by Ray tasks on this many CPUs of the cluster
    (0: in the driver process; the default, 'auto', uses Ray when there are at least
    ``ray_min_midi`` MIDI files).
    """

    min_score: float = 0.3
    min_gap: float = 0.242
    verify_candidates: int = 3
    transpose: bool = False
    top_k: int = 5
    max_candidates: int = 32
    coarse_factor: int = 5
    coarse_min_cells: int = 250_000
    fine_candidates: int = 8
    workers: int = -1  # -1: auto
    ray_min_midi: int = 64

    def __post_init__(self) -> None:
        require(0 < self.min_score <= 1, f"min_score must be in (0, 1], got {self.min_score!r}")
        require(-2 <= self.min_gap <= 2, f"min_gap must be in [-2, 2] (-2: no gap required), got {self.min_gap!r}")
        require_positive(self, "top_k", "max_candidates", "coarse_factor", "fine_candidates", "verify_candidates",
                         "ray_min_midi")
        require_positive(self, "coarse_min_cells", allow_zero=True)  # 0: coarse-rank every long pair
        require(self.workers >= -1, f"workers must be -1 (auto), 0 (no Ray) or more, got {self.workers!r}")


@dataclass(frozen=True)
class ChromarayConfig(Settings):
    dsp: DSPConfig = field(default_factory=DSPConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    identify: IdentifyConfig = field(default_factory=IdentifyConfig)
    match: MatchConfig = field(default_factory=MatchConfig)


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
            if not isinstance(values, Mapping):
                raise ChromarayError(f"section {section!r} in {where} must be a mapping of options")
            current = getattr(cfg, section)
            cfg = replace(cfg, **{section: current.replace(where=f"{where} [{section}]", **values)})
    return cfg
