"""The library of the ``cpp`` backend (``cpu_kernels.cpp``): built once per machine, checked, loaded.

The library is compiled with ``torch.utils.cpp_extension.load`` into the torch extensions
directory (``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), which caches it across
processes; the source includes no torch headers, so a cold build takes a few seconds. Entry points
are plain C functions called through ``ctypes`` on the tensors' memory.

The instruction set is the one torch's own CPU kernels were dispatched to on this machine
(``torch.backends.cpu.get_cpu_capability()``: AVX512 or AVX2 on x86-64), named in the build's
directory, so a cache shared by machines of different capabilities never loads a build that uses
instructions a CPU lacks (``-march=native`` could: two AVX512 CPUs differ in their extensions).
``-ffp-contract=off`` keeps every multiply and add rounded separately, as in eager PyTorch; the
AdEx exponential is MKL's ``vmsExp``/``vmdExp``, which is what ``torch.exp`` runs on CPU builds of
torch with MKL (checked by the backend's ``why_not``), so the results are bit-identical to the step loop.

A cached library is mapped only if it is the very file its build recorded: after a build, the size
and SHA-256 of the library go to ``<library>.snn-record``, and a library that does not match
(truncated by an interrupted build or a full disk, overwritten, left by an older snn) is removed
and rebuilt, never loaded: ``cpp_extension.load`` itself would map it as it is, and a truncated
library kills the process with SIGBUS. If the rebuild fails, the error (and ``auto``'s warning)
says so. One process at a time checks, builds and records (a lock file in the build directory),
whose name carries a hash of the source, the flags and torch: checkouts or environments sharing a
cache never rebuild one another's library. The library answers ``snn_kernels_version()``.

Nothing in the C ABI changes without :data:`KERNELS_VERSION`.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import platform
import sys
import sysconfig
import threading
from typing import NamedTuple

import torch

from snn.errors import BackendUnavailable

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_kernels.cpp")
CFLAGS = ("-O3", "-ffp-contract=off", "-fopenmp", "-fno-math-errno")
# --no-as-needed: every MKL symbol the kernels use is weak (see cpu_kernels.cpp), and a linker
# that drops libraries only weakly referenced would leave them all unresolved.
LDFLAGS = ("-fopenmp", "-Wl,--no-as-needed") if platform.system() == "Linux" else ("-fopenmp",)
# torch's requirements for each capability (aten/src/ATen/native/DispatchStub.cpp): what it runs is
# what we may use. Other capabilities and architectures build for the compiler's baseline.
ISA_FLAGS = {
    "AVX512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq"],
    "AVX2": ["-mavx2", "-mfma"],
}
# The dtypes the kernels are built for, by the suffix of their entry points.
KERNEL_DTYPES = {torch.float32: "f32", torch.float64: "f64"}

# The version cpu_kernels.cpp's snn_kernels_version() returns: the entry points' signatures. A
# library that answers anything else is not loaded (bump both together when a signature changes).
KERNELS_VERSION = 6
# The lock file beside the build (cpp_extension takes its own, "lock", inside ours).
LOCK_NAME = "snn.lock"

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_error: str | None = None


class _LoadError(RuntimeError):
    """A failure to build or load the kernels, said in a sentence (the warning of ``auto`` quotes it)."""


class _NoCudaRuntimeNotice(logging.Filter):
    """Drops the one line torch's extension builder logs on import where ``CUDA_HOME`` exists but no
    GPU does ("No CUDA runtime is found, using CUDA_HOME=..."): our kernels are C++ for the CPU and
    never use CUDA, so on a CPU machine the line says nothing about them. Its other messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


def _cpp_extension():
    """``torch.utils.cpp_extension``, imported when a build needs it, not with this module: it takes
    about 0.1 s to import and warns on machines without CUDA, a cost for every process that uses
    ``snn.neurons`` whether it runs the ``cpp`` backend or not."""
    logger = logging.getLogger("torch.utils.cpp_extension")  # the module's own logger, made ahead of it
    if not any(isinstance(f, _NoCudaRuntimeNotice) for f in logger.filters):
        logger.addFilter(_NoCudaRuntimeNotice())
    from torch.utils import cpp_extension

    return cpp_extension


