"""Where the edge's numba kernels come from: compiled ahead of time, or by numba's JIT.

Every kernel module decorates its loops with ``@kernel`` instead of ``@njit``. With a kernel module built by
``twin edge compile`` (``edge.compile``) for these very sources, the agent calls that compiled extension and
never imports numba: no LLVM in the process, which is most of a JIT agent's memory (`twin bench edge`: 164 MB
RSS on the JIT, 59 MB on a build) and its first-tick compile. Without one, ``@kernel`` is exactly
``@njit(cache=True, nogil=True)``.

``TWIN_KERNELS`` chooses: ``auto`` (default: ahead of time when a fresh build is there, JIT otherwise),
``jit``, or ``aot`` (a build is required; a call no build covers raises instead of falling back — what the
tests use to prove the build covers the agent). ``TWIN_KERNEL_DIR`` is where builds live (default
``edge/_aot`` beside this file).

An ahead-of-time function trusts its argument types blindly (a wrong dtype is a crash, not an error), so
each call's argument types are checked against the signatures built; a call no build covers switches every
kernel to the JIT for the rest of the process — slower to start and heavier, never wrong — and says so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("edge.kernels")

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
MODULE_NAME = "_twin_edge_kernels"
MANIFEST = "kernels.json"
JIT_OPTIONS = {"cache": True, "nogil": True}
_LAYOUT_FLAGS = 0x1 | 0x2 | 0x400  # NPY_ARRAY_C_CONTIGUOUS | F_CONTIGUOUS | WRITEABLE: what numba's array type holds
_BOOL, _INT, _FLOAT = np.dtype(np.bool_).str, np.dtype(np.int64).str, np.dtype(np.float64).str  # numba's typeof

_registry: dict[str, Kernel] = {}
_state: dict[str, Any] = {"mode": None, "module": None, "manifest": None, "fallback": None}
_switch = threading.Lock()


def kernel_dir() -> Path:
    return Path(os.environ.get("TWIN_KERNEL_DIR") or Path(__file__).resolve().parent / "_aot")


def sources_digest(files: list[str]) -> str:
    """One hash over the kernel sources a build was made from (paths relative to the package root)."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode())
        h.update((PACKAGE_ROOT / rel).read_bytes())
    return h.hexdigest()


def type_key(value: Any) -> str:
    """A call argument's type as numba would type it, in a form both the build and the runtime compute."""
    if isinstance(value, np.ndarray):
        f = value.flags
        layout = "C" if f.c_contiguous else "F" if f.f_contiguous else "A"
        return f"{value.dtype.str}{value.ndim}{layout}{'' if f.writeable else 'r'}"
    if isinstance(value, (bool, np.bool_)):
        return _BOOL
    if isinstance(value, int):
        return _INT
    if isinstance(value, float):
        return _FLOAT
    if isinstance(value, np.generic):
        return value.dtype.str
    return type(value).__name__


def mode() -> str:
    """``aot`` or ``jit``: decided once per process, on the first kernel defined."""
    if _state["mode"] is None:
        _state["mode"] = _choose_mode()
    return _state["mode"]


def ahead_of_time() -> bool:
    """True while this process runs the built kernels (not before a build, nor after a fall back to the JIT)."""
    return mode() == "aot" and _state["fallback"] is None


def status() -> dict[str, Any]:
    """For the agent's health: which kernels run, and why the JIT took over if it did."""
    return {"mode": mode(), "fallback": _state["fallback"]}


def _choose_mode() -> str:
    wanted = os.environ.get("TWIN_KERNELS", "auto").lower()
    if wanted not in ("auto", "jit", "aot"):
        raise ValueError(f"TWIN_KERNELS={wanted!r}: expected auto, jit or aot")
    if wanted == "jit":
        return "jit"
    why = load_build()
    if why is None:
        log.info("kernels compiled ahead of time: %s", _state["module"].__file__)
        return "aot"
    if wanted == "aot":
        raise RuntimeError(f"TWIN_KERNELS=aot but {why}; run `twin edge compile`")
    log.info("kernels by numba's JIT: %s", why)
    return "jit"


