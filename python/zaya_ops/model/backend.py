"""Per-op backend choice of the model: compiled kernel (``zaya_ops.ops``) or pure-PyTorch reference
(``zaya_ops.reference``).

``"reference"`` runs every op's reference, ``"ops"`` every compiled kernel (a missing kernel raises
NotImplementedError), ``"auto"`` each op's kernel when it exists for the device (and the shapes are within
the kernels' limits) and passes its self-check, else the reference. Before an op's kernel first runs under
"auto", :func:`zaya_ops.selftest`'s gate checks it against the reference on small cases (once per process,
op, dtype, device and kernel namespace; ``ZAYA_SELFTEST=0`` skips it); a kernel that fails runs on the
reference instead, with one warning, and :meth:`OpBackend.report` says ``reference (self-check failed:
...)``. Whether a kernel exists is learnt from the first call of the op on a (kernel namespace, device
type, dtype): a missing kernel raises NotImplementedError before touching its arguments, and the answer is
remembered for the process.

The callers (the model, the transformers integration) make their index metadata themselves and validate
it there (``ZayaCache.validate_batch``, once per change of batch; the integration builds it from aranges),
so kernel calls pass ``_prevalidated=True`` and skip the wrappers' per-call index check, which would read
values on the host: a decode step makes no device-to-host sync.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .. import _selftest
from .. import ops as _ops
from .. import reference as _reference
from .config import KERNEL_HEAD_DIMS

__all__ = ["OP_NAMES", "BACKENDS", "OpBackend"]

OP_NAMES = ("rms_norm", "residual_scale_rmsnorm", "cca_qkv", "cca_qkv_functional", "cca_attention", "router",
            "moe_top1")
BACKENDS = ("auto", "ops", "reference")
_ATTENTION_OPS = ("cca_qkv", "cca_qkv_functional", "cca_attention")
_INDEX_OPS = ("cca_qkv", "cca_qkv_functional", "cca_attention", "moe_top1")  # the wrappers that check index values


def _kernel(name: str) -> Callable:
    """Op ``name``'s wrapper (compiled kernel), without its index check for the ops that have one."""
    fn = getattr(_ops, name)
    return functools.partial(fn, _prevalidated=True) if name in _INDEX_OPS else fn


# (op, kernel namespace, device type, dtype) -> whether the compiled kernel exists; shared by all models of
# the process. The namespace is zaya_ops.ops._OPS's (tests route it to the emulators on CPU tensors).
_KERNEL_EXISTS: dict[tuple[str, str, str, torch.dtype], bool] = {}


class OpBackend:
    """Calls each op on the chosen backend and records which one ran.

    Args:
        backend: "auto", "ops" or "reference".
        device, dtype: the model's.
        head_dim: the model's head dim; outside :data:`KERNEL_HEAD_DIMS` the attention ops use the
            reference under "auto" and are rejected (ValueError) under "ops".
    """

    def __init__(self, backend: str, device: torch.device, dtype: torch.dtype, head_dim: int) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.device = torch.device(device)
        self.dtype = dtype
        self._static_ref: dict[str, str] = {}
        if head_dim not in KERNEL_HEAD_DIMS:
            if backend == "ops":
                raise ValueError(f"backend='ops' needs head_dim in {KERNEL_HEAD_DIMS} (the cca_qkv/cca_attention "
                                 f"kernels' limits), the model has {head_dim}: use backend='auto' or 'reference'")
            for name in _ATTENTION_OPS:
                self._static_ref[name] = f"head_dim {head_dim} outside the kernels' {KERNEL_HEAD_DIMS}"
        self.ran: dict[str, str] = {}  # op -> "kernel" | "reference", of the calls made so far
        self._failed: dict[str, str] = {}  # op -> why its kernel failed the self-check
        self._fns: dict[str, tuple[Callable, str]] = {}  # op -> (function, "kernel" | "reference")
        for name in OP_NAMES:
            # A model-specific reason for the reference (head dim) wins over what another model learnt
            # about the kernel's existence for this device and dtype.
            if backend == "reference" or name in self._static_ref:
                self._fns[name] = (getattr(_reference, name), "reference")
            elif backend == "ops":
                self._fns[name] = (_kernel(name), "kernel")
            # "auto": decided at the op's first call (kernel existence, self-check; both cached per process)

    def _key(self, name: str) -> tuple[str, str, str, torch.dtype]:
        return (name, getattr(_ops._OPS, "name", "zaya"), self.device.type, self.dtype)

    def _known(self, name: str) -> bool | None:
        return _KERNEL_EXISTS.get(self._key(name))

    def _use(self, name: str, how: str) -> Callable:
        fn = _kernel(name) if how == "kernel" else getattr(_reference, name)
        self._fns[name] = (fn, how)
        self.ran[name] = how
        return fn

    def _resolve(self, name: str) -> Callable | None:
        """"auto", first call of op ``name``: the reference when the kernel is known missing or fails its
        self-check, the kernel when it is known to exist, None when only a call can tell."""
        known = self._known(name)
        if known is False:
            return self._use(name, "reference")
        failure = _selftest.gate(name, self.device, self.dtype)
        if failure is not None:
            self._failed[name] = failure
            return self._use(name, "reference")
        return self._use(name, "kernel") if known else None

    def self_check(self) -> dict[str, str]:
        """Settle every op now (under "auto": run the self-check of each op that may use a kernel), rather
        than at its first call: call it before capturing a CUDA graph or compiling. Returns
        :meth:`report`."""
        if self.backend == "auto":
            for name in OP_NAMES:
                if name not in self._fns and self._known(name) is not False:
                    failure = _selftest.gate(name, self.device, self.dtype)
                    if failure is not None:
                        self._failed[name] = failure
                        self._use(name, "reference")
        return self.report()

    def __call__(self, name: str, *args, **kwargs):
        """Run op ``name`` with the wrapper's arguments."""
        chosen = self._fns.get(name)
        if chosen is not None:
            fn, how = chosen
            if name not in self.ran:
                self.ran[name] = how
            return fn(*args, **kwargs)
        fn = self._resolve(name)
        if fn is not None:
            return fn(*args, **kwargs)
        # "auto", the kernel passed its self-check (or was not checked), existence unknown: try it.
        try:
            out = _kernel(name)(*args, **kwargs)
        except NotImplementedError:
            _KERNEL_EXISTS[self._key(name)] = False
            return self._use(name, "reference")(*args, **kwargs)
        _KERNEL_EXISTS[self._key(name)] = True
        self._use(name, "kernel")
        return out

    def report(self) -> dict[str, str]:
        """Op -> what ran it: ``"kernel (cpu)"``, ``"reference (<why>)"`` or ``"not run yet"``."""
        out = {}
        dev = self.device.type
        for name in OP_NAMES:
            how = self.ran.get(name)
            if how is None:
                out[name] = "not run yet"
            elif how == "kernel":
                out[name] = f"kernel ({dev})"
            elif self.backend == "reference":
                out[name] = "reference (backend='reference')"
            elif name in self._static_ref:
                out[name] = f"reference ({self._static_ref[name]})"
            elif name in self._failed:
                out[name] = f"reference (self-check failed: {self._failed[name]})"
            else:
                out[name] = f"reference (no {dev} {str(self.dtype).replace('torch.', '')} kernel)"
        return out
