"""pipeline.config: YAML < environment < CLI, checked keys and types."""
from __future__ import annotations

import pytest

from actors.errors import ChromarayError
from pipeline.config import load_config


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
