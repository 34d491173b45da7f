"""Music over music: a clip with another recording mixed in at 0 dB (short real-data excerpts of
../shared/data/audio; skipped without them). The library holds 45 s of four real tracks and an
MP3 copy of the first (a duplicate, which must not count as the match's competitor)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import IdentifyConfig
from pipeline.synth import SR
from tests.paths import SHARED_DATA

AUDIO = SHARED_DATA / "audio"
LIBRARY = ["etr__credits1-cp", "etr__freezingpoint", "frozenbubble__introzik", "supertux__classic"]
OTHERS = ["supertux__saharan_penguin", "supertux__tropicalbreeze", "frozenbubble__mainzik-1p"]
LIB_START_S, LIB_S = 30.0, 45.0

pytestmark = pytest.mark.skipif(not all((AUDIO / f"{n}.ogg").exists() for n in LIBRARY + OTHERS),
                                reason="needs the real tracks of ../shared/data/audio")


def excerpt(name: str, start_s: float, seconds: float) -> np.ndarray:
    """Mono float32 at SR of ``seconds`` of a shared track from ``start_s`` (decoded from the Ogg file)."""
    import soundfile as sf
    import soxr

    path = AUDIO / f"{name}.ogg"
    rate = sf.info(path).samplerate
    y, _ = sf.read(path, start=int(start_s * rate), stop=int((start_s + seconds) * rate), dtype="float32",
                   always_2d=True)
    return soxr.resample(y.mean(axis=1), rate, SR, quality="HQ").astype(np.float32)


def mix(y: np.ndarray, other: np.ndarray, db: float = 0.0) -> np.ndarray:
    """``y`` plus ``other`` at ``db`` relative to ``y``'s power."""
    g = np.sqrt(np.mean(y.astype(np.float64) ** 2) / np.mean(other.astype(np.float64) ** 2) * 10 ** (db / 10))
    return (y + other[: len(y)] * g).astype(np.float32)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory):
    from pipeline.search import index
    from pipeline.store import open_db
    from pipeline.synth import store_signals

    work = tmp_path_factory.mktemp("identify_mix")
    engine = open_db(work / "lib.sqlite")
    from pipeline.synth import reencode

    items = [(f"/music/{n}.ogg", excerpt(n, LIB_START_S, LIB_S)) for n in LIBRARY]
    items.append(("/music/copies/credits.mp3", reencode(items[0][1], "mp3")))
    store_signals(engine, work / "parts", items)
    index.sync(engine)
    yield engine
    engine.dispose()


def test_mixed_clip_is_found_with_its_offset(library) -> None:
    from pipeline.search.identify import Identifier

    clip = mix(excerpt("etr__credits1-cp", LIB_START_S + 10.0, 15.0), excerpt(OTHERS[0], 40.0, 15.0))
    # The whole-clip search alone (the only search before) finds nothing: too few codes survive.
    assert Identifier(library, config=IdentifyConfig(mix_verify=0)).identify_signal(clip) is None
    ident = Identifier(library)
    m = ident.identify_signal(clip)
    assert m is not None and m.path in ("/music/etr__credits1-cp.ogg", "/music/copies/credits.mp3")
    assert m.method == "partial" and abs(m.offset_s - 10.0) < 0.1 and m.speed == 1.0 and 0 < m.confidence < 1
    # Calibrated against the other tracks' best alignments, not against its own copy.
    c = ident.last_best[0] if ident.last_best else None
    assert c is not None and c.mix_gap >= ident.config.mix_min_gap and c.partial <= ident.config.mix_max_score
    assert c.mix_contrast >= ident.config.mix_min_sweep_contrast


def test_mixed_clip_of_songs_not_in_the_library_is_not_found(library) -> None:
    from pipeline.search.identify import Identifier

    ident = Identifier(library)
    clip = mix(excerpt(OTHERS[1], 20.0, 15.0), excerpt(OTHERS[2], 60.0, 15.0))
    assert ident.identify_signal(clip) is None
    # It was searched for its agreeing parts, and rejected by the learned thresholds.
    assert ident.last_best is not None and ident.last_best[0].partial is not None
    c = ident.last_best[0]
    assert c.partial > ident.config.mix_max_score or c.mix_gap < ident.config.mix_min_gap


def test_a_library_within_the_sweep_budget_is_swept_whole(library, monkeypatch) -> None:
    """Votes can miss a mixed clip's track entirely: a library of at most ``mix_tracks`` tracks
    (of the searched ones, ``live``) is swept whole; a larger one only on its voted candidates."""
    from pipeline.search.identify import Identifier, search_partial

    ident = Identifier(library)
    idx = ident.index
    swept: list[set[int]] = []
    real_prefetch = idx.prefetch

    def recorded(keys):
        keys = list(keys)
        swept.append(set(keys))
        return real_prefetch(keys)

    monkeypatch.setattr(idx, "prefetch", recorded)
    chroma = ident.chroma([mix(excerpt(OTHERS[1], 20.0, 15.0), excerpt(OTHERS[2], 60.0, 15.0))])[0]
    rate = ident.dsp.frame_rate_hz
    search_partial(idx, chroma, rate, config=ident.config)
    assert swept[0] == set(idx.tracks)
    some = sorted(idx.tracks)[:2]
    swept.clear()
    search_partial(idx, chroma, rate, config=ident.config, live=idx.mask(some))
    assert swept[0] == set(some)
    swept.clear()
    search_partial(idx, chroma, rate, config=ident.config.replace(mix_tracks=1, mix_verify=1))
    assert swept and len(swept[0]) <= 2 < len(idx.tracks)
