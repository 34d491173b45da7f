"""Training inside Ray Train workers: the sequence models (:mod:`actors.train.models`),
the loop's typed config (:mod:`actors.train.config`) and the per-worker loop
(:mod:`actors.train.loop`, the only module under actors/ that imports Ray)."""
