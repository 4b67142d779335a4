"""What env.json records about reproducibility across machines, and run.portable_numerics in effect."""

import hashlib
import json
import os
import subprocess
import sys
from importlib import metadata

import pytest
import torch

from testbed import numerics
from testbed.config import ConfigError

from .helpers import REPO, TINY


def test_lock_check_names_the_packages_that_differ(tmp_path):
    lock = tmp_path / "requirements.lock"
    text = f"pyyaml=={metadata.version('pyyaml')}\n    # via testbed\nnumpy==0.0.1\nno-such-package==1.0\n"
    lock.write_text(text)
    assert numerics.lock(lock) == {
        "lock_sha256": hashlib.sha256(text.encode()).hexdigest(), "lock_matches": False,
        "lock_differs": [f"numpy {metadata.version('numpy')} (lock: 0.0.1)", "no-such-package missing (lock: 1.0)"]}
    lock.write_text(text.split("numpy")[0])
    assert numerics.lock(lock)["lock_matches"] is True
    assert numerics.lock(tmp_path / "absent.lock") == {"lock_sha256": None, "lock_matches": None, "lock_differs": []}


def test_the_lock_leaves_torch_and_cuda_out():
    """torch is installed first from its CPU wheel; a pin in the lock would pull a CUDA build and its packages."""
    pins = [line.split("==")[0] for line in numerics.LOCK_FILE.read_text().splitlines() if "==" in line]
    assert {"transformers", "accelerate", "datasets", "pytest", "hypothesis", "pip-tools"} <= set(pins)
    assert not [p for p in pins if p == "torch" or p.startswith(("nvidia-", "cuda-", "triton"))]


def test_portable_numerics_refused_once_torch_has_computed(monkeypatch):
    """Both settings are read when torch and MKL first compute: too late in a process that already has."""
    # This process has computed (with conftest's MKL_CBWR=AUTO, as every run: deleting it before the first MKL
    # call would change how the whole test process computes).
    torch.ones(64, 64) @ torch.ones(64, 64)
    for key in numerics.PORTABLE_ENV:  # set below; restored afterwards (later tests' subprocesses inherit them)
        monkeypatch.setenv(key, os.environ.get(key, ""))
    if torch.backends.cpu.get_cpu_capability() == "AVX2" and numerics.mkl_branch() in (None, "COMPATIBLE"):
        pytest.skip("this process already computes with the portable code paths")
    with pytest.raises(ConfigError, match="'run.portable_numerics'"):
        numerics.set_code_paths(True)  # it sets both variables before it finds them too late


def test_portable_numerics_take_effect_in_the_run(tmp_path):
    """A fresh process setting up a run computes with torch's AVX2 kernels and MKL's compatible path, whatever its
    environment asked for, and env.json says so. (The run's set-up only: it is what sets them, and what the
    rest of the run computes with is fixed from then on.)"""
    setup = ("import sys; from pathlib import Path; from testbed import config, loop; "
             "loop.prepare(config.load(None, sys.argv[2:]), Path(sys.argv[1]), resume=False)")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO"}
    done = subprocess.run([sys.executable, "-c", setup, str(tmp_path / "p"), *TINY, "run.portable_numerics=true"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    start = json.loads((tmp_path / "p" / "env.json").read_text())["starts"][0]
    assert start["portable_numerics"] is True and start["cpu_capability"] == "AVX2"
    assert start["mkl_cbwr"] == ("COMPATIBLE" if torch.backends.mkl.is_available() else None)
