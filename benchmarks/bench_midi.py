"""Benchmark of `chromaray match-midi`: accepted top-1, wrong accepts and misses per set, and scale.

Data: the real MIDI files of ../shared/data/midi (music21 corpus). Each file is assigned by a
hash of its name to the **train** or **test** split (about half each) and, for one in five, to
the **negatives** (no recording of it is put in any library). Sets:

- ``sine``: pretty_midi additive synthesis (pipeline.synth.midi.render), tempo x0.9-1.1 with
  +-3 % wobble, white noise at 10 dB SNR;
- ``fluidsynth``: FluidSynth + FluidR3_GM.sf2 (pipeline.synth.render), tempo x0.9-1.1 (tempo
  map rewritten), white noise at 10 dB SNR;
- ``negatives``: the negative MIDI files matched against the fluidsynth library.

Each set's library is stored as `chromaray fingerprint` stores it (the pipeline's feature chain
and result sink: SQLite + Parquet), then ``pipeline.midi_match.match_midi`` runs on it. Reported:
per split, accepted top-1 (the best accepted recording is the MIDI file's own rendering), wrong
accepts (a wrong recording accepted first, or anything accepted for a negative), misses (nothing
accepted). Acceptance is evaluated twice: with the shipped MatchConfig, and with the acceptance
threshold re-learned on the train split only (the lowest threshold with no wrong accept there),
applied to the test split.

The scale part (``--scale 1000 10000``) times match_midi on generated libraries of that many
recordings (synthetic chroma sequences with the statistics of the real ones, plus the real
renderings) and projects 1e5.

    .venv/bin/python benchmarks/bench_midi.py --json-out benchmarks/out/bench_midi.json

Renderings and their features are cached under ``--cache`` (benchmarks/out/midi_cache).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
SR = 22050


def split_of(name: str) -> tuple[str, bool]:
    """(train|test, is_negative) from a hash of the file name (stable across runs)."""
    h = int(hashlib.blake2b(name.encode(), digest_size=8).hexdigest(), 16)
    return ("train" if h % 2 == 0 else "test"), (h // 2) % 5 == 0


def tempo_of(name: str, kind: str) -> float:
    rng = np.random.default_rng(int(hashlib.blake2b(f"{kind}:{name}".encode(), digest_size=4).hexdigest(), 16))
    return float(rng.uniform(0.9, 1.1))


def render_features(name: str, data: bytes, kind: str, cache: Path, dsp: Any, extractor: Any) -> Any | None:
    """Features of the ``kind`` rendering of one MIDI file (cached), None when it cannot be rendered."""
    from pipeline.synth.midi import render
    from pipeline.synth.render import render_fluidsynth

    f = tempo_of(name, kind)
    key = hashlib.blake2b(f"{kind}|{name}|{f:.6f}|10dB|{dsp.version()}".encode(), digest_size=10).hexdigest()
    path = cache / f"{kind}-{key}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    seed = int(key[:6], 16)
    try:
        if kind == "sine":
            y = render(data, tempo_factor=f, warp=0.03, noise_snr_db=10.0, seed=seed)
        else:
            y = render_fluidsynth(data, tempo_factor=f, noise_snr_db=10.0, seed=seed)
    except Exception as exc:  # a file a renderer cannot play has no recording in that set
        print(f"  {kind}: {name}: not rendered ({type(exc).__name__}: {str(exc)[:80]})", file=sys.stderr)
        path.write_bytes(pickle.dumps(None))
        return None
    feat = extractor([y])[0]
    path.write_bytes(pickle.dumps(feat))
    return feat


def build_library(root: Path, midis: dict[str, bytes], audio: dict[str, Any], dsp: Any) -> tuple[Any, Path, dict]:
    """Store MIDI analyses and audio features through the fingerprint job's result sink."""
    from actors.midi.analysis import analyze_midi
    from actors.stages import empty_row, to_table, track_result
    from pipeline.config import ChromarayConfig
    from pipeline.ingest.plan import versions_for
    from pipeline.ingest.sink import ResultSink
    from pipeline.store import open_db
    from pipeline.synth import synthetic_hash

    engine = open_db(root / "bench.db")
    out = root / "out"
    cfg = ChromarayConfig(dsp=dsp)
    rows, names = [], {}
    for name, data in midis.items():
        p = f"/bench/midi/{name}"
        h = synthetic_hash(p)
        names[h] = name
        a = analyze_midi(data, frame_rate_hz=dsp.frame_rate_hz)
        rows.append(empty_row(content_hash=h, path=p, kind="midi", size_bytes=len(data),
                              meta=json.dumps({"format": "MIDI", "duration_s": a.duration_s}),
                              payload=pickle.dumps(a, protocol=5)))
    for name, feat in audio.items():
        p = f"/bench/audio/{name}.flac"
        h = synthetic_hash(p)
        names[h] = name
        rows.append(empty_row(content_hash=h, path=p, meta=json.dumps({"format": "FLAC"}),
                              payload=pickle.dumps(track_result(feat, dsp))))
    sink = ResultSink(engine, out, "bench", dsp=dsp, versions=versions_for(cfg), paths_by_hash={},
                      rows_per_part=len(rows) + 1)
    sink.add(to_table(rows))
    sink.flush()
    return engine, out, names


