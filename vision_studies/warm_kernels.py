"""Notebook kernels forked from a process that has already imported torch, torchvision and scikit-learn.

Each notebook the runner executes used to start a fresh Python for its kernel, which then imported torch,
torchvision (whose ops import `torch._dynamo`), scikit-learn, SciPy and pandas again: about 4 of the 5.3 s
each notebook paid for its kernel and imports on this project's 2-core machine, twelve times over. Here each
of the runner's workers starts one warm process that imports them once (`PRELOAD`), and every kernel is a
fork of it: a child that then runs ipykernel's own `IPKernelApp` with the connection file, environment
and working folder jupyter_client prepared, as `python -m ipykernel_launcher -f ...` would.

Modules that decide at import time whether they run in a notebook are left to the kernel (`NOT_PRELOADED`):
fastai and fastprogress pick their progress bars, `tqdm.auto` its bar, matplotlib its backend, and timm
imports huggingface_hub, which imports `tqdm.auto`; but `tqdm.auto` can only pick the notebook's bar where
ipywidgets is installed, so without it timm is preloaded too (`kernel_only`). `preload()` fails if any of the
kernel's own came in anyway.

The kernel is the worker's own child: the worker makes itself a "child subreaper" (Linux's
``PR_SET_CHILD_SUBREAPER``) and the warm process forks twice, so the kernel is handed to the worker, which
waits for it, signals it and reads its exit status as jupyter_client does a `Popen`'s (`ForkedKernel`).
Anywhere that is not possible (not Linux, or `VISION_STUDIES_WARM_KERNELS=0`), kernels start as before.

One thing a fork cannot make anew: Python's string-hash seed is the warm process's in every kernel (set and dict
orders of strings repeat from kernel to kernel). `random`'s and NumPy's global generators are seeded from the
system again, as a fresh process's are. The warm process's own messages (warnings while preloading) go to the
kernel log of the notebook whose start made it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["PRELOAD", "PRELOAD_IF_INSTALLED", "NOT_PRELOADED", "PRELOAD_WITHOUT_WIDGETS", "widgets_installed",
           "kernel_only", "preload", "enabled", "WarmProcess", "ForkedKernel", "launch", "serve"]

PRELOAD = ("numpy", "PIL.Image", "pandas", "scipy.stats", "sklearn.metrics", "sklearn.model_selection", "torch",
           "torchvision", "torchvision.ops", "ipykernel.kernelapp")
# What fastai, timm, huggingface_hub and this package import besides, sensing no notebook: 0.32 s of each kernel's
# imports. Other packages' dependencies (trio comes with the test extra's selenium): skipped where not installed.
PRELOAD_IF_INSTALLED = ("plum", "httpx2", "httpcore2", "trio", "requests", "pyparsing", "cv2", "yaml", "attrs",
                        "filelock", "safetensors.torch")
NOT_PRELOADED = ("fastai", "fastcore", "fastprogress", "tqdm.auto", "tqdm.autonotebook", "matplotlib", "timm",
                 "huggingface_hub", "ipywidgets", "vision_studies.pipeline")
# timm imports huggingface_hub, which imports tqdm.auto; in a kernel tqdm.auto takes the notebook's bar only where
# ipywidgets is installed (tqdm/autonotebook.py), and without it the console bar, as outside one. So where ipywidgets
# is missing (this project's environment; Colab has it) timm is preloaded too: 0.2 to 0.45 s of each kernel's imports.
PRELOAD_WITHOUT_WIDGETS = ("timm",)
SENSE_ONLY_THROUGH_WIDGETS = ("tqdm.auto", "tqdm.autonotebook", "timm", "huggingface_hub")
SWITCH = "VISION_STUDIES_WARM_KERNELS"  # "0": every kernel a fresh process, as jupyter_client starts them
_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def widgets_installed() -> bool:
    """Whether ipywidgets is installed, through which alone `tqdm.auto` can pick the notebook's bar."""
    return importlib.util.find_spec("ipywidgets") is not None


def kernel_only() -> tuple[str, ...]:
    """The modules each kernel must import itself, here: `NOT_PRELOADED`, less `SENSE_ONLY_THROUGH_WIDGETS` where
    ipywidgets is not installed."""
    if widgets_installed():
        return NOT_PRELOADED
    return tuple(name for name in NOT_PRELOADED if name not in SENSE_ONLY_THROUGH_WIDGETS)


def preload() -> None:
    """Import `PRELOAD`, what is installed of `PRELOAD_IF_INSTALLED` and, without ipywidgets,
    `PRELOAD_WITHOUT_WIDGETS`; fail naming any of `kernel_only()` that came in with them."""
    for name in PRELOAD + (() if widgets_installed() else PRELOAD_WITHOUT_WIDGETS):
        importlib.import_module(name)
    for name in PRELOAD_IF_INSTALLED:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name.split(".")[0]:  # installed, but broken: say so, as for PRELOAD
                raise
    early = [name for name in kernel_only() if name in sys.modules]
    if early:
        raise RuntimeError(f"preloading imported {', '.join(early)}, which must be imported inside the kernel")


def enabled() -> bool:
    """Whether kernels may be forked here: Linux, and not switched off with VISION_STUDIES_WARM_KERNELS=0."""
    return sys.platform.startswith("linux") and os.environ.get(SWITCH, "1") != "0"


def _kernel_args(cmd: list[str]) -> list[str] | None:
    """The arguments of an ipykernel command of this Python (``python -m ipykernel_launcher -f FILE``), else None."""
    if len(cmd) >= 3 and cmd[1:3] == ["-m", "ipykernel_launcher"] and os.path.realpath(cmd[0]) == os.path.realpath(sys.executable):
        return cmd[3:]
    return None


