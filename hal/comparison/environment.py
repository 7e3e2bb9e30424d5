"""What a measurement ran on: versions, CPU, GPU, clocks, load.

Framework versions come from installed-package metadata, which never imports the
framework; ``loaded`` says whether the run itself imported it.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata

import numpy as np

# distribution name -> module name
FRAMEWORKS = {
    "torch": "torch", "jax": "jax", "jaxlib": "jaxlib", "tensorflow": "tensorflow",
    "tensorflow-cpu": "tensorflow", "onnxruntime": "onnxruntime", "onnxruntime-gpu": "onnxruntime",
    "pyopencl": "pyopencl", "onnx": "onnx", "onnx-ir": "onnx_ir", "numpy": "numpy",
    "mlcommons-loadgen": "mlperf_loadgen", "pynq": "pynq",
}


def frameworks() -> dict:
    out = {}
    for dist, module in FRAMEWORKS.items():
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        out[dist] = {"version": version, "loaded": module in sys.modules}
    return out


def cpu() -> dict:
    info = {"model": platform.processor() or platform.machine(), "logical_cores": os.cpu_count()}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["model"] = line.split(":", 1)[1].strip()
                break
        mhz = [float(line.split(":", 1)[1]) for line in text.splitlines()
               if line.startswith("cpu MHz")]
        if mhz:
            info["mhz_now"] = round(sum(mhz) / len(mhz), 1)
    except (OSError, ValueError):
        pass
    for key, name in (("mhz_max", "cpuinfo_max_freq"), ("governor", "scaling_governor")):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cpufreq/{name}") as f:
                v = f.read().strip()
            info[key] = round(int(v) / 1000, 1) if key == "mhz_max" else v
        except (OSError, ValueError):
            pass
    if hasattr(os, "getloadavg"):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return info


def gpus() -> list[dict]:
    """NVIDIA GPUs as nvidia-smi reports them (name, driver, memory, clocks); [] without it."""
    if not shutil.which("nvidia-smi"):
        return []
    q = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    keys = q.split(",")
    return [dict(zip(keys, (v.strip() for v in line.split(","))))
            for line in out.splitlines() if line.strip()]


def opencl() -> list[dict]:
    """OpenCL platforms and devices, only if the run already loaded pyopencl."""
    if "pyopencl" not in sys.modules:
        return []
    cl = sys.modules["pyopencl"]
    out = []
    try:
        for p in cl.get_platforms():
            for d in p.get_devices():
                out.append({"platform": p.name, "platform_version": p.version,
                            "device": d.name.strip(), "driver": d.driver_version,
                            "compute_units": d.max_compute_units,
                            "max_clock_mhz": d.max_clock_frequency})
    except Exception as exc:  # a broken ICD must not break the report
        out.append({"error": f"{type(exc).__name__}: {exc}"})
    return out


def environment() -> dict:
    from hal.version import __version__

    env = {"hal": __version__, "python": platform.python_version(),
           "platform": platform.platform(), "numpy": np.__version__,
           "cores": os.cpu_count(), "cpu": cpu(), "frameworks": frameworks()}
    g = gpus()
    if g:
        env["gpus"] = g
    cl = opencl()
    if cl:
        env["opencl"] = cl
    threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "HAL_BACKENDS",
                                          "XLA_FLAGS", "CUDA_VISIBLE_DEVICES") if k in os.environ}
    if threads:
        env["env_vars"] = threads
    return env
