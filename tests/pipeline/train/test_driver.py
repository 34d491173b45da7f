"""Ray Train end to end on small generated Parquet data (2 CPU workers, DDP), with data
that has learnable structure (:mod:`tests.pipeline.train.library`)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from actors.train.config import FaultInjection
from pipeline.store import Run, TrainMetric, open_db
from pipeline.synth.sequences import VOCAB
from pipeline.train.driver import TrainRequest, run_training
from pipeline.train.profiles import load_profile
from tests.pipeline.train.library import FRAME_RATE_HZ, make_library

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    return make_library(tmp_path_factory.mktemp("lib"))


def tiny_profile(**kw):
    return load_profile("laptop").replace(**{
        "workers": 2, "batch_size": 8, "seq_len": 64, "d_model": 32, "n_layers": 2,
        "checkpoint_every": 10, "log_every": 5, "lr": 5e-3, "eval_fraction": 0.2, **kw})


def _metrics(db: Path, run_id: str, split: str = "train") -> list[TrainMetric]:
    eng = open_db(db, readonly=True)
    with Session(eng) as s:
        rows = list(s.scalars(select(TrainMetric).where(TrainMetric.run_id == run_id, TrainMetric.split == split)
                              .order_by(TrainMetric.step)))
    eng.dispose()
    return rows


def _run(db: Path, run_id: str) -> Run:
    eng = open_db(db, readonly=True)
    with Session(eng) as s:
        run = s.get(Run, run_id)
        s.expunge(run)
    eng.dispose()
    return run


@pytest.fixture(scope="module")
def mamba_run(ray_local, library, tmp_path_factory):
    """Mamba on tokens, 30 steps, checkpoints every 10; rank 1 exits hard once at step 15."""
    tmp = tmp_path_factory.mktemp("mamba")
    marker = tmp / "killed.txt"
    t0 = time.perf_counter()
    out = run_training(TrainRequest(arch="mamba", data="midi", db=library, name="m-tok", profile=tiny_profile(),
                                    max_steps=30, storage=tmp / "runs",
                                    fault=FaultInjection(step=15, rank=1, marker=str(marker))))
    return out, marker, tmp / "runs", time.perf_counter() - t0


def test_mamba_tokens_learns_and_resumes_after_worker_kill(mamba_run, library):
    """Loss falls far below the unigram baseline; the worker killed at step 15 is replaced
    and training resumes from the step-10 checkpoint; metrics and summary land in SQLite."""
    out, marker, _, elapsed = mamba_run
    s = out.summary
    print(f"\nmamba/tokens: loss {s['loss_first']:.3f} -> {s['loss_last10']:.3f}, eval ppl {s['eval_perplexity']:.2f}"
          f" (eval CE {s['eval_loss']:.3f}), unigram CE {s['baseline']['unigram_ce_eval']:.3f}, "
          f"uniform {s['baseline']['uniform_ce']:.3f}; {elapsed:.1f} s (data {s['data_prep_s']} s, fit {s['fit_s']} s)")
    assert marker.exists(), "the fault hook did not fire"
    assert s["resumed_from_step"] == 10  # from the checkpoint, not from 0
    assert s["steps"] == 30
    base = s["baseline"]["unigram_ce_eval"]
    assert s["loss_first"] > base - 0.3  # starts near the trivial baseline
    assert s["eval_loss"] < base - 1.0, s  # entropy rate ~1.0 nat vs unigram ~3.1
    assert s["loss_last10"] < base - 1.0
    rows = _metrics(library, out.run_id)
    assert [r.step for r in rows] == list(range(1, 31))
    assert all(math.isfinite(r.loss) and r.lr > 0 and r.items_per_s > 0 for r in rows)
    assert _metrics(library, out.run_id, "eval")[0].loss == pytest.approx(s["eval_loss"])
    run = _run(library, out.run_id)
    assert run.kind == "train" and run.status == "finished" and run.summary["eval_loss"] == s["eval_loss"]
    assert run.n_done == 30
    assert Path(out.checkpoint, "model.pt").exists() and Path(out.checkpoint, "spec.json").exists()


def test_same_run_name_resumes_instead_of_restarting(mamba_run, library):
    out, _, storage, _ = mamba_run
    out2 = run_training(TrainRequest(arch="mamba", data="midi", db=library, name="m-tok", profile=tiny_profile(),
                                     max_steps=35, storage=storage))
    assert out2.run_id == out.run_id  # same runs row
    assert out2.summary["resumed_from_step"] == 30 and out2.summary["steps"] == 35
    assert [r.step for r in _metrics(library, out.run_id)] == list(range(1, 36))


def test_lora_trains_adapters_only_and_exports_merged_model(mamba_run, tmp_path):
    """LoRA on data from a different Markov chain: loss falls, only adapters are saved,
    the merged export reproduces the adapter model's outputs and loads as a plain model."""
    import torch

    from actors.train.models import load_model
    from actors.train.models.lora import load_adapter

    base_ckpt = Path(mamba_run[0].checkpoint)
    lib2 = make_library(tmp_path / "lib2", seed=1)  # other transition table
    out = run_training(TrainRequest(arch="lora", data="midi", db=lib2, name="m-lora", base=base_ckpt,
                                    profile=tiny_profile(lr=1e-2), max_steps=30, storage=tmp_path / "runs"))
    s = out.summary
    print(f"\nlora/tokens: loss {s['loss_first']:.3f} -> {s['loss_last10']:.3f}, eval CE {s['eval_loss']:.3f}, "
          f"unigram CE {s['baseline']['unigram_ce_eval']:.3f}; merge diff {s['merge_max_abs_diff']:.2e}; "
          f"{s['wall_s']} s")
    assert s["loss_last10"] < s["loss_first"] - 0.5
    ckpt = Path(out.checkpoint)
    assert not (ckpt / "model.pt").exists()  # adapters only
    assert (ckpt / "adapter" / "adapter_config.json").exists()
    adapter = load_adapter(load_model(base_ckpt), ckpt / "adapter")
    from safetensors.torch import load_file

    saved = load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))
    assert saved and all("lora_" in k for k in saved)
    assert not any("dt_proj" in k for k in saved)
    assert s["merge_max_abs_diff"] < 1e-4
    merged = load_model(out.export).eval()
    adapter.eval()
    x = torch.randint(0, VOCAB, (2, 64))
    with torch.no_grad():
        torch.testing.assert_close(merged(x), adapter(x), rtol=1e-4, atol=1e-4)


