"""`chromaray train` argument errors are one-line ChromarayErrors (exit 2), before Ray starts."""
from __future__ import annotations

from jobs.cli import main


def test_lora_without_base_is_a_user_error(tmp_path, capsys):
    rc = main(["train", "lora", "--db", str(tmp_path / "x.db"), "--data", "midi", "--name", "r", "--max-steps", "3"])
    assert rc == 2
    assert "needs --base" in capsys.readouterr().err


def test_bad_max_steps_is_a_user_error(tmp_path, capsys):
    rc = main(["train", "mamba", "--db", str(tmp_path / "x.db"), "--data", "midi", "--name", "r", "--max-steps", "0"])
    assert rc == 2
    assert "--max-steps" in capsys.readouterr().err


def test_base_may_be_a_run_directory(tmp_path):
    """`--base <storage>/<run>` picks that run's latest checkpoint; anything else is a clear error."""
    import pytest

    from actors.errors import ChromarayError
    from pipeline.train.driver import resolve_checkpoint

    run = tmp_path / "midi-mamba"
    for stamp in ("2026-11-24_08-34-52.1", "2026-11-24_09-01-00.5"):
        (run / f"checkpoint_{stamp}").mkdir(parents=True)
        (run / f"checkpoint_{stamp}" / "spec.json").write_text("{}")
    assert resolve_checkpoint(run) == run / "checkpoint_2026-11-24_09-01-00.5"
    assert resolve_checkpoint(run / "checkpoint_2026-11-24_08-34-52.1") == run / "checkpoint_2026-11-24_08-34-52.1"
    with pytest.raises(ChromarayError, match="neither"):
        resolve_checkpoint(tmp_path)