class ForkedKernel:
    """What jupyter_client's `LocalProvisioner` uses of a kernel's `Popen`, for a forked kernel that is our child."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone, status unknown
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class WarmProcess:
    """The warm process of this worker: started with the worker's environment, asked for one kernel at a time."""

    def __init__(self, log: Path | str | None = None):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
        err = open(log, "a", encoding="utf-8") if log else subprocess.DEVNULL
        self.process = subprocess.Popen([sys.executable, "-m", "vision_studies.warm_kernels"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        ready = self.process.stdout.readline().strip()
        if ready != "ready":
            self.close()
            raise RuntimeError(f"the warm process did not start (it said {ready!r})")
        # no exit handler: a pool worker leaves by os._exit, and the warm process ends when its stdin closes then

    def fork(self, args: list[str], env: dict[str, str], cwd: str, log: str) -> int:
        """The pid of a new kernel run with ipykernel's `args`, `env`, in `cwd`, its output appended to `log`."""
        self.process.stdin.write(json.dumps({"args": args, "env": env, "cwd": cwd, "log": log}) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        if not answer.isdigit():
            raise RuntimeError(f"the warm process could not fork a kernel (it said {answer!r})")
        return int(answer)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # end of its requests: it exits
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


_warm: WarmProcess | None = None
_failed = False  # a warm process that would not start is not tried again in this worker: each try costs its imports


def launch(cmd: list[str], kwargs: dict[str, Any]) -> ForkedKernel | None:
    """A forked kernel for jupyter_client's `cmd` and Popen `kwargs`, or None where kernels cannot be forked
    (an error the first time a warm process cannot be started, None after that)."""
    global _warm, _failed
    args = _kernel_args(cmd)
    log = getattr(kwargs.get("stdout"), "name", None)
    if args is None or not enabled() or not isinstance(log, str) or _failed:
        return None
    if _warm is None or _warm.process.poll() is not None:
        try:
            _warm = WarmProcess(log)
        except (OSError, RuntimeError):
            _failed = True
            raise
    env = dict(kwargs.get("env") or os.environ)
    env["JPY_PARENT_PID"] = str(os.getpid())  # what jupyter_client's launch_kernel adds for a kernel it starts
    return ForkedKernel(_warm.fork(args, env, str(kwargs.get("cwd") or os.getcwd()), log))


# ---------------------------------------------------------------------------------------------- the warm process

_SET_BY_PRELOADING: dict[str, str] = {}  # environment variables the warm process's imports set (serve)


def _rebind_log_streams(out, err) -> None:
    """Logging handlers made while preloading (torch's) wrote to the warm process's streams: point them at the
    kernel's, as if they had been made in the kernel, so what they log shows under the cell."""
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in lg.handlers:
            if isinstance(h, logging.StreamHandler) and h.stream in (out, err):
                h.setStream(sys.stdout if h.stream is out else sys.stderr)


def _run_kernel(request: dict, middle: int) -> None:
    """In the forked kernel: become what ``python -m ipykernel_launcher`` started by jupyter_client would be."""
    os.setsid()  # its own process group, as jupyter_client's launcher gives a kernel (interrupts go to the group)
    out, err = sys.stdout, sys.stderr
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0), os.dup2(log, 1), os.dup2(log, 2)
    os.close(log), os.close(null)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for name, value in _SET_BY_PRELOADING.items():  # as those imports, made in the kernel, would have set them
        os.environ.setdefault(name, value)
    import random

    import numpy as np

    random.seed(), np.random.seed()  # a fresh process seeds both from the system; forks would share one stream
    while os.getppid() == middle:  # until the worker (the subreaper) is its parent
        time.sleep(0.001)
    import ipykernel_launcher
    from ipykernel.kernelapp import IPKernelApp

    sys.argv = [ipykernel_launcher.__file__, *request["args"]]
    app = IPKernelApp.instance()
    # the parent to watch: ipykernel reads JPY_PARENT_PID into this trait's default when it is imported, which
    # was in the warm process; given here as that import would have read it (the worker, our parent now)
    app.parent_handle = int(os.environ.get("JPY_PARENT_PID") or 0)
    app.initialize(request["args"])
    _rebind_log_streams(out, err)
    app.start()


def _fork(request: dict) -> int:
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:  # forks the kernel and exits, so that the kernel is handed to the worker
        code = 0
        try:
            os.close(read)
            kernel = os.fork()
            if kernel == 0:
                os.close(write)
                try:
                    _run_kernel(request, os.getppid())
                except BaseException:  # noqa: BLE001  the kernel's log says why, and it exits
                    import traceback

                    traceback.print_exc()
                    sys.stderr.flush()
                    os._exit(1)
                os._exit(0)
            os.write(write, str(kernel).encode())
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    answer = os.read(read, 32).decode()
    os.close(read)
    os.waitpid(middle, 0)
    return int(answer)


def serve() -> None:
    """The warm process: preload, say so, then fork a kernel for each request line until stdin closes."""
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]  # as ipykernel_launcher does, before its imports: the kernel's own sys.path
    before = dict(os.environ)
    preload()
    # what the imports put in the environment (timm's import has torch set TORCHINDUCTOR_CACHE_DIR), for each kernel
    _SET_BY_PRELOADING.update({k: v for k, v in os.environ.items() if before.get(k) != v})
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            pid = _fork(json.loads(line))
        except Exception as e:  # noqa: BLE001  the worker starts that kernel the usual way
            print(f"error {e!r}", flush=True)
        else:
            print(pid, flush=True)


if __name__ == "__main__":
    serve()
