"""The driver builds the loop's LoopConfig from the profile and the request: every field
comes from them (no default filled in on the way), without Ray."""
from __future__ import annotations

import pytest

from actors.errors import ChromarayError
from actors.train.config import FaultInjection, LoopConfig, default_warmup
from actors.train.models import ModelSpec
from pipeline.train.driver import TrainRequest, loop_config, model_spec, resolve_checkpoint
from pipeline.train.profiles import load_profile

# Values no field defaults to anywhere (Profile, LoopConfig, the profile files), so a
# value taken from a default instead of the profile shows.
ODD = {"batch_size": 5, "seq_len": 48, "d_model": 24, "n_layers": 3, "lr": 0.0123, "checkpoint_every": 7,
       "log_every": 3, "max_steps": 77, "lora_r": 5, "lora_alpha": 11, "precision": "fp16", "device": "cpu"}


def _sink(rows: list[dict]) -> None:
    pass


@pytest.mark.parametrize("name", ["laptop", "workstation", "cluster"])
def test_loop_config_is_exactly_the_profile_and_request(name, tmp_path):
    prof = load_profile(name).replace(**ODD)
    fault = FaultInjection(step=4, rank=1, marker=str(tmp_path / "m"))
    req = TrainRequest(arch="mamba", data="midi", db=tmp_path / "lib.db", name="r", profile=prof, seed=9,
                       fault=fault)
    spec = model_spec(req, vocab_size=24)
    assert (spec.arch, spec.task, spec.vocab_size, spec.d_model, spec.n_layers) == ("mamba", "tokens", 24, 24, 3)
    cfg = loop_config(req, spec, metrics_sink=_sink)
    assert cfg.metrics_sink is _sink
    # Complete equality: a new LoopConfig field must be added here, with where its value comes from.
    assert cfg.to_dict() == {
        "model": spec.to_dict(), "base": None,
        "lora": {"r": 5, "alpha": 11, "dropout": 0.0},
        "max_steps": 77, "batch_size": 5, "lr": 0.0123, "warmup_steps": default_warmup(77),
        "checkpoint_every": 7, "log_every": 3, "precision": "fp16", "device": "cpu", "seed": 9,
        "weight_decay": 0.01, "grad_clip": 1.0,  # not profile settings: LoopConfig's own
        "fault": {"step": 4, "rank": 1, "marker": str(tmp_path / "m")},
    }
    assert LoopConfig.from_dict(cfg.to_dict()) == cfg


def test_request_steps_and_small_data_batch_win_over_the_profile(tmp_path):
    prof = load_profile("laptop").replace(**{**ODD, "d_model": 26})
    req = TrainRequest(arch="transformer", data="audio", db=tmp_path / "lib.db", name="r", profile=prof,
                       max_steps=12)
    spec = model_spec(req, vocab_size=0)
    assert (spec.task, spec.n_heads, spec.max_len) == ("frames", 1, 1024)  # 4 heads do not divide 26
    cfg = loop_config(req, spec, batch_size=2)
    assert (cfg.max_steps, cfg.warmup_steps, cfg.batch_size, cfg.fault) == (12, default_warmup(12), 2, None)


def test_lora_loop_config_takes_the_base_model(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    ModelSpec(arch="transformer", task="tokens", vocab_size=30, d_model=16, n_layers=1, max_len=256).save(base)
    prof = load_profile("laptop").replace(**ODD)
    req = TrainRequest(arch="lora", data="midi", db=tmp_path / "lib.db", name="r", profile=prof, base=base)
    spec = model_spec(req, vocab_size=24, base=base)
    assert spec == ModelSpec.load(base)
    cfg = loop_config(req, spec, base=base)
    assert (cfg.mode, cfg.base, cfg.lora.r, cfg.lora.alpha) == ("lora", str(base), 5, 11)
    with pytest.raises(ChromarayError, match="tokenizers differ"):
        model_spec(req, vocab_size=31, base=base)
    with pytest.raises(ChromarayError, match="needs frames"):
        model_spec(TrainRequest(arch="lora", data="audio", db=tmp_path / "lib.db", name="r", profile=prof,
                                base=base), vocab_size=0, base=base)
    with pytest.raises(ChromarayError, match="max_len"):
        model_spec(TrainRequest(arch="lora", data="midi", db=tmp_path / "lib.db", name="r",
                                profile=prof.replace(seq_len=512), base=base), vocab_size=24, base=base)


def test_request_checks_come_before_any_profile_or_ray(tmp_path):
    prof = load_profile("laptop")
    for kw, message in [({"arch": "rnn"}, "unknown model"), ({"data": "video"}, "--data"),
                        ({"arch": "lora"}, "needs --base"), ({"name": "a/b"}, "invalid run name"),
                        ({"max_steps": 0}, "--max-steps")]:
        with pytest.raises(ChromarayError, match=message):
            TrainRequest(**{"arch": "mamba", "data": "midi", "db": tmp_path / "x.db", "name": "r", "profile": prof,
                            **kw})
    req = TrainRequest(arch="mamba", data="midi", db=tmp_path / "x.db", name="r", profile=prof)
    assert (req.storage_dir, req.steps) == (tmp_path / "train_runs", prof.max_steps)


def test_parquet_folder_comes_from_the_database(tmp_path):
    """`train` reads the Parquet folder the database records (its latest fingerprint run's --out);
    --out overrides it; a database without a fingerprint run is one clear error."""
    from pipeline.store import new_run, open_db

    prof = load_profile("laptop")
    engine = open_db(tmp_path / "x.db")
    req = TrainRequest(arch="mamba", data="midi", db=tmp_path / "x.db", name="r", profile=prof)
    with pytest.raises(ChromarayError, match="no `chromaray fingerprint` run"):
        req.out_dir(engine)
    new_run(engine, "fingerprint", config={"out": str(tmp_path / "elsewhere")})
    assert req.out_dir(engine) == tmp_path / "elsewhere"
    over = TrainRequest(arch="mamba", data="midi", db=tmp_path / "x.db", name="r", profile=prof, out=tmp_path / "o")
    assert over.out_dir(engine) == tmp_path / "o"
    engine.dispose()


def test_base_may_be_a_run_directory(tmp_path):
    """`--base <storage>/<run>` picks that run's latest checkpoint; anything else is a clear error."""
    run = tmp_path / "midi-mamba"
    for stamp in ("2026-11-24_08-34-52.1", "2026-11-24_09-01-00.5"):
        (run / f"checkpoint_{stamp}").mkdir(parents=True)
        (run / f"checkpoint_{stamp}" / "spec.json").write_text("{}")
    assert resolve_checkpoint(run) == run / "checkpoint_2026-11-24_09-01-00.5"
    assert resolve_checkpoint(run / "checkpoint_2026-11-24_08-34-52.1") == run / "checkpoint_2026-11-24_08-34-52.1"
    with pytest.raises(ChromarayError, match="neither"):
        resolve_checkpoint(tmp_path)