def test_transformer_frames_beats_mean_frame_baseline(ray_local, library, tmp_path):
    t0 = time.perf_counter()
    # Checkpoints (and their barrier) every 40 steps: this test is about learning, the mamba run
    # above is the one about checkpoints and resuming.
    out = run_training(TrainRequest(arch="transformer", data="audio", db=library, name="t-frames",
                                    profile=tiny_profile(checkpoint_every=40), max_steps=80,
                                    storage=tmp_path / "runs"))
    s = out.summary
    b = s["baseline"]
    print(f"\ntransformer/frames: loss {s['loss_first']:.4f} -> {s['loss_last10']:.4f}, eval frame MSE "
          f"{s['eval_frame_mse']:.4f}, mean-frame MSE {b['mean_frame_mse_eval']:.4f}, copy-last MSE "
          f"{b['copy_last_mse_eval']:.4f}; {time.perf_counter() - t0:.1f} s (fit {s['fit_s']} s)")
    assert s["eval_frame_mse"] < 0.5 * b["mean_frame_mse_eval"], s
    assert s["loss_last10"] < 0.5 * b["mean_frame_mse_train"]
    assert s["loss_first"] > 0.8 * b["mean_frame_mse_train"]
    # The rate the frames were analysed at travels with the run; 12 tracks x (699 // 64) windows.
    assert s["frame_rate_hz"] == FRAME_RATE_HZ and s["n_train_windows"] + s["n_eval_windows"] == 12 * 10
    assert _run(library, out.run_id).config["frame_rate_hz"] == FRAME_RATE_HZ


def test_train_cli_end_to_end(ray_local, library, tmp_path, capsys):
    """`chromaray train` through the CLI: profile overrides reach the loop, the job joins the
    running Ray and leaves it up, the JSON summary is what the driver recorded."""
    from jobs.cli import main

    rc = main(["train", "transformer", "--db", str(library), "--data", "midi", "--name", "cli-tiny",
               "--storage", str(tmp_path / "runs"), "--profile", "laptop", "--max-steps", "6", "--workers", "2",
               "--batch-size", "4", "--seq-len", "32", "--d-model", "16", "--layers", "1",
               "--checkpoint-every", "3", "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith("profile: laptop (cli); workers=2 batch/worker=4 precision=fp32 seq_len=32\n")
    summary = json.loads(out[out.index("{"):out.rindex("}") + 1])
    assert (summary["steps"], summary["workers"], summary["batch_size"], summary["seq_len"]) == (6, 2, 4, 32)
    assert ray_local.is_initialized()
    run = _run(library, summary["run_id"])
    assert run.status == "finished" and run.config["profile"]["d_model"] == 16
    assert run.config["model"]["n_layers"] == 1 and run.config["profile"]["checkpoint_every"] == 3
    assert [r.step for r in _metrics(library, summary["run_id"])] == list(range(1, 7))
    assert len(list((tmp_path / "runs" / "cli-tiny").glob("checkpoint_*/model.pt"))) == 2  # steps 3 and 6
