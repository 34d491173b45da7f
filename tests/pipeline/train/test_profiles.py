"""Hardware profiles: files, automatic choice, precedence, overrides, cluster checks."""
from __future__ import annotations

import pytest

from actors.errors import ChromarayError
from pipeline.config import read_yaml
from pipeline.train.profiles import (
    BASE_PROFILE,
    PROFILE_DIR,
    PROFILE_ENV,
    Hardware,
    Profile,
    auto_profile_name,
    available_profiles,
    check_cluster_fits,
    load_profile,
    resolve_workers,
    select_profile,
)


def hw(cuda: int = 0, mps: bool = False) -> Hardware:
    return Hardware(cpus=8, cuda_devices=cuda, cuda_names=["GPU"] * cuda, mps=mps, cupy=cuda > 0,
                    mamba_kernels=False, mamba_force_fallback=False, torch_version="x")


@pytest.mark.parametrize("name", available_profiles())
def test_every_shipped_profile_file_lists_every_field(name):
    """The files are the one source of the values (Profile has no defaults for them): a field
    added to Profile must be added to every file; only `source` is never in a file."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(Profile)}
    assert set(read_yaml(PROFILE_DIR / f"{name}.yaml", what="profile")) == fields - {"source"}
    assert load_profile(name).name == name


def test_only_description_and_source_have_defaults():
    import dataclasses

    defaults = {f.name for f in dataclasses.fields(Profile) if f.default is not dataclasses.MISSING}
    assert defaults == {"description", "source"}


def test_three_profile_files_load():
    assert {"laptop", "workstation", "cluster"} <= set(available_profiles())
    lap, ws, cl = load_profile("laptop"), load_profile("workstation"), load_profile("cluster")
    assert lap.gpus_per_worker == 0 and lap.precision == "fp32" and isinstance(lap.workers, int)
    assert ws.gpus_per_worker >= 1 and ws.precision in ("bf16", "fp16")
    assert cl.workers == "auto" and cl.batch_size >= ws.batch_size >= lap.batch_size


@pytest.mark.parametrize("cuda,mps,cluster_gpus,expected", [
    (0, False, None, "laptop"), (0, True, None, "laptop"), (0, False, 0.0, "laptop"),
    (1, False, None, "workstation"), (4, False, 4.0, "workstation"), (1, False, 16.0, "cluster"),
    (0, False, 8.0, "cluster"),
])
def test_auto_choice(cuda, mps, cluster_gpus, expected):
    assert auto_profile_name(hw(cuda, mps), cluster_gpus=cluster_gpus) == expected


def test_precedence_cli_env_auto_and_overrides(monkeypatch):
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    p = select_profile(None, hw=hw(0))
    assert (p.name, p.source) == ("laptop", "auto")
    monkeypatch.setenv(PROFILE_ENV, "cluster")
    p = select_profile(None, hw=hw(0))
    assert (p.name, p.source) == ("cluster", "env")
    p = select_profile("workstation", hw=hw(0), overrides={"batch_size": 7, "precision": "fp32", "workers": None})
    assert (p.name, p.source, p.batch_size, p.precision) == ("workstation", "cli", 7, "fp32")
    assert p.workers == "auto"  # None override leaves the file's value


def test_bad_profiles_raise(tmp_path):
    with pytest.raises(ChromarayError, match="unknown profile"):
        load_profile("mainframe")
    with pytest.raises(ChromarayError, match="precision"):
        select_profile("laptop", overrides={"precision": "int4"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nworkers: 1\nturbo: true\n")
    with pytest.raises(ChromarayError, match=r"unknown option\(s\) \['turbo'\] in profile .*bad.yaml"):
        load_profile(str(bad))


def test_workers_auto_and_cluster_fit():
    ws = load_profile("workstation")
    assert resolve_workers(ws, {"CPU": 32, "GPU": 4}) == 4
    check_cluster_fits(ws, {"CPU": 32, "GPU": 4}, 4)
    with pytest.raises(ChromarayError, match="GPUs"):
        check_cluster_fits(ws, {"CPU": 32}, resolve_workers(ws, {"CPU": 32}))
    lap = load_profile("laptop")
    with pytest.raises(ChromarayError, match="CPUs"):
        check_cluster_fits(lap, {"CPU": 1}, 2)


def test_gpu_profile_on_cpu_only_ray_fails_fast(ray_local, tmp_path):
    """A GPU request on a CPU-only Ray cluster would wait forever; train raises instead."""
    from pipeline.train.driver import TrainRequest, run_training

    req = TrainRequest(arch="mamba", data="midi", db=tmp_path / "none.db", name="gpu",
                       profile=load_profile("workstation"), max_steps=1)
    with pytest.raises(ChromarayError, match="GPUs"):
        run_training(req)


@pytest.mark.parametrize("name", ["laptop", "workstation", "cluster"])
def test_profile_round_trips_and_is_frozen(name):
    import dataclasses

    prof = load_profile(name)
    assert Profile.from_dict(prof.to_dict()) == prof
    with pytest.raises(dataclasses.FrozenInstanceError):
        prof.batch_size = 1  # type: ignore[misc]
    changed = prof.replace(batch_size=3)
    assert (changed.batch_size, prof.batch_size) == (3, load_profile(name).batch_size)


def test_profile_override_with_a_bad_type_is_one_clear_error():
    with pytest.raises(ChromarayError, match=r"bad value 'eight' for profile laptop.batch_size"):
        select_profile("laptop", overrides={"batch_size": "eight"})
    with pytest.raises(ChromarayError, match=r"bad value 2.5 for profile laptop.n_layers"):
        select_profile("laptop", overrides={"n_layers": 2.5})
    with pytest.raises(ChromarayError, match=r"unknown option\(s\) \['turbo'\] in profile laptop"):
        select_profile("laptop", overrides={"turbo": True})
    with pytest.raises(ChromarayError, match="workers must be a positive integer or 'auto'"):
        select_profile("laptop", overrides={"workers": "many"})
    # Environment-style strings are coerced to the field's type; workers takes a count or "auto".
    p = select_profile("laptop", overrides={"batch_size": "12", "lr": "0.01", "workers": "3"})
    assert (p.batch_size, p.lr, p.workers) == (12, 0.01, 3)
    assert select_profile("laptop", overrides={"workers": "auto"}).workers == "auto"


def test_profile_file_with_a_bad_type_names_the_file(tmp_path):
    bad = tmp_path / "odd.yaml"
    bad.write_text("workers: 1\nseq_len: long\n")
    with pytest.raises(ChromarayError, match=r"bad value 'long' for profile .*odd.yaml.seq_len"):
        load_profile(str(bad))
    ok = tmp_path / "ok.yaml"
    ok.write_text("workers: 1\nseq_len: 32\n")
    assert (load_profile(str(ok)).name, load_profile(str(ok)).source) == ("ok", "file")
    # A file given by path names what it changes; the other values are the base profile's.
    prof, base = load_profile(str(ok)), load_profile(BASE_PROFILE)
    assert (prof.workers, prof.seq_len, prof.description) == (1, 32, "")
    assert prof.replace(workers=base.workers, seq_len=base.seq_len, description=base.description,
                        name=base.name) == base
