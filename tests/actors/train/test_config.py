"""The typed configs of training: LoopConfig (with LoraConfig, FaultInjection) and ModelSpec."""
from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from actors.errors import ChromarayError
from actors.train.config import FaultInjection, LoopConfig, LoraConfig, default_warmup
from actors.train.loop import LOOP_CONFIG_KEY, loop_config_of
from actors.train.models import ModelSpec


class RecordingSink:
    """A picklable metrics sink (module level, as the driver's SQLite sink is)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def __call__(self, rows: list[dict]) -> None:
        self.rows.extend(rows)


def _loop(**kw) -> LoopConfig:
    values = {"model": ModelSpec(arch="transformer", task="tokens", vocab_size=24, d_model=32, n_layers=1),
              "base": None, "lora": LoraConfig(r=4, alpha=8), "max_steps": 30, "batch_size": 8,
              "lr": 5e-3, "warmup_steps": 3, "checkpoint_every": 10, "log_every": 5, "precision": "bf16",
              "device": "cpu", "seed": 7, "fault": FaultInjection(step=15, rank=1, marker="/tmp/m"),
              "metrics_sink": RecordingSink(), **kw}
    return LoopConfig(**values)


def test_loop_config_round_trips_through_to_dict_without_the_sink():
    cfg = _loop()
    d = cfg.to_dict()
    assert "metrics_sink" not in d
    assert d["model"]["vocab_size"] == 24 and d["lora"] == {"r": 4, "alpha": 8, "dropout": 0.0}
    assert d["fault"] == {"step": 15, "marker": "/tmp/m", "rank": 1}
    json.dumps(d)  # storable as is
    back = LoopConfig.from_dict(d)
    assert isinstance(back.model, ModelSpec) and isinstance(back.lora, LoraConfig)
    assert isinstance(back.fault, FaultInjection)
    assert back == cfg  # the sink is not compared: it is no setting
    assert back.metrics_sink is None and back.to_dict() == d


def test_loop_config_pickles_with_its_sink():
    """What Ray Train ships to every worker: {"loop": LoopConfig}, sink included."""
    cfg = _loop()
    wire = pickle.loads(pickle.dumps({LOOP_CONFIG_KEY: cfg}))
    got = loop_config_of(wire)
    assert got == cfg and isinstance(got.metrics_sink, RecordingSink)
    got.metrics_sink([{"step": 1}])
    assert got.metrics_sink.rows == [{"step": 1}]


def test_the_loop_takes_only_a_loop_config():
    """No dict of settings with defaults filled in by the loop: a plain dict is refused."""
    with pytest.raises(ChromarayError, match="train_loop_config must be"):
        loop_config_of(_loop().to_dict())
    with pytest.raises(ChromarayError, match="train_loop_config must be"):
        loop_config_of({LOOP_CONFIG_KEY: _loop(), "lr": 1.0})


def test_unknown_keys_and_bad_types_are_one_clear_error():
    d = _loop().to_dict()
    with pytest.raises(ChromarayError, match=r"unknown option\(s\) \['checkpoint_evry'\] in LoopConfig"):
        LoopConfig.from_dict({**d, "checkpoint_evry": 5})
    # An optional nested setting: Settings reports the field, not the inner key.
    with pytest.raises(ChromarayError, match=r"unknown option\(s\) \['rank_'\] in LoopConfig.fault"):
        LoopConfig.from_dict({**d, "fault": {"step": 1, "marker": "m", "rank_": 0}})
    with pytest.raises(ChromarayError, match=r"bad value 'many' for LoopConfig.max_steps"):
        LoopConfig.from_dict({**d, "max_steps": "many"})
    with pytest.raises(ChromarayError, match=r"bad value 'x' for LoopConfig.lora.r"):
        LoopConfig.from_dict({**d, "lora": {"r": "x", "alpha": 8}})
    # Strings (YAML, environment) are coerced to the declared types.
    assert LoopConfig.from_dict({**d, "max_steps": "40", "lr": "0.01"}).max_steps == 40


@pytest.mark.parametrize("change,message", [
    ({"precision": "int8"}, "precision"), ({"device": "tpu"}, "device"), ({"checkpoint_every": 0}, "checkpoint_every"),
    ({"lr": 0.0}, "lr"), ({"weight_decay": -0.1}, "weight_decay"), ({"warmup_steps": 0}, "warmup_steps"),
    ({"lora": {"r": 4, "alpha": 8, "dropout": 1.5}}, "dropout"), ({"lora": {"r": 0, "alpha": 8}}, "LoRA r"),
    ({"metrics_sink": "sqlite"}, "callable"),
])
def test_loop_config_validates(change, message):
    with pytest.raises(ChromarayError, match=message):
        LoopConfig.from_dict({**_loop().to_dict(), **change})


def test_the_base_checkpoint_decides_the_mode():
    """LoRA means adapters on a base: there is no mode field that could say lora without one."""
    assert _loop().mode == "scratch"
    assert _loop(base="/ckpt/base").mode == "lora"
    with pytest.raises(ChromarayError, match=r"unknown option\(s\) \['mode'\] in LoopConfig"):
        LoopConfig.from_dict({**_loop().to_dict(), "mode": "lora"})


def test_loop_config_is_frozen_and_replace_checks():
    cfg = _loop()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_steps = 3  # type: ignore[misc]
    assert cfg.replace(max_steps=35).max_steps == 35 and cfg.max_steps == 30
    with pytest.raises(ChromarayError, match="log_every"):
        cfg.replace(log_every=0)


def test_default_warmup():
    assert [default_warmup(n) for n in (1, 9, 30, 35, 1000, 20000)] == [1, 1, 3, 3, 100, 100]


def test_model_spec_is_a_frozen_setting(tmp_path):
    spec = ModelSpec(arch="mamba", task="frames", d_model=16, n_layers=1, d_conv=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.d_conv = 4  # type: ignore[misc]
    spec.save(tmp_path)
    assert ModelSpec.load(tmp_path) == spec
    (tmp_path / "spec.json").write_text(json.dumps({**spec.to_dict(), "n_experts": 8}))
    with pytest.raises(ChromarayError, match=r"unknown option\(s\) \['n_experts'\] in .*spec.json"):
        ModelSpec.load(tmp_path)
    (tmp_path / "spec.json").write_text("[1, 2]")
    with pytest.raises(ChromarayError, match="JSON object"):
        ModelSpec.load(tmp_path)
    with pytest.raises(ChromarayError, match="vocab_size"):
        ModelSpec.from_dict({"arch": "mamba", "task": "tokens", "vocab_size": "1"})
