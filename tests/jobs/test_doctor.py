"""`chromaray doctor`: devices, chosen profile, fast paths."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from pipeline.train.profiles import detect_hardware
from tests.paths import REPO as ROOT


def _doctor(*args: str, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("CHROMARAY_PROFILE", "CHROMARAY_MAMBA_FORCE_FALLBACK")}
    e.update(env)
    return subprocess.run([sys.executable, "-m", "jobs.doctor", *args], cwd=ROOT, env=e, capture_output=True,
                          text=True, timeout=120)


def test_doctor_reports_devices_profile_and_fast_paths():
    hw = detect_hardware()
    r = _doctor()
    assert r.returncode == 0, r.stderr
    expected = "workstation" if hw.cuda_devices else "laptop"
    assert f"profile: {expected} (chosen by auto)" in r.stdout
    assert f"CUDA devices: {hw.cuda_devices}" in r.stdout
    assert "fast path CuPy DSP kernels: " + ("active" if hw.cupy else "inactive") in r.stdout
    assert "fast path mamba_ssm kernels: " + ("active" if hw.mamba_kernels else "inactive") in r.stdout


def test_doctor_json_env_profile_and_forced_fallback():
    r = _doctor("--json", CHROMARAY_PROFILE="cluster", CHROMARAY_MAMBA_FORCE_FALLBACK="1")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["profile"]["name"] == "cluster" and info["profile"]["source"] == "env"
    assert info["fast_paths"]["mamba_backend"] == "mambapy"
    assert info["fast_paths"]["mamba_force_fallback"] is True


def test_doctor_unknown_profile_is_a_one_line_error():
    r = _doctor("--profile", "mainframe")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("chromaray doctor: error: unknown profile")
