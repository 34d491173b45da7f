"""Ray Train per-worker loop (TorchTrainer + DDP) for chromaray sequence models.

The driver (``pipeline.train.driver``) builds the datasets and the
:class:`~actors.train.config.LoopConfig`, passed as ``train_loop_config={"loop": cfg}``
(Ray Train hands the loop a dict); this function runs in every training worker:

- data: ``ray.train.get_dataset_shard("train")`` yields windows ``x`` of
  ``seq_len + 1`` steps (tokens ``(B, L+1)`` int64, frames ``(B, L+1, 13)``
  float32); inputs are ``x[:, :-1]``, targets ``x[:, 1:]``.
- checkpoints: every ``checkpoint_every`` steps (and at the last step) rank 0
  writes model/adapter + optimizer + scheduler + step; every rank calls
  ``ray.train.report`` (it is a barrier). On start, ``ray.train.get_checkpoint()``
  (latest checkpoint of this run: after a worker failure, or when the same
  run name is started again) restores all of it and training continues from
  that step.
- metrics: rank 0 hands per-step rows ``{step, loss, lr, items_per_s, split}``
  to ``cfg.metrics_sink`` (a picklable callable from the driver, which
  writes SQLite: one writer) every ``log_every`` steps and at checkpoints.
- final evaluation: rank 0 evaluates the unsplit ``eval`` dataset with the
  unwrapped model (no DDP collectives) and returns ``eval_loss`` to the driver.

This is the only module under actors/ that imports Ray.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from actors.errors import ChromarayError
from actors.train.config import FaultInjection, LoopConfig
from actors.train.models import build_model, items_in, load_model, save_model, sequence_loss, split_batch, train_step

__all__ = ["LOOP_CONFIG_KEY", "loop_config_of", "train_loop_per_worker"]

#: The one key of ``train_loop_config``: ``{"loop": LoopConfig}``.
LOOP_CONFIG_KEY = "loop"


def _lr_lambda(max_steps: int, warmup: int) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to 10 % of the peak learning rate."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac))

    return f


def loop_config_of(config: Mapping[str, Any]) -> LoopConfig:
    """The :class:`LoopConfig` inside Ray Train's ``train_loop_config`` dict."""
    cfg = config.get(LOOP_CONFIG_KEY)
    if not isinstance(cfg, LoopConfig) or len(config) != 1:
        raise ChromarayError(f"train_loop_config must be {{{LOOP_CONFIG_KEY!r}: LoopConfig}}, got keys "
                             f"{sorted(config)}")
    return cfg


def _pick_device(cfg: LoopConfig, world_size: int) -> torch.device:
    import ray.train.torch

    dev = ray.train.torch.get_device()
    # Ray Train only knows CUDA; a single worker on a Mac can use MPS.
    if (dev.type == "cpu" and cfg.device in ("auto", "mps") and world_size == 1
            and torch.backends.mps.is_available()):
        return torch.device("mps")
    return dev


def _build(cfg: LoopConfig, ckpt_dir: Path | None) -> tuple[torch.nn.Module, dict]:
    """Model on CPU (fresh, from a base + new LoRA, or from a checkpoint) and the saved state."""
    state: dict = {}
    if ckpt_dir is not None:
        state = json.loads((ckpt_dir / "state.json").read_text())
    if cfg.base:  # lora (LoopConfig.mode)
        from actors.train.models.lora import apply_lora, load_adapter

        base = load_model(cfg.base, backend="mambapy")
        if ckpt_dir is not None:
            return load_adapter(base, ckpt_dir / "adapter", trainable=True), state
        return apply_lora(base, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout), state
    if ckpt_dir is not None:
        return load_model(ckpt_dir), state
    return build_model(cfg.model), state


def _save_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler | None,
                     state: dict, mode: str) -> None:
    inner: Any = getattr(model, "module", model)  # DDP wrapper (around a peft model in lora mode)
    if mode == "lora":
        from actors.train.models.lora import save_adapter

        save_adapter(inner, directory / "adapter")
        inner.get_base_model().spec.save(directory)
    else:
        save_model(inner, directory)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None}, directory / "optim.pt")
    (directory / "state.json").write_text(json.dumps(state))