def tally(items: list[dict], accept: Any) -> dict[str, Any]:
    """accepted top-1 / wrong accepts / misses / correct negatives of per-MIDI results."""
    t: dict[str, Any] = {"n": 0, "accepted_top1": 0, "wrong_accepts": 0, "misses": 0, "wrong": []}
    for it in items:
        t["n"] += 1
        acc = [c for c in it["candidates"] if accept(c)]
        if not acc:
            t["misses"] += 0 if it["truth"] is None else 1
            continue
        if it["truth"] is not None and acc[0]["name"] == it["truth"]:
            t["accepted_top1"] += 1
        else:
            t["wrong_accepts"] += 1
            t["wrong"].append({"midi": it["midi"], **acc[0]})
    return t


def run_set(label: str, midis: dict[str, bytes], audio: dict[str, Any], truth: dict[str, str | None], dsp: Any,
            config: Any) -> list[dict]:
    from pipeline.midi_match import match_midi

    with tempfile.TemporaryDirectory(prefix=f"bench-midi-{label}-") as tmp:
        engine, out, names = build_library(Path(tmp), midis, audio, dsp)
        t0 = time.perf_counter()
        results = match_midi(engine, out, config=config, store=False)
        wall = time.perf_counter() - t0
        engine.dispose()
    items = []
    for r in results:
        name = names[r.midi_hash]
        if hasattr(r, "candidates"):
            cands = [{"name": names[c.audio_hash], "score": float(c.score),
                      "gap": None if c.gap is None else float(c.gap), "shift": int(c.shift)}
                     for c in r.candidates]
        else:  # the matcher before calibration (no transposition gap)
            cands = [{"name": names[ah], "score": float(al.score), "gap": None, "shift": 0} for ah, al in r.alignments]
        items.append({"midi": name, "truth": truth[name], "split": split_of(name)[0], "candidates": cands,
                      "seconds": r.seconds})
    print(f"  {label}: {len(items)} MIDI files x {len(audio)} recordings, match_midi {wall:.1f} s", file=sys.stderr)
    return items


def accept_rule(min_score: float, min_gap: float | None) -> Any:
    """Acceptance of a candidate: score >= min_score and, when the matcher verifies pairs
    (candidates carry a gap), a transposition gap >= min_gap."""
    def accept(c: dict) -> bool:
        if c["score"] < min_score:
            return False
        if min_gap is None:
            return True
        return c["gap"] is not None and c["gap"] >= min_gap
    return accept


def learn_gap(evidence: list[dict], min_score: float) -> dict[str, Any]:
    """``min_gap`` learned from train-split verified candidates (``midi``, ``true``, score, gap)
    of every set and library size of the run, judged as the benchmark judges: per MIDI file the
    best-scoring accepted candidate is a hit when true, a wrong accept when not. The lowest gap
    with no wrong accept, raised to the midpoint between the gap that blocks the last wrong
    accept and the lowest gap of a hit above it."""
    by_midi: dict[str, list[dict]] = {}
    for e in evidence:
        if e["gap"] is not None and e["score"] >= min_score:
            by_midi.setdefault(e["midi"], []).append(e)
    for v in by_midi.values():
        v.sort(key=lambda e: -e["score"])

    def firsts(g: float) -> list[dict]:
        return [next(e for e in v if e["gap"] >= g) for v in by_midi.values() if any(e["gap"] >= g for e in v)]

    wrong_gaps = sorted({e["gap"] for v in by_midi.values() for e in v if not e["true"]})
    g = next((w + 1e-6 for w in [-2.0, *wrong_gaps]
              if not any(not e["true"] for e in firsts(w + 1e-6))), 2.0)
    blocking = max((w for w in wrong_gaps if w < g), default=g)
    hits = [e["gap"] for e in firsts(g) if e["true"]]
    chosen = round((blocking + min(hits)) / 2, 3) if hits else g
    final = firsts(chosen)
    return {"min_gap": chosen, "blocking_wrong_gap": blocking, "lowest_hit_gap": min(hits, default=None),
            "hits": sum(e["true"] for e in final), "wrong": sum(not e["true"] for e in final),
            "midi_with_true": sum(1 for v in by_midi.values() if any(e["true"] for e in v)),
            "midi_files": len(by_midi)}