def _build_directory(name: str) -> str:
    """The directory ``cpp_extension.load`` builds ``name`` in (``TORCH_EXTENSIONS_DIR/name`` or
    the default cache's), created if missing."""
    cpp_extension = _cpp_extension()
    locate = getattr(cpp_extension, "_get_build_directory", None)
    if locate is not None:
        return locate(name, verbose=False)
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    directory = os.path.join(root, name)
    os.makedirs(directory, exist_ok=True)
    return directory


def _build_key(cflags: list[str]) -> str:
    """What a build is made from: the source (its text and path), the flags, and the torch and
    Python whose headers and libraries it is compiled and linked against."""
    digest = hashlib.sha256()
    with open(SOURCE, "rb") as f:
        digest.update(f.read())
    digest.update(repr((SOURCE, cflags, LDFLAGS, torch.__version__, os.path.dirname(torch.__file__),
                        sysconfig.get_paths().get("include"), sys.version_info[:2])).encode())
    return digest.hexdigest()


def _file_digest(path: str) -> tuple[int, str]:
    with open(path, "rb") as f:
        data = f.read()
    return len(data), hashlib.sha256(data).hexdigest()


def _cache_fault(library: str, record: str, key: str) -> str | None:
    """Why the cached ``library`` must not be loaded, or None when it is absent or is the very file
    the record written after its build describes (size and SHA-256) for this source and flags.

    ``cpp_extension.load`` rebuilds only what ninja finds out of date by timestamp and then maps the
    file: a truncated library (an interrupted build, a full disk, a copy cut short) would be mapped
    as it is and kill the process with SIGBUS, a corrupt one fail in the dynamic loader. Nothing
    here maps or executes the file: it is only read.
    """
    if not os.path.exists(library):
        return None
    try:
        with open(record) as f:
            recorded = json.load(f)
        size, digest = int(recorded["size"]), str(recorded["sha256"])
        recorded_key = str(recorded["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return "no valid build record beside it (its build was interrupted, or the record was removed)"
    if recorded_key != key:
        return "built from another source or with other flags"
    try:
        actual_size, actual_digest = _file_digest(library)
    except OSError as error:
        return f"unreadable: {error}"
    if actual_size != size:
        return f"truncated or overwritten: {actual_size} bytes where the build wrote {size}"
    if actual_digest != digest:
        return f"corrupt: its SHA-256 differs from the one recorded after its build ({actual_size} bytes)"
    return None


def _clear_build(directory: str, keep: tuple[str, ...]) -> None:
    """Removes every file of a build directory (objects, library, ninja's state) but ``keep``."""
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if entry not in keep and os.path.isfile(path):
            os.remove(path)


def _short(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[-1] if text else ''}"


class LibraryLocation(NamedTuple):
    name: str  # the extension's name (it names the build directory and the library)
    cflags: list[str]
    key: str  # the build key (_build_key): source, flags, torch and Python
    directory: str  # the build directory
    library: str  # the built library's path
    record: str  # the build record beside it (size and SHA-256 of the library, and the build key)


def library_location() -> LibraryLocation:
    """Where this machine's library is built and recorded (``TORCH_EXTENSIONS_DIR`` applies)."""
    cpp_extension = _cpp_extension()
    capability = torch.backends.cpu.get_cpu_capability()
    isa = ISA_FLAGS.get(capability, []) if platform.machine().lower() in ("x86_64", "amd64") else []
    cflags = [*CFLAGS, *isa]
    # The capability in the name: a cache shared by different CPUs never mixes builds. So does the
    # build key: checkouts or environments sharing the cache (another source path, another torch)
    # each get their own directory, instead of ninja rebuilding one library under the others' feet.
    key = _build_key(cflags)
    name = f"snn_fused_cpu_{capability.lower() if isa else 'baseline'}_{key[:16]}"
    directory = _build_directory(name)
    library = os.path.join(directory, name + getattr(cpp_extension, "LIB_EXT", ".so"))
    return LibraryLocation(name, cflags, key, directory, library, library + ".snn-record")


def _build_and_load() -> str:
    """Builds the library if needed, after checking any cached one against its build record, and
    loads it; returns its path. Raises RuntimeError with a sentence saying what went wrong."""
    cpp_extension = _cpp_extension()
    name, cflags, key, directory, library, record = library_location()

    def build() -> str:  # copies of the flag lists: cpp_extension.load appends torch's to them
        return cpp_extension.load(name=name, sources=[SOURCE], extra_cflags=list(cflags),
                                  extra_ldflags=list(LDFLAGS), build_directory=directory,
                                  is_python_module=False, verbose=False)

    with _directory_lock(directory):  # one process checks, builds and records at a time
        fault = _cache_fault(library, record, key)
        try:
            if fault is not None:
                # Never mapped: removed, so that ninja links it again (objects kept: a relink is quick).
                for path in (library, record):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)
            try:
                path = build()
            except Exception:
                if fault is None:
                    raise
                # The objects may be as damaged as the library was: once more from a clean directory.
                _clear_build(directory, keep=("lock", LOCK_NAME))
                path = build()
        except Exception as error:  # a missing compiler or ninja, a failed build or load
            if fault is not None:
                raise _LoadError(f"the cached C++ kernel library at {library} was unusable ({fault}) "
                                 f"and could not be rebuilt ({_short(error)})") from error
            raise _LoadError(f"the C++ neuron kernels could not be built or loaded ({_short(error)}; "
                             "pip install 'snn[fast]' and a C++ compiler fix a missing build)") from error
        size, digest = _file_digest(path)
        temporary = f"{record}.{os.getpid()}.tmp"
        try:  # written once the library is complete and loaded: it vouches for this very file
            with open(temporary, "w") as f:
                json.dump({"size": size, "sha256": digest, "key": key}, f)
            os.replace(temporary, record)
        except OSError:  # a read-only cache: the next process checks (and rebuilds) again
            with contextlib.suppress(OSError):
                os.remove(temporary)
    return path


@contextlib.contextmanager
def _directory_lock(directory: str):
    """An OS-level lock on the build directory (released by the kernel if its holder dies); none
    where the directory is read-only."""
    from filelock import FileLock  # only a build needs it: snn.neurons imports torch alone

    lock = FileLock(os.path.join(directory, LOCK_NAME))
    try:
        lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def load_library() -> ctypes.CDLL:
    """Builds (first time on this machine) and loads the kernels; raises RuntimeError if impossible.

    A cached library is loaded only if it is the file recorded after its build (see
    :func:`_cache_fault`); otherwise it is rebuilt, and the error says so if that fails.
    """
    global _library, _error
    with _lock:
        if _library is not None:
            return _library
        if _error is not None:
            raise BackendUnavailable(_error)
        try:
            path = _build_and_load()
            library = ctypes.CDLL(path)
            version = getattr(library, "snn_kernels_version", None)
            if version is not None:
                version.restype = ctypes.c_int
            if version is None or version() != KERNELS_VERSION:
                found = "no snn_kernels_version()" if version is None else f"version {version()}"
                raise _LoadError(f"the C++ kernel library at {path} has {found}, this snn needs version "
                                 f"{KERNELS_VERSION}")
            library.advise_huge_pages.argtypes = [ctypes.c_void_p, ctypes.c_int64]
            library.advise_huge_pages.restype = None
            library.vml_available.restype = ctypes.c_int
            library.blas_available.restype = ctypes.c_int
        except Exception as error:
            _error = str(error) if isinstance(error, _LoadError) else (
                f"the C++ neuron kernels could not be loaded ({_short(error)})")
            raise BackendUnavailable(_error) from error
        _library = library
        return _library
