"""Indexed tracks grouped by the DSP settings they were fingerprinted with: what identify and
duplicates search, and which tracks neither can search (and why).

Codes of different settings are not comparable (another frame rate puts them on another code
grid; another STFT or chroma gives other bits), so both searches stay inside one group: identify
analyses the clip once per group, duplicates compares tracks within a group only. Settings come
from the database (pipeline.store.track_settings); a track whose settings are unknown, or whose
index entry holds another frame rate than its settings (an index not yet synced), is skipped
with a reason that the one-line :attr:`SettingsGroups.skipped_note` reports.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from actors.config import DSPConfig
from pipeline.search.index import FingerprintIndex
from pipeline.store import track_settings

__all__ = ["STALE_RATE", "UNKNOWN_SETTINGS", "SettingsGroups", "group_by_settings"]

UNKNOWN_SETTINGS = ("their analysis settings are not recorded in the database (fingerprinted before settings "
                    "were stored, by a run whose config is gone): run `chromaray fingerprint` on them again")
STALE_RATE = ("the fingerprint index holds them at another frame rate than their analysis settings: "
              "bring the index up to date (run without --no-sync)")


@dataclass
class SettingsGroups:
    #: (analysis settings, index keys of their tracks), most tracks first.
    groups: list[tuple[DSPConfig, list[int]]] = field(default_factory=list)
    #: Indexed tracks not searched (content hash -> reason).
    skipped: dict[str, str] = field(default_factory=dict)
    n_indexed: int = 0

    @property
    def skipped_note(self) -> str | None:
        """One line saying which indexed tracks are not searched and why (None: all are)."""
        if not self.skipped:
            return None
        by_reason: dict[str, int] = {}
        for reason in self.skipped.values():
            by_reason[reason] = by_reason.get(reason, 0) + 1
        return "; ".join(f"{n} of {self.n_indexed} indexed tracks are not searched: {reason}"
                         for reason, n in sorted(by_reason.items()))


def group_by_settings(engine: Engine, idx: FingerprintIndex, dsp: DSPConfig | None = None) -> SettingsGroups:
    """The tracks of ``idx`` by their stored analysis settings; ``dsp`` is assumed for tracks
    whose settings the database does not record (default: they are skipped)."""
    out = SettingsGroups(n_indexed=len(idx.tracks))
    settings = track_settings(engine) if idx.tracks else {}
    keys_of: dict[DSPConfig, list[int]] = {}
    for key, info in sorted(idx.tracks.items()):
        d = settings.get(info.content_hash, dsp)
        if d is None:
            out.skipped[info.content_hash] = UNKNOWN_SETTINGS
        elif abs(d.frame_rate_hz - info.frame_rate_hz) > 1e-9 * d.frame_rate_hz:
            out.skipped[info.content_hash] = STALE_RATE
        else:
            keys_of.setdefault(d, []).append(key)
    out.groups = sorted(keys_of.items(), key=lambda dk: (-len(dk[1]), dk[1][0]))
    return out