def learn(train: list[dict], has_gap: bool) -> tuple[float, float | None]:
    """(min_score, min_gap) with no wrong accept on ``train`` and the most accepted top-1 (ties:
    the largest margin to the nearest wrong candidate, then the lowest thresholds)."""
    scores = sorted({round(c["score"], 3) for it in train for c in it["candidates"][:3]})
    gaps = sorted({round(c["gap"], 3) for it in train for c in it["candidates"][:3] if c["gap"] is not None})
    grid_s = [s + 1e-4 for s in [0.0, *scores]]
    grid_g = [g + 1e-4 for g in [0.0, *gaps]] if has_gap else [None]
    best: tuple | None = None
    for g in grid_g:
        for t in grid_s:
            r = tally(train, accept_rule(t, g))
            if r["wrong_accepts"]:
                continue
            key = (r["accepted_top1"], -t - (g or 0.0))
            if best is None or key > best[0]:
                best = (key, t, g)
    if best is None:
        return 1.0, (2.0 if has_gap else None)
    return best[1], best[2]


def distractors(pool: list[np.ndarray], n: int, rng: np.random.Generator, lengths: list[int]) -> list[np.ndarray]:
    """``n`` generated CENS sequences: segments of 4-12 s (at ~5 Hz) of random real renderings,
    each randomly transposed, joined up to a length drawn from the real ones. Chroma
    statistics of real music, but no piece of the benchmark's."""
    out = []
    for _ in range(n):
        target = int(rng.choice(lengths))
        segs, total = [], 0
        while total < target:
            src = pool[int(rng.integers(len(pool)))]
            seg_len = int(rng.integers(20, 61))
            if src.shape[1] <= seg_len:
                continue
            s0 = int(rng.integers(src.shape[1] - seg_len))
            segs.append(np.roll(src[:, s0:s0 + seg_len], int(rng.integers(12)), axis=0))
            total += seg_len
        out.append(np.concatenate(segs, axis=1)[:, :target])
    return out


