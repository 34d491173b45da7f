"""Train a Mamba or transformer sequence model, or LoRA-fine-tune one, on the pipeline's
Parquet outputs (MIDI tokens: next-token prediction; audio chroma+onset frames:
next-frame prediction) with Ray Train (TorchTrainer, DDP).

  chromaray train mamba --db lib.db --data midi --max-steps 300 --name m1
  chromaray train lora --base RUNS/m1/checkpoint_... --db lib.db --data midi --max-steps 100 --name m1-lora

Re-running with the same --name (and --storage) resumes from the run's latest
checkpoint. Batch size, precision, workers and model size come from the
hardware profile (laptop / workstation / cluster, picked from detected
hardware; --profile or CHROMARAY_PROFILE overrides) and per-field options.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.text import shown

__all__ = ["HELP", "OVERRIDES", "add_arguments", "run"]

HELP = "train Mamba / transformer / LoRA models on tokens or audio frames (Ray Train)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", choices=["mamba", "transformer", "lora"], help="what to train")
    parser.add_argument("--db", required=True, type=Path, help="SQLite database of a `chromaray fingerprint` run")
    parser.add_argument("--data", required=True, choices=["midi", "audio"],
                        help="midi: token sequences (dataset tokens); audio: chroma+onset frames (dataset frames)")
    parser.add_argument("--name", required=True, help="run name; the same name resumes that run")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps (default: profile)")
    parser.add_argument("--base", type=Path, default=None, help="lora: base model checkpoint directory")
    parser.add_argument("--out", type=Path, default=None,
                        help="override the Parquet folder (default: the --out of the latest "
                             "`chromaray fingerprint` run, as the database records it)")
    parser.add_argument("--storage", type=Path, default=None,
                        help="Ray Train storage path for checkpoints (default: <db dir>/train_runs)")
    parser.add_argument("--profile", default=None, help="laptop | workstation | cluster | path.yaml "
                        "(default: $CHROMARAY_PROFILE or detected)")
    parser.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS or a local Ray)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-v", "--verbose", action="store_true", help="show Ray's logs and progress bars")
    g = parser.add_argument_group("profile overrides")
    g.add_argument("--workers", type=int, default=None)
    g.add_argument("--cpus-per-worker", type=float, default=None)
    g.add_argument("--gpus-per-worker", type=float, default=None)
    g.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None)
    g.add_argument("--batch-size", type=int, default=None, help="per worker")
    g.add_argument("--seq-len", type=int, default=None)
    g.add_argument("--d-model", type=int, default=None)
    g.add_argument("--layers", dest="n_layers", type=int, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--checkpoint-every", type=int, default=None)
    g.add_argument("--lora-r", type=int, default=None)
    g.add_argument("--json", action="store_true", help="print the run summary as JSON")


#: Options that override the profile field of the same name (None: keep the profile's).
OVERRIDES = ("workers", "cpus_per_worker", "gpus_per_worker", "precision", "batch_size", "seq_len", "d_model",
             "n_layers", "lr", "checkpoint_every", "lora_r")


def run(args: argparse.Namespace) -> int:
    from pipeline.runtime import ray_session
    from pipeline.train.driver import TrainRequest, check_request, run_training
    from pipeline.train.profiles import select_profile

    check_request(args.model, args.data, args.name, base=args.base, max_steps=args.max_steps)  # before Ray starts
    with ray_session(args.address, verbose=args.verbose) as info:
        prof = select_profile(args.profile, cluster_gpus=info.gpus, overrides={k: getattr(args, k) for k in OVERRIDES})
        print(f"profile: {shown(prof.name)} ({shown(prof.source)}); workers={prof.workers} "
              f"batch/worker={prof.batch_size} "
              f"precision={prof.precision} seq_len={prof.seq_len}")
        req = TrainRequest(arch=args.model, data=args.data, db=args.db, name=args.name, profile=prof,
                           max_steps=args.max_steps, out=args.out, storage=args.storage, base=args.base,
                           seed=args.seed, ray_dashboard_url=info.dashboard_url)
        outcome = run_training(req)
    s = outcome.summary
    if args.json:
        print(json.dumps({"run_id": outcome.run_id, **s}, indent=1, default=str))
    else:
        ev = (f"perplexity {s['eval_perplexity']:.3f}" if "eval_perplexity" in s
              else f"frame MSE {s['eval_frame_mse']:.4f}" if "eval_frame_mse" in s else "no held-out data")
        print(f"run {shown(args.name)} ({outcome.run_id}): {s['steps']} steps, "
              f"loss {s.get('loss_first', float('nan')):.4f}"
              f" -> {s.get('loss_last10', float('nan')):.4f}, held-out {ev}, baseline {s['baseline']}")
        print(f"time: {s['wall_s']:.1f} s (fit {s['fit_s']:.1f} s)")
    print(f"checkpoint: {shown(outcome.checkpoint)}")
    if outcome.export:
        print(f"merged model: {shown(outcome.export)}")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("train")
