"""Loads the compiled library (zaya_ops._C), which registers torch.ops.zaya and its kernels."""

from __future__ import annotations

import torch

_REBUILD = (
    "Rebuild zaya_ops against the torch you run: "
    "`pip install --no-build-isolation --force-reinstall --no-deps .` from the zaya_ops source tree "
    "(or `ZAYA_BACKENDS=cpu ...` for a quick CPU-only build)."
)

try:
    from . import _C  # noqa: E402  (must follow `import torch`: it links against torch's libraries)
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        f"zaya_ops: could not load the compiled library zaya_ops._C ({exc}). "
        f"It may be missing (not built) or built for another torch. {_REBUILD}"
    ) from exc

_INFO = dict(_C.build_info())


def _base_version(v: str) -> str:
    return v.split("+")[0]


if _base_version(_INFO["torch_version"]) != _base_version(torch.__version__):
    raise ImportError(
        f"zaya_ops was built against torch {_INFO['torch_version']} but torch {torch.__version__} is "
        f"installed; the compiled ops are tied to one torch ABI. {_REBUILD}"
    )


def build_info() -> dict:
    """What this build of zaya_ops contains.

    Returns a dict with ``backends`` (compiled kernel backends: "cpu", and "cuda" or "hip"),
    ``cuda_archs`` / ``hip_archs`` (the architecture lists compiled to machine code), ``cuda_ptx``
    (the PTX embedded beside them, e.g. ``["compute_80"]``, which the driver compiles for a GPU the
    list does not name, such as sm_100 or sm_120), ``torch_version`` (the torch
    this build was made against), ``torch_runtime`` (the torch now imported) and ``cxx_compiler``.
    """
    info = dict(_INFO)
    info["backends"] = list(info["backends"])
    info["torch_runtime"] = torch.__version__
    return info


class _Switch:
    """A kernel-selection switch in every compiled module of this process (``_C`` and the emulator
    modules, each of which keeps its own), set through each module's ``set_<name>`` (``_C._set_<name>``).

    ``state``: True selects, False deselects, None follows the switch's environment variable (read once
    per process, at the next launch). The launchers read the switch itself, never the environment, at
    each launch. Tests and the benchmark's providers set it (``monkeypatch.setattr(switch, "state", True)``
    restores it afterwards).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._state: bool | None = None

    def _setters(self) -> list:
        setters = [getattr(_C, f"_set_{self._name}")]
        for mod_name in ("_emu_w32", "_emu_w64"):
            try:
                mod = __import__(f"zaya_ops.{mod_name}", fromlist=[f"set_{self._name}"])
            except ImportError:
                continue
            setters.append(getattr(mod, f"set_{self._name}"))
        return setters

    @property
    def state(self) -> bool | None:
        return self._state

    @state.setter
    def state(self, value: bool | None) -> None:
        for setter in self._setters():
            setter(-1 if value is None else int(bool(value)))
        self._state = None if value is None else bool(value)


# The Hopper (wgmma/TMA) kernels: True selects them where they can run (an sm_90a build on a
# compute-capability-9 GPU, or the 32-lane emulator); None follows ZAYA_WGMMA=1. The bench's zaya-wgmma.
hopper_paths = _Switch("hopper_paths")
# The version-1 mma.sync kernels (scalar fragment loads instead of ldmatrix; CUDA and the 32-lane
# emulator, where two versions exist); None follows ZAYA_KERNELS=v1. The bench's "v1" provider.
kernels_v1 = _Switch("kernels_v1")
