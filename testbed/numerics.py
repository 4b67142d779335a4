"""What decides whether a run's numbers come out the same on another machine: the CPU, the code paths torch
and MKL choose on it, and the package versions against the lock file (env.json records all of them).

run.portable_numerics pins those code paths: torch's AVX2 kernels (ATEN_CPU_CAPABILITY=avx2) and MKL's
compatible path (MKL_CBWR=COMPATIBLE), whatever the CPU offers beyond AVX2. Both are read when torch and MKL
first compute, so they are set before the run's first tensor operation and then checked.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from testbed import rundir
from testbed.config import ConfigError

# The lock the package ships (package data: in a checkout a link to the repository's requirements.lock), so an
# installed package still reports whether its environment matches the pinned versions.
LOCK_FILE = Path(__file__).resolve().parent / "requirements.lock"
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}
# MKL's code-path numbers (mkl_cbwr_get), as MKL_CBWR names them.
_MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX",
                 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}
_MKL_STRICT = 0x10000
# CPU flags that change which kernels run: the vector extensions torch and MKL dispatch on.
_FLAGS = re.compile(r"avx2|avx512.*|amx.*|fma")


def cpu() -> dict[str, Any]:
    """The CPU's model name and its flags that torch's and MKL's dispatch depend on (Linux; else the
    platform's name and no flags)."""
    import platform

    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    return {"cpu_model": model.group(1).strip() if model else platform.processor() or platform.machine(),
            "cpu_flags": sorted(f for f in flags.group(1).split() if _FLAGS.fullmatch(f)) if flags else []}


def mkl_branch() -> str | None:
    """The code path MKL computes with (MKL_CBWR's name for it), None where torch has no MKL. MKL may not
    honour a request: on AMD CPUs MKL_CBWR=AVX2 reads back as AUTO."""
    if not torch.backends.mkl.is_available():
        return None
    try:
        get = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so")).mkl_serv_cbwr_get
    except (OSError, AttributeError):  # another build of torch: MKL linked differently
        return None
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    mode = get(-1)  # MKL_CBWR_ALL
    name = _MKL_BRANCHES.get(mode & ~_MKL_STRICT, str(mode & ~_MKL_STRICT))
    return f"{name},STRICT" if mode & _MKL_STRICT else name


def lock(path: Path = LOCK_FILE) -> dict[str, Any]:
    """The lock file's sha256 and whether the installed versions match its pins (null where there is no lock
    file); `lock_differs` names the packages that do not."""
    if not path.is_file():
        return {"lock_sha256": None, "lock_matches": None, "lock_differs": []}
    text = path.read_text(encoding="utf-8")
    differs = []
    for name, pinned in re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", text, re.M):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != pinned:
            differs.append(f"{name} {installed or 'missing'} (lock: {pinned})")
    return {"lock_sha256": hashlib.sha256(text.encode()).hexdigest(), "lock_matches": not differs,
            "lock_differs": differs}


def code_paths(portable: bool) -> dict[str, Any]:
    """env.json's numerics fields: the CPU, the code paths in use, the portable setting, the lock."""
    return {**cpu(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkl_cbwr": mkl_branch(),
            "portable_numerics": portable, **lock()}


def set_code_paths(portable: bool) -> None:
    """Before the run's first tensor operation: MKL's conditional numerical reproducibility (AUTO, so results
    do not depend on memory alignment) unless the environment chose a path; with `portable`, torch's AVX2
    kernels and MKL's compatible path whatever the environment says, checked to be in effect."""
    if not portable:
        os.environ.setdefault("MKL_CBWR", "AUTO")
        return
    os.environ.update(PORTABLE_ENV)
    capability, branch = torch.backends.cpu.get_cpu_capability(), mkl_branch()
    if capability != "AVX2" or branch not in (None, "COMPATIBLE"):
        raise ConfigError(f"config key 'run.portable_numerics': torch computes with its {capability} kernels and "
                          f"MKL on its {branch} path, not AVX2 and COMPATIBLE: the CPU lacks AVX2, or this process "
                          "computed before the run started (start the run in a new process)")


def environment(accelerator, portable: bool) -> dict[str, Any]:
    """What ran this: versions of Python and the libraries (and whether they match the lock file), the
    testbed's git commit, devices, processes, the CPU and the code paths torch and MKL compute with on it."""
    import platform
    import subprocess

    import accelerate
    import datasets
    import torch
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except OSError:
        commit = None
    cuda = torch.cuda.is_available()
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "datasets": datasets.__version__, "testbed_commit": commit,
            "device": accelerator.device.type, "processes": accelerator.num_processes,
            "cuda": torch.version.cuda if cuda else None,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "cpu": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads(),
            **code_paths(portable)}


def write_environment(run: Path, accelerator, portable: bool) -> None:
    """env.json: the environment of every start of the run (the first, then each resume), newest last."""
    path = run / "env.json"
    starts = json.loads(path.read_text())["starts"] if path.is_file() else []
    rundir.write_json(path, {"starts": [*starts, environment(accelerator, portable)]})
