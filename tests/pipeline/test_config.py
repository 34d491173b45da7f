"""pipeline.config: YAML < environment < CLI, checked keys and types."""
from __future__ import annotations

import pytest

from actors.errors import ChromarayError
from pipeline.config import ChromarayConfig, load_config


def test_config_layers_yaml_env_cli(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("dsp: {hop_length: 256}\npipeline: {feature_actors: 3}\n")
    cfg = load_config(f, overrides={"pipeline": {"feature_actors": 5}},
                      environ={"CHROMARAY_BATCH__MEMORY_FRACTION": "0.5"})
    assert (cfg.dsp.hop_length, cfg.pipeline.feature_actors, cfg.batch.memory_fraction) == (256, 5, 0.5)
    f.write_text("dsp: {hop_lenght: 256}\n")
    with pytest.raises(ChromarayError, match="hop_lenght"):
        load_config(f)
    assert cfg.dsp.version() != load_config().dsp.version()


def test_every_section_round_trips():
    cfg = load_config(environ={})
    assert ChromarayConfig.from_dict(cfg.to_dict()) == cfg
    assert set(cfg.to_dict()) == {"dsp", "batch", "pipeline", "identify", "match"}


def test_environment_strings_are_coerced_to_the_declared_types():
    cfg = load_config(environ={"CHROMARAY_IDENTIFY__SPEEDS": "1.0, 1.02", "CHROMARAY_DSP__N_MELS": "64",
                               "CHROMARAY_MATCH__MIN_SCORE": "0.5"})
    assert cfg.identify.speeds == (1.0, 1.02) and cfg.dsp.n_mels == 64 and cfg.match.min_score == 0.5


@pytest.mark.parametrize(("overrides", "message"), [
    ({"identify": {"speeds": ["fast"]}}, r"\[identify\]\.speeds\[0\]"),
    ({"dsp": {"n_fft": True}}, r"\[dsp\]\.n_fft: expected a number"),
    ({"dsp": {"hop_length": 2.5}}, r"\[dsp\]\.hop_length.*not an integer"),
    ({"batch": {"memory_fraction": 7}}, r"memory_fraction must be in \(0, 1\], got 7"),
    ({"batch": {"device": "tpu"}}, r"device must be auto, cpu or gpu"),
    ({"dsp": {"hop_length": 0}}, r"hop_length must be > 0"),
    ({"dsp": {"n_chroma": 24}}, r"n_chroma must be 12"),
    ({"identify": {"accept_score_long": 0.7}}, r"accept_score_long must be in \(0, 0.5\)"),
    ({"pipeline": {"feature_actors": -1}}, r"feature_actors must be >= 0"),
    ({"match": {"top_k": 0}}, r"top_k must be > 0"),
    ({"nope": {"x": 1}}, r"unknown config section 'nope'"),
])
def test_bad_values_are_one_clear_error(overrides, message):
    with pytest.raises(ChromarayError, match=message):
        load_config(overrides=overrides, environ={})
