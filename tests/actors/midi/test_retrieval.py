"""actors.midi.retrieval: chord symbols (tempo-invariant, transposable) and the n-gram index's votes."""
from __future__ import annotations

import numpy as np

from actors.midi.align import unit_columns
from actors.midi.retrieval import CHORD_TEMPLATES, ChordIndex, chord_keys, chord_symbols


def _sequence(symbols: list[int], frames_each: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """Unit chroma frames holding each chord symbol for ``frames_each`` frames, with noise."""
    cols = [CHORD_TEMPLATES[s] for s in symbols for _ in range(frames_each)]
    x = np.stack(cols, axis=1) + noise * rng.random((12, len(cols)))
    return unit_columns(x)


def test_symbols_are_tempo_invariant_and_transpose_with_the_chroma():
    rng = np.random.default_rng(0)
    prog = [0, 10, 14, 19, 0, 18]  # C, F, G, A minor, C, A major
    slow, fast = _sequence(prog, 8, rng), _sequence(prog, 4, rng)
    assert chord_symbols(slow).tolist() == chord_symbols(fast).tolist() == prog
    # a one-frame chord between two others is dropped at min_run=2 (then the repeats merge)
    blip = np.concatenate([slow[:, :8], _sequence([6], 1, rng), slow[:, 8:]], axis=1)
    assert chord_symbols(blip, 1).tolist() == [0, 6, *prog[1:]]
    assert chord_symbols(blip, 2).tolist() == prog
    # the chroma rolled up by 3 semitones: every root moves by 3, the quality stays
    up = chord_symbols(np.roll(slow, 3, axis=0)).tolist()
    assert up == [((s // 2 + 3) % 12) * 2 + s % 2 for s in prog]
    assert chord_keys(slow, [(3, 1)])[0].size == len(prog) - 2


def test_index_votes_for_the_recording_of_the_sequence():
    """A progression played 1.6x slower with noise, among 300 random progressions over the same
    few chords: its own recording gets the most votes; one sharing no n-gram gets none."""
    rng = np.random.default_rng(1)
    common = [0, 10, 14, 19, 8, 4]  # six chords of C major: every recording uses them
    query_prog = [int(rng.choice(common)) for _ in range(40)]
    query_prog = [s for i, s in enumerate(query_prog) if i == 0 or s != query_prog[i - 1]]
    library = []
    for _ in range(300):
        p = [int(rng.choice(common)) for _ in range(40)]
        library.append(_sequence([s for i, s in enumerate(p) if i == 0 or s != p[i - 1]], 5, rng))
    library.append(_sequence(query_prog, 8, rng, noise=0.15))  # the recording: slower, noisier
    library.append(_sequence([1, 3, 5, 7], 5, rng))  # minor chords only: no key shared
    index = ChordIndex.build(library)
    votes = index.scores(_sequence(query_prog, 5, rng))
    assert int(np.argmax(votes)) == 300 and votes[300] > 1.5 * np.sort(votes)[-2]
    assert votes[301] == 0.0
    assert ChordIndex.build([]).scores(library[0]).shape == (0,)
