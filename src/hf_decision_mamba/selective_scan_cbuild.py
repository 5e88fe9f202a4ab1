"""Build and load the fused CPU kernels' C library: compiled on first use with the system C compiler, cached
per user (keyed by a hash of the source, compiler, flags and CPU), loaded with `ctypes`.

`load_c_lib()` returns the library or None (then `c_failed()` says why); `c_openmp_here()` tells whether it
runs on this process's OpenMP pool. Standard library only (Hub remote code)."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading

from .selective_scan_csrc import c_source

_CACHE_ENV = "HF_DECISION_MAMBA_CACHE"  # folder for the compiled C kernel
_C_COMPILE_FLAGS = ["-O3", "-ffast-math", "-ffp-contract=fast", "-fPIC", "-std=c99"]
_c_lock = threading.Lock()
_c_lib: ctypes.CDLL | None = None
_c_failed: str | None = None
_c_openmp = False  # the loaded library parallelises with OpenMP, on the process's only OpenMP runtime
_c_pid = 0  # process that loaded it (OpenMP pools do not survive fork)


def _private_dir(path: str) -> bool:
    """True when `path` is a folder we own that nobody else can write to (a shared /tmp must not let
    another user plant the library we are about to load)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return False
    return not (st.st_mode & 0o022)


def _cache_dir() -> str:
    """Per-user folder for the compiled kernel: $HF_DECISION_MAMBA_CACHE, else ~/.cache/..., else /tmp/...<uid>."""
    root = os.environ.get(_CACHE_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "hf_decision_mamba", "selective_scan")
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        if os.access(root, os.W_OK):
            return root
    except OSError:
        pass
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    root = os.path.join(tempfile.gettempdir(), f"hf_decision_mamba_{uid}")
    os.makedirs(root, mode=0o700, exist_ok=True)
    if not _private_dir(root):
        raise OSError(f"{root} is not a private folder; set {_CACHE_ENV}")
    return root


def _cpu_identity() -> str:
    """What -march=native depends on, so that a shared cache folder never serves a foreign binary."""
    ident = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    ident.append(line.strip())
                if line.strip() == "":
                    break  # the first processor is enough
    except OSError:
        ident.append(platform.processor())
    return "\n".join(ident)


def _find_compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name:
            path = shutil.which(name)
            if path:
                return path
    return None


def _compile_c(cc: str, src_path: str, lib_path: str, flags: list[str]) -> None:
    """Compile then link in two steps, so that -ffast-math never links crtfastmath (which would flip the
    process-wide denormal flags)."""
    obj = lib_path + ".o"
    subprocess.run(
        [cc, *flags, "-c", src_path, "-o", obj],
        check=True,
        capture_output=True,
        timeout=120,
    )
    link = [cc, "-shared", obj, "-o", lib_path, "-lm"] + (["-fopenmp"] if "-fopenmp" in flags else [])
    subprocess.run(link, check=True, capture_output=True, timeout=120)
    os.remove(obj)


def _one_openmp_runtime() -> bool:
    """True when a single OpenMP runtime is mapped in this process (Linux), i.e. the kernel's OpenMP threads
    are torch's. With two runtimes (torch built against another one) the pools would compete for cores."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            names = {line.split()[-1] for line in f if "omp" in line.rsplit("/", 1)[-1]}
    except OSError:
        return False
    runtimes = {
        os.path.realpath(n) for n in names if os.path.basename(n).startswith(("libgomp", "libiomp", "libomp"))
    }
    return len(runtimes) == 1


def _declare(lib: ctypes.CDLL) -> None:
    vp, lg = ctypes.c_void_p, ctypes.c_long
    for sfx in ("f32", "f64"):
        fwd = getattr(lib, f"ssm_fwd_{sfx}")
        fwd.argtypes = [vp] * 13 + [lg] * 4
        fwd.restype = ctypes.c_int
        bwd = getattr(lib, f"ssm_bwd_{sfx}")
        bwd.argtypes = [vp] * 19 + [lg] * 5
        bwd.restype = ctypes.c_int
        conv_fwd = getattr(lib, f"conv_fwd_{sfx}")
        conv_fwd.argtypes = [vp, lg, lg, vp, vp, vp] + [lg] * 4 + [ctypes.c_int, vp, lg]
        conv_fwd.restype = ctypes.c_int
        conv_bwd = getattr(lib, f"conv_bwd_{sfx}")
        conv_bwd.argtypes = [vp, lg, lg, vp, vp, vp, vp, vp, vp] + [lg] * 4 + [ctypes.c_int, vp, lg]
        conv_bwd.restype = ctypes.c_int
        drop = getattr(lib, f"dropout_{sfx}")
        drop.argtypes = [vp, vp, vp, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_double, vp, lg]
        drop.restype = ctypes.c_int
    lib.ssm_has_openmp.argtypes = []
    lib.ssm_has_openmp.restype = ctypes.c_int


def load_c_lib() -> ctypes.CDLL | None:
    """Compile (once per machine, cached) and load the C kernel; None when no compiler works."""
    global _c_lib, _c_failed, _c_openmp, _c_pid
    if _c_lib is not None or _c_failed is not None:
        return _c_lib
    with _c_lock:
        if _c_lib is not None or _c_failed is not None:
            return _c_lib
        cc = _find_compiler()
        if cc is None:
            _c_failed = "no C compiler found (set CC)"
            return None
        source = c_source()
        errors = []
        # OpenMP first: linked against libgomp.so.1, the library shares torch's already-loaded OpenMP
        # runtime and thread pool, so the scan's threads are torch's threads (no oversubscription)
        variants = (
            _C_COMPILE_FLAGS + ["-march=native", "-fopenmp"],
            _C_COMPILE_FLAGS + ["-march=native"],
            _C_COMPILE_FLAGS,
        )
        for flags in variants:
            key = hashlib.sha256("\0".join([source, cc, *flags, _cpu_identity()]).encode()).hexdigest()[:20]
            try:
                folder = _cache_dir()
                lib_path = os.path.join(folder, f"selective_scan_{key}.so")
                if not os.path.exists(lib_path):
                    tmp = tempfile.mkdtemp(dir=folder, prefix="build_")
                    try:
                        src_path = os.path.join(tmp, "selective_scan.c")
                        with open(src_path, "w", encoding="utf-8") as f:
                            f.write(source)
                        tmp_lib = os.path.join(tmp, "selective_scan.so")
                        _compile_c(cc, src_path, tmp_lib, flags)
                        os.replace(tmp_lib, lib_path)  # atomic: concurrent processes never see half a file
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
                lib = ctypes.CDLL(lib_path)
                _declare(lib)
                _c_openmp, _c_pid = bool(lib.ssm_has_openmp()) and _one_openmp_runtime(), os.getpid()
                _c_lib = lib
                return lib
            except (OSError, subprocess.SubprocessError, AttributeError) as exc:
                detail = getattr(exc, "stderr", b"") or b""
                errors.append(f"{exc} {detail.decode(errors='replace')[-500:]}")
        _c_failed = "; ".join(errors)
        return None


def c_failed() -> str | None:
    """Why the C library could not be built or loaded (None when it loaded, or was not tried yet)."""
    return _c_failed


def c_openmp_here() -> bool:
    """True when the loaded library parallelises on this process's OpenMP pool (not a forked child's copy)."""
    return _c_openmp and os.getpid() == _c_pid


def c_kernel(name: str, double: bool):
    """The loaded C entry point `name_f64` (double) or `name_f32`."""
    return getattr(_c_lib, f"{name}_{'f64' if double else 'f32'}")
