"""The ``cpp`` backend: OpenMP C++ time loops (``cpu_kernels.cpp``), built once per machine.

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
torch with MKL (checked by :func:`supports`), so the results are bit-identical to the step loop.

A cached library is mapped only if it is the very file its build recorded: after a build, the size
and SHA-256 of the library go to ``<library>.snn-record``, and a library that does not match
(truncated by an interrupted build or a full disk, overwritten, left by an older snn) is removed
and rebuilt, never loaded: ``cpp_extension.load`` itself would map it as it is, and a truncated
library kills the process with SIGBUS. If the rebuild fails, the error (and ``auto``'s warning)
says so. One process at a time checks, builds and records (a lock file in the build directory),
whose name carries a hash of the source, the flags and torch: checkouts or environments sharing a
cache never rebuild one another's library. The library answers ``snn_kernels_version()``.

Every tensor is checked before its address goes to C++ (:class:`CppLoops`): dtype, device,
layout, size and strides, whoever the caller.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import platform
import sys
import sysconfig
import threading
from typing import NamedTuple

import torch

from ..constants import INTEGRATORS, broadcasts_to, check_integrator
from ..surrogate import SURROGATES
from .buffers import BufferPool
from .spec import NEURON_SPECS, saved_tensors

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_kernels.cpp")
# The surrogates the kernels implement natively, by their index in cpu_kernels.cpp.
NATIVE_SURROGATES = {"super": 0, "triangle": 1, "sigmoid": 2, "atan": 3, "tanh": 4, "heaviside": 5}
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
# Buffers from this size on are advised onto transparent huge pages before their first write.
HUGE_PAGE_BYTES = 4 << 20
# The dtypes the kernels are built for, by the suffix of their entry points.
KERNEL_DTYPES = {torch.float32: "f32", torch.float64: "f64"}

# The version cpu_kernels.cpp's snn_kernels_version() returns: the entry points' signatures. A
# library that answers anything else is not loaded (bump both together when a signature changes).
KERNELS_VERSION = 3
# The lock file beside the build (cpp_extension takes its own, "lock", inside ours).
LOCK_NAME = "snn.lock"

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_error: str | None = None


class _LoadError(RuntimeError):
    """A failure to build or load the kernels, said in a sentence (the warning of ``auto`` quotes it)."""


def _cpp_extension():
    """``torch.utils.cpp_extension``, imported when a build needs it, not with this module: it takes
    about 0.1 s to import and warns on machines without CUDA, a cost for every process that uses
    ``snn.neurons`` whether it runs the ``cpp`` backend or not."""
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
            raise RuntimeError(_error)
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
        except Exception as error:
            _error = str(error) if isinstance(error, _LoadError) else (
                f"the C++ neuron kernels could not be loaded ({_short(error)})")
            raise RuntimeError(_error) from error
        _library = library
        return _library


def supports(kind: str, dtype: torch.dtype, method: str | None) -> bool:
    """Whether the kernels cover this case. The AdEx exponential must be torch.exp's own, MKL's
    VML (the sigmoid and tanh surrogates use it too): those cases need a torch with MKL whose VML
    functions the built library found (they are weak symbols, so LIF and LI run without them)."""
    if dtype not in (torch.float32, torch.float64):
        return False
    if method is not None and (method not in NATIVE_SURROGATES or SURROGATES.get(method) is not _BUILTIN[method]):
        return False  # a user-registered (or overwritten) surrogate
    if kind != "adex" and method not in ("sigmoid", "tanh"):
        return True
    if not torch.backends.mkl.is_available():
        return False
    try:
        return bool(load_library().vml_available())
    except RuntimeError:
        return True  # no library at all: resolve_backend reports that (or falls back) itself


_BUILTIN = dict(SURROGATES)  # the registry as shipped, to detect overwritten built-in names


def _address(t: torch.Tensor) -> int:
    """``t``'s data pointer, refused when it is null but values would be read there (a tensor
    without memory, like autograd's efficient zero tensors)."""
    address = t.data_ptr()
    if address == 0 and t.numel() > 0:
        raise ValueError(f"snn's C++ kernels cannot take a {t.dtype} tensor of shape {list(t.shape)} "
                         "without memory (an efficient zero tensor?); pass a materialised one (.clone()).")
    return address


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(_address(t))


