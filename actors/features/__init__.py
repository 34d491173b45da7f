"""The feature chain (STFT -> HPSS -> chroma, onset, tempo) that calls the
:mod:`actors.dsp` kernels, and the memory planner that sizes its batches."""
from actors.features.batching import PeakMemory, PlannedBatch, budget_bytes, is_oom, plan_batches
from actors.features.chain import FeatureExtractor, SpanMel, TrackFeatures, TrackSpan, span_window, track_frames

__all__ = ["FeatureExtractor", "PeakMemory", "PlannedBatch", "SpanMel", "TrackFeatures", "TrackSpan", "budget_bytes",
           "is_oom", "plan_batches", "span_window", "track_frames"]
