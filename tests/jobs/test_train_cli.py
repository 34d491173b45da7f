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