def load_build() -> str | None:
    """Import the build if it is there and made from these sources; else say why not (None: loaded)."""
    root = kernel_dir()
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        return f"no kernel build in {root}"
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("python") != sys.implementation.cache_tag:
            return f"the kernel build in {root} is for {manifest.get('python')}, not {sys.implementation.cache_tag}"
        if manifest.get("numpy", "").split(".")[0] != np.__version__.split(".")[0]:
            return f"the kernel build in {root} is for numpy {manifest.get('numpy')}, not {np.__version__}"
        if manifest["digest"] != sources_digest(manifest["sources"]):
            return f"the kernel build in {root} is stale (the kernel sources changed since)"
        path = root / manifest["file"]
        spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
        if spec is None or spec.loader is None:
            return f"cannot load {path}"
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        return f"the kernel build in {root} is unusable ({exc})"
    _state["module"], _state["manifest"] = module, manifest
    return None


class Kernel:
    """A kernel as the agent calls it in ``aot`` mode: the compiled function for these argument types."""

    def __init__(self, fn: Callable, options: dict[str, Any]) -> None:
        self.py_func = fn
        self.options = options
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        exports = _state["manifest"]["kernels"].get(self.name, {})
        self._by_key = {tuple(k.split(",")): getattr(_state["module"], e) for k, e in exports.items()}
        self._seen: dict[tuple, Callable] = {}
        self._jit: Callable | None = None

    def __call__(self, *args: Any) -> Any:
        if self._jit is not None:
            return self._jit(*args)
        # On the hot path: the exact key (``type_key``) put ~10 µs on a 14-argument call, this one ~4 µs (numba's
        # own dispatcher ~1 µs). It decides the same thing (dtype, rank, layout and writability of arrays; the
        # type of scalars), so the exact key is computed once per combination seen.
        seen = tuple([(a.dtype, a.ndim, a.flags.num & _LAYOUT_FLAGS) if type(a) is np.ndarray else type(a)
                      for a in args])
        fn = self._seen.get(seen)
        if fn is None:
            key = tuple(type_key(a) for a in args)
            fn = self._by_key.get(key)
            if fn is None:
                _fall_back_to_jit(self, key)
                return self._jit(*args)  # type: ignore[misc]
            self._seen[seen] = fn
        return fn(*args)


def kernel(fn: Callable | None = None, **options: Any) -> Any:
    """``@kernel`` or ``@kernel(inline="always")``: a numba kernel, ahead of time when built."""
    if fn is None:
        return lambda f: kernel(f, **options)
    if mode() == "jit":
        from numba import njit

        return njit(**JIT_OPTIONS, **options)(fn)
    k = Kernel(fn, options)
    _registry[k.name] = k
    return k


def _fall_back_to_jit(missed: Kernel, key: tuple[str, ...]) -> None:
    """Every kernel to the JIT, module globals included, so kernels calling kernels compile together."""
    if os.environ.get("TWIN_KERNELS", "auto").lower() == "aot":
        raise TypeError(f"kernel {missed.name} called with ({', '.join(key)}), which the ahead-of-time build "
                        "does not cover (TWIN_KERNELS=aot)")
    from numba import njit

    with _switch:
        if missed._jit is not None:
            return  # another thread switched first
        _state["fallback"] = f"{missed.name}({', '.join(key)}) is not in the ahead-of-time build"
        log.warning("kernels switch to numba's JIT: %s; rebuild with `twin edge compile`", _state["fallback"])
        jitted = {k.name: njit(**JIT_OPTIONS, **k.options)(k.py_func) for k in _registry.values()}
        for k in _registry.values():
            module = sys.modules[k.py_func.__module__]
            if getattr(module, k.__name__, None) is k:
                setattr(module, k.__name__, jitted[k.name])
        for k in _registry.values():  # last: a caller sees the JIT only once every global is a dispatcher
            k._jit = jitted[k.name]