# ---------------------------------------------------------------- what the kernels may be handed
# The last check before C++ reads or writes raw memory: every pointer argument is a CPU tensor of
# the kernels' dtype, dense, with its values at the addresses the kernel computes (contiguous, or
# rows within the tensor's storage) and exactly as many values as the kernel touches. Plain
# attribute comparisons: nothing here reads the data or waits for a device. Layers never fail
# these (snn.neurons.fused.function checks their arguments first, with friendlier messages); they
# stand between C++ and any other caller.


def _refuse(what: str, t: torch.Tensor, need: str) -> ValueError:
    return ValueError(f"snn's C++ kernels cannot take {what}: it is a {t.dtype} tensor of shape "
                      f"{list(t.shape)} on {t.device} (layout {t.layout}); they need {need}.")


def _dense(t: torch.Tensor, what: str, dtype: torch.dtype) -> torch.Tensor:
    """``t`` if the kernels can read its memory as ``dtype`` values (a CPU tensor of that dtype
    with the strided layout), with a pending negation applied; else a ValueError."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"snn's C++ kernels cannot take {what}: a {type(t).__name__}, not a tensor.")
    if t.dtype != dtype or not t.is_cpu or t.layout != torch.strided:
        raise _refuse(what, t, f"a dense {dtype} tensor on the CPU")
    return t.resolve_neg() if t.is_neg() else t  # a lazy negation (z.conj().imag) lives in a bit, not in memory


def _block(t: torch.Tensor, what: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
    """``t`` as ``numel`` contiguous ``dtype`` values on the CPU (a contiguous copy if it is a
    strided view); a ValueError for another dtype, device, layout or size."""
    t = _dense(t, what, dtype)
    if t.numel() != numel:
        raise _refuse(what, t, f"{numel} values")
    return t if t.is_contiguous() else t.contiguous()


def _check_rows(rows: torch.Tensor, ts: int, ns: int, steps: int, M: int, what: str) -> None:
    """The kernels read ``rows[t * ts + n * ns]`` for t < steps, n < M: all inside its storage."""
    if steps == 0 or M == 0:
        return
    last = (steps - 1) * ts + (M - 1) * ns
    available = rows.untyped_storage().nbytes() // rows.element_size() - rows.storage_offset()
    if ts < 0 or ns not in (0, 1) or last >= available:
        raise _refuse(what, rows, f"[{steps}, {M}] values at strides ({ts}, {ns}) within its "
                                  f"{available} stored values")


def _rows(t: torch.Tensor, steps: int, M: int, what: str = "the input") -> tuple[torch.Tensor, int, int]:
    """``t [T, ...]`` as ``(tensor, time stride, neuron stride)`` of a ``[T, M]`` view: no copy when
    the neurons of a step are contiguous (an input broadcast over time included) or one value (the
    gradient of ``outputs.sum()``); a contiguous copy otherwise. Checked like every argument."""
    if t.dim() < 1 or t.shape[0] != steps or t.numel() != steps * M:
        raise _refuse(what, t, f"{steps} steps of {M} values")
    try:
        rows = t.view(steps, M)
    except RuntimeError:
        rows = None
    if rows is not None and (M == 1 or rows.stride(1) in (0, 1)):
        rows, ts, ns = rows, rows.stride(0), 1 if M == 1 else rows.stride(1)
    else:
        rows, ts, ns = t.contiguous(), M, 1
    _check_rows(rows, ts, ns, steps, M, what)
    return rows, ts, ns


def _advise_huge_pages(buffer: torch.Tensor) -> None:
    """Large fresh buffers on huge pages: one page fault per 2 MiB instead of per 4 KiB."""
    nbytes = buffer.numel() * buffer.element_size()
    if nbytes >= HUGE_PAGE_BYTES:
        load_library().advise_huge_pages(buffer.data_ptr(), nbytes)


# The kernels' large output, saved and gradient buffers, shared by all layers of the process.
BUFFERS = BufferPool(on_new=_advise_huge_pages)


# What each argument is called in a refusal, made once: formatting strings per call costs more
# than the checks themselves.
_WHAT = {kind: (tuple(f"state.{name}" for name in spec.state),
                tuple(f"the gradient of state.{name}" for name in spec.state))
         for kind, spec in NEURON_SPECS.items()}
_SAVED_WHAT = tuple(f"saved tensor {k}" for k in range(8))


def _integrator(kind: str, integrator: str) -> list:
    """The integrator argument of the AdEx entry points (its index in ``INTEGRATORS``; none for LIF
    and LI)."""
    if kind != "adex":
        return []
    return [ctypes.c_int(INTEGRATORS.index(check_integrator(integrator)))]


class CppLoops:
    """The C++ kernels behind the interface of :class:`~snn.neurons.fused.torch_loops.TorchLoops`.

    Every tensor is checked (or made contiguous) before its address goes to C++: see :func:`_dense`,
    :func:`_block` and :func:`_rows`.
    """

    def __init__(self):
        self.lib = load_library()

    @staticmethod
    def _empty(shape, like: torch.Tensor) -> torch.Tensor:
        """A buffer for the kernels to fill (reused from earlier calls when free, see buffers.py)."""
        return BUFFERS.empty(shape, like.dtype, like.device)

    def _function(self, name: str, dtype: torch.dtype):
        return getattr(self.lib, f"{name}_{KERNEL_DTYPES[dtype]}")

    @staticmethod
    def _kernel_dtype(x: torch.Tensor, what: str) -> torch.dtype:
        if not isinstance(x, torch.Tensor) or x.dtype not in KERNEL_DTYPES:
            got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"
            raise ValueError(f"snn's C++ kernels run in float32 or float64; {what} is {got}.")
        return x.dtype

    @staticmethod
    def _params(P, neuron_shape, dtype):
        """Pointer and per-neuron flag arrays; ``keep`` holds the tensors alive during the call."""
        keep = []
        for k, p in enumerate(P):  # (called under no_grad: no detach needed)
            if not (isinstance(p, torch.Tensor) and p.dtype == dtype and p.is_cpu and p.layout == torch.strided
                    and not p.is_neg()):  # else the slow path: resolved, or refused by name
                p = _dense(p, f"kernel parameter {k}", dtype)
            if p.numel() == 1:
                p = p.reshape(1)  # one value (flag 0): contiguous whatever its strides were
            elif broadcasts_to(p.shape, neuron_shape):
                p = p.expand(neuron_shape).contiguous()  # one value per neuron (flag 1), in their order
            else:
                raise _refuse(f"kernel parameter {k}", p, f"one value or a shape broadcasting to {list(neuron_shape)}")
            keep.append(p)
        ptrs = (ctypes.c_void_p * len(keep))(*[_address(t) for t in keep])
        flags = (ctypes.c_int64 * len(keep))(*[int(t.numel() != 1) for t in keep])
        return keep, ptrs, flags

    @staticmethod
    def _counts(kind, state, P, what: str = "state"):
        spec = NEURON_SPECS[kind]
        if len(state) != len(spec.state) or len(P) != len(spec.params):
            raise ValueError(f"snn's C++ kernels for {kind!r} take {len(spec.state)} {what} tensors and "
                             f"{len(spec.params)} parameters, got {len(state)} and {len(P)}.")
        return spec

    def forward(self, kind, x, state, P, save, save_extra, integrator="euler"):
        spec = self._counts(kind, state, P)
        dtype = self._kernel_dtype(x, "the input")
        x = _dense(x, "the input", dtype)
        if x.dim() < 1:
            raise _refuse("the input", x, "a time dimension first")
        steps, neuron_shape = x.shape[0], x.shape[1:]
        M = neuron_shape.numel()
        xr, x_ts, x_ns = _rows(x, steps, M)
        # Updated in place to the final state: fresh contiguous copies.
        state = [_block(s.detach(), what, dtype, M).clone() for what, s in zip(_WHAT[kind][0], state, strict=True)]
        keep, ptrs, flags = self._params(P, neuron_shape, dtype)
        # Written by the kernels: fresh (or pooled) contiguous CPU tensors of the input's checked dtype.
        out = self._empty(x.shape, x)
        vd = self._empty(x.shape, x) if save and spec.spiking else None
        extra = [self._empty(x.shape, x) for _ in range(spec.extra if save_extra else 0)]
        args = [ctypes.c_int64(steps), ctypes.c_int64(M), _ptr(xr), ctypes.c_int64(x_ts), ctypes.c_int64(x_ns),
                *map(_ptr, state), ptrs, flags, *_integrator(kind, integrator), _ptr(out)]
        if spec.spiking:
            args.append(_ptr(vd))
        args += [_ptr(e) for e in extra] or [None] * spec.extra
        self._function(f"{kind}_forward", dtype)(*args, ctypes.c_int(torch.get_num_threads()))
        del keep
        return out, tuple(state), saved_tensors(kind, out, vd, extra, save_extra)

    def backward(self, kind, gout, gstate, saved, v0, P, method, alpha, param_grads, integrator="euler"):
        spec = self._counts(kind, gstate, P, "state gradient")
        if spec.spiking and method not in NATIVE_SURROGATES:
            raise ValueError(f"snn's C++ kernels have no surrogate {method!r}.")
        dtype = self._kernel_dtype(v0, "the initial voltage")
        neuron_shape = v0.shape
        M = neuron_shape.numel()
        if gout is not None:
            gout = _dense(gout, "the output gradient", dtype)
        steps_from = gout if gout is not None else saved[0] if saved else None
        if steps_from is None or steps_from.dim() < 1:
            raise ValueError("snn's C++ kernels: backward needs the output gradient or a saved tensor [T, ...].")
        steps = steps_from.shape[0]
        g_ts, g_ns = M, 1
        if gout is not None:
            gout, g_ts, g_ns = _rows(gout, steps, M, "the output gradient")
        # in: final-state gradients; out: initial-state gradients (fresh contiguous copies)
        gstate = [_block(g, what, dtype, M).clone() for what, g in zip(_WHAT[kind][1], gstate, strict=True)]
        # Saved tensors come back through autograd (and any saved-tensor hooks): checked again.
        expected = (spec.extra + (kind == "li") if param_grads else 0) + spec.spiking
        if len(saved) != expected:
            raise ValueError(f"snn's C++ kernels: {len(saved)} saved tensors for {kind!r}, expected {expected}.")
        saved = [_block(s, what, dtype, steps * M) for what, s in zip(_SAVED_WHAT, saved, strict=False)]
        keep, ptrs, flags = self._params(P, neuron_shape, dtype)
        v0 = _block(v0.detach(), "the initial voltage", dtype, M)
        # Written by the kernels: fresh (or pooled) contiguous CPU tensors of the checked dtype and size.
        gx = self._empty((steps,) + tuple(neuron_shape), v0)
        gp = v0.new_zeros((len(P), M)) if param_grads else None  # the kernels add to it
        window = [] if kind == "li" else [ctypes.c_int64(0)]  # AdEx and LIF: down to step t_stop = 0
        args = [ctypes.c_int64(steps), *window, ctypes.c_int64(M), _ptr(gout), ctypes.c_int64(g_ts),
                ctypes.c_int64(g_ns), *map(_ptr, gstate)]
        if kind == "li":
            outs, ij = (saved[1], saved[0]) if param_grads else (None, None)
            args += [_ptr(outs), _ptr(v0), _ptr(ij), ptrs, flags]
        else:
            extra = saved[1:] if param_grads else [None] * spec.extra
            args += [_ptr(saved[0]), _ptr(v0), *map(_ptr, extra), ptrs, flags, *_integrator(kind, integrator),
                     ctypes.c_int(NATIVE_SURROGATES[method]), ctypes.c_double(alpha)]
        self._function(f"{kind}_backward", dtype)(*args, _ptr(gx), _ptr(gp), ctypes.c_int(torch.get_num_threads()))
        del keep
        G = None if gp is None else [g.view(neuron_shape) for g in gp]
        return gx, tuple(gstate), G