def run_scale(sizes: list[int], midis: dict[str, bytes], cache: Path, dsp: Any, config: Any,
              split: str = "test") -> list[dict]:
    """Time match_one per MIDI file (one core, in-process) against libraries of ``sizes``
    recordings: the ``split``'s fluidsynth renderings plus generated distractors made of the
    other split's renderings. The split's negative MIDI files (no recording in the library) are
    matched too: anything accepted for one is a wrong accept. The library's retrieval index is
    built once per size (timed apart: it is built once per match-midi call, not per MIDI file)."""
    import importlib

    from actors.midi.align import cens, profile
    from actors.midi.analysis import analyze_midi
    from pipeline.midi_match import _Seq, match_one, midi_features

    # None for the matcher before the chord index (the before figures run this file on it)
    library_index = getattr(importlib.import_module("pipeline.midi_match"), "library_index", None)
    retrieve = getattr(importlib.import_module("pipeline.midi_match"), "retrieve", None)
    other = "train" if split == "test" else "test"
    real: dict[str, np.ndarray] = {}
    pool: list[np.ndarray] = []
    for kind in ("fluidsynth", "sine"):
        for name, data in midis.items():
            sp, neg = split_of(name)
            if neg:
                continue
            feat = render_features(name, data, kind, cache, dsp, None)
            if feat is None:
                continue
            f, _rate = cens(feat.chroma, frame_rate_hz=feat.frame_rate_hz)
            if kind == "fluidsynth" and sp == split:
                real[name] = f
            elif sp == other:
                pool.append(f)  # distractor material from the other split only
    queries, negatives = {}, {}
    for name, data in midis.items():
        sp, neg = split_of(name)
        if sp != split or (name not in real and not neg):
            continue
        a = analyze_midi(data, frame_rate_hz=dsp.frame_rate_hz)
        if a.notes is None:
            continue
        f, rate = midi_features(a.notes, frame_rate_hz=dsp.frame_rate_hz, n_frames=a.n_frames)
        (negatives if neg else queries)[name] = _Seq(name, "midi", f, rate, profile(f))
    rng = np.random.default_rng(0)
    lengths = [f.shape[1] for f in pool]
    base = {f"real:{n}": _Seq(f"real:{n}", "audio", f, 5.0, profile(f)) for n, f in real.items()}
    gen: list[np.ndarray] = []
    rows = []
    for size in sorted(sizes):
        gen += distractors(pool, max(0, size - len(base) - len(gen)), rng, lengths)
        lib = dict(base)
        lib.update({f"gen:{i}": _Seq(f"gen:{i}", "audio", f, 5.0, profile(f)) for i, f in enumerate(gen)})
        t0 = time.perf_counter()
        index = library_index(lib) if library_index is not None else None
        build_s = time.perf_counter() - t0
        extra = (index,) if index is not None else ()
        times, cpus, rcpus, top1, wrong, in_cands, neg_wrong = [], [], [], 0, 0, 0, []
        evidence: list[dict] = []
        match_one(next(iter(queries.values())), lib, config, *extra)  # compile / warm caches
        for name, q in [*queries.items(), *negatives.items()]:
            t0, c0 = time.perf_counter(), time.process_time()
            cands, _n = match_one(q, lib, config, *extra)
            cpu = time.process_time() - c0
            if index is not None:  # the retrieval alone (what grows with the library)
                r0 = time.process_time()
                retrieve(q, index, config)
                rcpus.append(time.process_time() - r0)
            evidence += [{"midi": name, "true": c.audio_hash == f"real:{name}", "score": float(c.score),
                          "gap": float(c.gap)} for c in cands if c.gap is not None]
            acc = [c for c in cands if c.accepted]
            if name in negatives:
                if acc:
                    neg_wrong.append(f"{name} -> {acc[0].audio_hash} score {acc[0].score:.3f} gap {acc[0].gap:.3f}")
                continue
            times.append(time.perf_counter() - t0)
            cpus.append(cpu)
            in_cands += any(c.audio_hash == f"real:{name}" for c in cands)
            if acc:
                top1 += acc[0].audio_hash == f"real:{name}"
                wrong += acc[0].audio_hash != f"real:{name}"
        row = {"recordings": len(lib), "split": split, "midi_files": len(queries),
               "s_per_midi_mean": float(np.mean(times)),
               "s_per_midi_p90": float(np.percentile(times, 90)), "cpu_s_per_midi_mean": float(np.mean(cpus)),
               "retrieval_cpu_s_mean": float(np.mean(rcpus)) if rcpus else None,
               "accepted_top1": top1, "wrong_accepts": wrong,
               "true_in_candidates": in_cands, "index_build_s": build_s,
               "index_mb": (index.chords.nbytes / 2**20) if index is not None else 0.0,
               "negatives": len(negatives), "negatives_wrong": len(neg_wrong), "negatives_wrong_list": neg_wrong,
               "evidence": evidence}
        print(f"  scale {len(lib):>6} recordings ({split}): {row['s_per_midi_mean'] * 1e3:7.1f} ms/MIDI, CPU "
              f"{row['cpu_s_per_midi_mean'] * 1e3:.1f} ms (p90 "
              f"{row['s_per_midi_p90'] * 1e3:.1f}), accepted top-1 {top1}/{len(queries)}, wrong {wrong}, "
              f"true among aligned candidates {in_cands}, negatives wrong {len(neg_wrong)}/{len(negatives)}, "
              f"index build {build_s:.1f} s", file=sys.stderr)
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--midi-dir", default=str(REPO.parent / "shared" / "data" / "midi"))
    ap.add_argument("--cache", default=str(REPO / "benchmarks" / "out" / "midi_cache"))
    ap.add_argument("--limit", type=int, default=0, help="use only the first N MIDI files (0: all)")
    ap.add_argument("--sets", default="sine,fluidsynth", help="comma-separated; 'none' for the scale part only")
    ap.add_argument("--json-out", default="")
    ap.add_argument("--workers", type=int, default=0, help="MatchConfig.workers for the matching (0: no Ray)")
    ap.add_argument("--scale", type=int, nargs="*", default=[], help="library sizes for the timing part")
    ap.add_argument("--no-cross", dest="cross", action="store_false",
                    help="leave out the negatives-cross set (each split's MIDI files against the other "
                         "split's fluidsynth renderings)")
    ap.add_argument("--scale-split", default="test", choices=("train", "test"),
                    help="split whose MIDI files and renderings the scale part uses (train: for tuning)")
    ap.add_argument("--render-only", action="store_true", help="fill the rendering cache and stop")
    args = ap.parse_args()

    from actors.config import BatchConfig, DSPConfig
    from actors.features import FeatureExtractor
    from pipeline.config import MatchConfig

    dsp = DSPConfig()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    files = sorted(Path(args.midi_dir).glob("*.mid"))
    if args.limit:
        files = files[: args.limit]
    if not files:
        print(f"no MIDI files under {args.midi_dir}", file=sys.stderr)
        return 2
    midis = {f.stem: f.read_bytes() for f in files}
    extractor = FeatureExtractor(dsp, BatchConfig(device="cpu"))
    shipped = MatchConfig()
    # Collect every candidate the matcher aligns: acceptance is evaluated here.
    probe = shipped.replace(min_score=1e-6, top_k=8)
    if hasattr(shipped, "min_gap"):
        probe = probe.replace(min_gap=0.0, workers=args.workers)
    report: dict[str, Any] = {"n_midi": len(midis), "config": shipped.to_dict(), "sets": {}}
    all_items: dict[str, list[dict]] = {}
    for kind in [k for k in args.sets.split(",") if k and k != "none"]:
        t0 = time.perf_counter()
        audio, truth = {}, {}
        for name, data in midis.items():
            _split, neg = split_of(name)
            truth[name] = None
            if neg:
                continue
            feat = render_features(name, data, kind, cache, dsp, extractor)
            if feat is not None:
                audio[f"{name}__{kind}"] = feat
                truth[name] = f"{name}__{kind}"
        print(f"{kind}: {len(audio)} renderings ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        if args.render_only:
            continue
        items = run_set(kind, midis, audio, truth, dsp, probe)
        all_items[kind] = items
        if kind == "fluidsynth" and args.cross:
            # More MIDI files without their recording: each split's MIDI files against a library
            # of the other split's renderings only (every accept is wrong).
            cross: list[dict] = []
            for lib_split in ("train", "test"):
                sub = {a: f for a, f in audio.items() if split_of(a.rsplit("__", 1)[0])[0] == lib_split}
                qs = {n: d for n, d in midis.items() if split_of(n)[0] != lib_split}
                cross += run_set(f"cross-{lib_split}", qs, sub, dict.fromkeys(qs), dsp, probe)
            all_items["cross"] = cross
    if args.render_only:
        return 0
    table = []
    evidence: list[dict] = []  # train-split verified candidates, for learn_gap
    for kind, items in all_items.items():
        pos = [it for it in items if it["truth"] is not None]
        neg = [it for it in items if it["truth"] is None]
        sets = {kind: pos} if kind != "cross" else {"negatives-cross": neg}
        if kind == "fluidsynth" or len(all_items) == 1:
            sets["negatives"] = neg
        has_gap = any(c["gap"] is not None for it in items for c in it["candidates"])
        train = [it for it in items if it["split"] == "train"]
        t_learned, g_learned = learn(train, has_gap)
        report["sets"].setdefault(kind, {}).update(learned_min_score=t_learned, learned_min_gap=g_learned)
        shipped_rule = accept_rule(shipped.min_score, getattr(shipped, "min_gap", None) if has_gap else None)
        if kind != "cross":  # its train MIDI files met test-split recordings: not for learning
            evidence += [{"midi": f"{kind}:{it['midi']}", "true": c["name"] == it["truth"], **c} for it in train
                         for c in it["candidates"] if c["gap"] is not None]
        learned_rule = accept_rule(t_learned, g_learned)
        for set_name, its in sets.items():
            for split in ("train", "test"):
                sel = [it for it in its if it["split"] == split]
                true_c = [c for it in sel for c in it["candidates"] if c["name"] == it["truth"]]
                wrong_c = [next((c for c in it["candidates"] if c["name"] != it["truth"]), None) for it in sel]
                row = {"set": set_name, "split": split,
                       "shipped": tally(sel, shipped_rule), "learned": tally(sel, learned_rule),
                       "rank1": sum(1 for it in sel if it["truth"] is not None and it["candidates"]
                                    and it["candidates"][0]["name"] == it["truth"]),
                       "true_scores": sorted(round(c["score"], 3) for c in true_c),
                       "true_gaps": sorted(round(c["gap"], 3) for c in true_c if c["gap"] is not None),
                       "best_wrong": sorted(round(c["score"], 3) for c in wrong_c if c is not None),
                       "seconds_per_midi": float(np.mean([it["seconds"] for it in sel])) if sel else 0.0}
                table.append(row)
    report["table"] = table
    if args.scale:
        report["scale"] = run_scale(args.scale, midis, cache, dsp, shipped.replace(workers=0), args.scale_split)
        if args.scale_split == "train":
            evidence += [e for r in report["scale"] for e in r["evidence"]]
        sizes = [r["recordings"] for r in report["scale"]]
        secs = [r["s_per_midi_mean"] for r in report["scale"]]
        last = report["scale"][-1]
        if last.get("retrieval_cpu_s_mean") is not None:
            # DTW work per MIDI file is fixed by max_candidates; the retrieval (posting lists,
            # one bincount over the library) grows linearly: scale it from the largest size
            r = last["retrieval_cpu_s_mean"]
            report["scale_projection_1e5_cpu_s_per_midi"] = float(
                last["cpu_s_per_midi_mean"] - r + r * 1e5 / last["recordings"])
            report["scale_projection_1e5_index_mb"] = float(last["index_mb"] * 1e5 / last["recordings"])
        if len(sizes) >= 2:
            # the DTW budget per MIDI file is fixed; what grows with the library is the
            # retrieval (profiles: linear): extrapolate the measured growth linearly
            slope = max(0.0, (secs[-1] - secs[0]) / (sizes[-1] - sizes[0]))
            report["scale_projection_1e5_s_per_midi"] = float(secs[-1] + slope * (1e5 - sizes[-1]))
    if evidence and hasattr(shipped, "min_gap"):
        report["learned_gap"] = learn_gap(evidence, shipped.min_score)
    report["train_evidence"] = evidence
    for r in report.get("scale", []):
        r.pop("evidence", None)
    print("\nset         split  n    rank1  | shipped: top1 wrong miss | learned(train): top1 wrong miss")
    for r in table:
        s, lrn = r["shipped"], r["learned"]
        print(f"{r['set']:<11} {r['split']:<6} {s['n']:<4} {r['rank1']:<6} | {s['accepted_top1']:>13} "
              f"{s['wrong_accepts']:>5} {s['misses']:>4} | {lrn['accepted_top1']:>20} {lrn['wrong_accepts']:>5} "
              f"{lrn['misses']:>4}")
    for kind, v in report["sets"].items():
        g = v["learned_min_gap"]
        print(f"learned on the train split ({kind}): min_score {v['learned_min_score']:.3f}"
              + (f", min_gap {g:.3f}" if g is not None else ""))
    print(f"shipped: min_score {shipped.min_score}" + (f", min_gap {shipped.min_gap}" if hasattr(shipped, "min_gap")
                                                       else ""))
    if "learned_gap" in report:
        print(f"learned on the train split (every train MIDI file of this run): {report['learned_gap']}")
    for r in report.get("scale", []):
        print(f"scale: {r['recordings']} recordings: {r['s_per_midi_mean']:.3f} s per MIDI file (one core; CPU "
              f"{r['cpu_s_per_midi_mean']:.3f} s, retrieval {r.get('retrieval_cpu_s_mean') or 0:.4f} s), "
              f"accepted top-1 {r['accepted_top1']}/{r['midi_files']}, wrong accepts {r['wrong_accepts']}")
    if "scale_projection_1e5_cpu_s_per_midi" in report:
        print(f"scale: 100000 recordings (retrieval scaled linearly): "
              f"{report['scale_projection_1e5_cpu_s_per_midi']:.3f} CPU s per MIDI file, index "
              f"{report['scale_projection_1e5_index_mb']:.0f} MB")
    if "scale_projection_1e5_s_per_midi" in report:
        print(f"scale: 100000 recordings (linear projection): "
              f"{report['scale_projection_1e5_s_per_midi']:.3f} s per MIDI file")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=1))
    for r in table:
        for w in r["shipped"]["wrong"]:
            print(f"wrong accept (shipped) {r['set']}/{r['split']}: {w['midi']} -> {w['name']} score {w['score']:.3f}"
                  f" gap {w['gap']}")
    print(json.dumps({"table": [{k: v for k, v in r.items() if k not in ("true_scores", "true_gaps", "best_wrong")}
                                for r in table]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