def _maybe_inject_fault(fault: FaultInjection | None, rank: int, step: int) -> None:
    """Testing hook: one worker dies hard once at a given step (marker file guards "once")."""
    if fault is None or rank != fault.rank or step != fault.step:
        return
    marker = Path(fault.marker)
    if marker.exists():
        return
    import ray.train

    # Die only once the last reported checkpoint is committed, so "resumes from
    # the last checkpoint" is deterministic whatever the controller's polling lag.
    ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED,
                                           timeout_s=120)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"killed rank {rank} at step {step}\n")
    os._exit(1)


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Body of ``TorchTrainer(train_loop_per_worker=...)``; ``config`` is ``{"loop": LoopConfig}``.

    Rank 0 returns the final metrics (``step``, ``start_step`` of this attempt,
    ``loss``, ``eval_loss``, ``eval_items``): Ray Train V2 hands rank 0's return
    value to the driver as ``Result.return_value``.
    """
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    cfg = loop_config_of(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed + rank)
    task, mode, max_steps, batch_size = cfg.task, cfg.mode, cfg.max_steps, cfg.batch_size
    sink = cfg.metrics_sink if rank == 0 else None

    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            model, state = _build(cfg, Path(d))
            opt_state = torch.load(Path(d) / "optim.pt", map_location="cpu", weights_only=False)
    else:
        model, state = _build(cfg, None)
        opt_state = None
    start_step = int(state.get("step", 0))
    epoch = int(state.get("epoch", 0))

    device = _pick_device(cfg, world)
    model = model.to(device) if device.type == "mps" else ray.train.torch.prepare_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(max_steps, cfg.warmup_steps))
    precision = cfg.precision if device.type == "cuda" else "fp32"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    if opt_state is not None:
        optimizer.load_state_dict(opt_state["optimizer"])
        scheduler.load_state_dict(opt_state["scheduler"])
        if scaler is not None and opt_state.get("scaler"):
            scaler.load_state_dict(opt_state["scaler"])

    dtype = torch.int64 if task == "tokens" else torch.float32
    shard = ray.train.get_dataset_shard("train")
    step = start_step
    pending: list[dict] = []
    last_loss = float("nan")
    t_last = time.perf_counter()

    def flush() -> None:
        if sink is not None and pending:
            sink(list(pending))
        pending.clear()

    while step < max_steps:
        n_batches = 0
        for batch in shard.iter_torch_batches(batch_size=batch_size, drop_last=True, dtypes=dtype, device=device,
                                              local_shuffle_buffer_size=16 * batch_size,
                                              local_shuffle_seed=epoch * world + rank):
            n_batches += 1
            inputs, targets = split_batch(batch["x"])
            loss = train_step(model, task, inputs, targets, optimizer=optimizer, params=params,
                              grad_clip=cfg.grad_clip, amp_dtype=amp_dtype, scaler=scaler)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            _maybe_inject_fault(cfg.fault, rank, step)

            loss_t = loss.detach().float().reshape(1)
            if world > 1 and dist.is_initialized():
                dist.all_reduce(loss_t)  # mean over workers for the logged curve
                loss_t /= world
            last_loss = float(loss_t.item())
            now = time.perf_counter()
            items_per_s = items_in(task, targets) * world / max(now - t_last, 1e-9)
            t_last = now
            pending.append({"step": step, "loss": last_loss, "lr": lr, "items_per_s": items_per_s,
                            "split": "train"})
            if step % cfg.log_every == 0:
                flush()
            metrics = {"step": step, "loss": last_loss, "lr": lr, "items_per_s": items_per_s,
                       "start_step": start_step, "epoch": epoch}
            if step % cfg.checkpoint_every == 0 or step == max_steps:
                flush()
                st = {"step": step, "epoch": epoch, "mode": mode, "loss": last_loss}
                if rank == 0:
                    with tempfile.TemporaryDirectory() as tmp:
                        _save_checkpoint(Path(tmp), model, optimizer, scheduler, scaler, st, mode)
                        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
                else:
                    ray.train.report(metrics, checkpoint=None)
            if step >= max_steps:
                break
        if n_batches == 0:
            raise RuntimeError(f"worker {rank} got no training batch of size {batch_size}: too little data")
        if step < max_steps:
            epoch += 1
    flush()

    # Final held-out evaluation on rank 0 with the unwrapped model (no collectives).
    final: dict[str, Any] = {"step": step, "loss": last_loss, "start_step": start_step, "epoch": epoch}
    if rank == 0:
        eval_it = ray.train.get_dataset_shard("eval")
        if eval_it is not None:
            inner = getattr(model, "module", model)
            inner.eval()
            total, count = 0.0, 0
            with torch.no_grad():
                for batch in eval_it.iter_torch_batches(batch_size=batch_size, dtypes=dtype, device=device):
                    inputs, targets = split_batch(batch["x"])
                    n = items_in(task, targets)
                    total += float(sequence_loss(task, inner(inputs), targets)) * n
                    count += n
            if count:
                final["eval_loss"] = total / count
                final["eval_items"] = count
                if sink is not None:
                    sink([{"step": step, "loss": final["eval_loss"], "lr": 0.0, "items_per_s": 0.0,
                           "split": "eval"}])
    return final if rank == 0 else None
