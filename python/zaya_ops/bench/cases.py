"""Benchmark cases: what to run for each op, on which inputs, and what one call costs.

An ``OpBench`` turns a shape (a dict such as ``{"T": 4096, "H": 2048}``) and a dtype into a ``Case``:
the inputs, the bytes a call must move and the FLOPs it does. Its providers are the implementations
timed on those same inputs:

* ``zaya``    - the compiled op through its checked wrapper in ``zaya_ops.ops`` (what users call);
* ``eager``   - the pure-PyTorch reference in ``zaya_ops.reference``;
* ``compile`` - ``torch.compile`` (default mode, static shapes) of that reference;

plus per-op peers (``layer_cases``: torch SDPA for attention, ``torch._grouped_mm`` and a per-expert loop
for the experts). The norms live here; the CCA, router and expert cases in ``layer_cases`` (registered
when this module is imported); the end-to-end model in ``model_bench``.

To add an op, subclass ``OpBench`` (``build`` and, if needed, ``shapes``) and ``register`` it; the
default providers work for any op whose wrapper and reference share a name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}

DEFAULT_PROVIDERS = ("zaya", "eager", "compile")


class SkipProvider(Exception):
    """A provider cannot run here (reported as "skipped" with the message as note)."""


@dataclasses.dataclass
class Case:
    """One op at one shape and dtype: inputs plus the cost model of a call."""

    op: str
    params: dict[str, Any]
    dtype: torch.dtype
    device: torch.device
    args: tuple
    kwargs: dict[str, Any]
    bytes: int  # minimum bytes a call must read + write (each input and output once)
    flops: int  # arithmetic operations of a call (elementwise ops count 1 each; casts count 0)
    #: positions in ``args`` of tensors the op writes in place (cca_qkv's states and KV cache): every
    #: ``bind`` works on its own copies of them, and the bound call returns them after the op's outputs,
    #: so each provider starts from the same state and the written state is checked too.
    mutates: tuple[int, ...] = ()
    #: anything a case wants to keep for its checks or peers (e.g. the router's reference logits)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def shape(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.params.items())

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, str(self.dtype).replace("torch.", ""))

    def bind(self, fn: Callable[..., Any]) -> Callable[[], Any]:
        args, kwargs = self.args, self.kwargs
        if not self.mutates:
            return lambda: fn(*args, **kwargs)
        args = tuple(a.clone() if i in self.mutates else a for i, a in enumerate(args))
        state = tuple(args[i] for i in self.mutates)

        def call():
            out = fn(*args, **kwargs)
            return (*(out if isinstance(out, (tuple, list)) else (out,)), *state)

        return call


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def tolerance(dtype: torch.dtype) -> float:
    """Max error relative to max |reference| accepted for an output of ``dtype``: about two rounding
    steps of bf16/fp16 (a reordered fp32 reduction may flip one rounding of the reference)."""
    return {torch.bfloat16: 1.6e-2, torch.float16: 2e-3}.get(dtype, 1e-4)


def compare(out: Any, ref: Any, compute_dtype: torch.dtype | None = None) -> tuple[float, float, bool]:
    """(max abs error, max error relative to max |ref| per output, within tolerance) over all tensor
    outputs of a call (a tensor or a tuple/list of them).

    An output's tolerance is that of its dtype or of ``compute_dtype`` (the case's param dtype),
    whichever is looser: an fp32 output computed partly in bf16 (residual_scale_rmsnorm's new residual)
    legitimately differs by bf16 roundings when a provider (torch.compile) keeps those steps in fp32.
    A wrong kernel is off by O(1) relative error, orders of magnitude beyond these tolerances."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    if len(outs) != len(refs):
        raise ValueError(f"provider returned {len(outs)} outputs, reference {len(refs)}")
    max_abs, max_rel, ok = 0.0, 0.0, True
    for o, r in zip(outs, refs):
        if not isinstance(r, torch.Tensor):
            continue
        if not isinstance(o, torch.Tensor) or o.shape != r.shape:
            got = tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__
            raise ValueError(f"output shape {got} != reference {tuple(r.shape)}")
        if r.numel() == 0:
            continue
        if not r.is_floating_point():
            err = float((o.to(torch.int64) != r.to(torch.int64)).sum())
            ok &= err == 0
            max_abs = max(max_abs, err)
            continue
        diff = (o.float() - r.float()).abs()
        finite = torch.isfinite(o.float()) == torch.isfinite(r.float())
        a = float(diff.nan_to_num(0.0).max()) if bool(finite.all()) else float("inf")
        scale = float(r.float().abs().nan_to_num(0.0).max())
        rel = a / scale if scale > 0 else a
        max_abs, max_rel = max(max_abs, a), max(max_rel, rel)
        tol = tolerance(r.dtype)
        if compute_dtype is not None:
            tol = max(tol, tolerance(compute_dtype))
        ok &= (rel <= tol) and o.dtype == r.dtype
    return max_abs, max_rel, ok


def with_switch(switch_name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    """fn run with the kernel switch ``zaya_ops._library.<switch_name>`` on (``hopper_paths``: the Hopper
    wgmma/TMA kernels; ``kernels_v1``: the version-1 mma.sync kernels), restored after each call so that
    other providers never see it."""
    from .. import _library

    switch = getattr(_library, switch_name)

    def run():
        old = switch.state
        switch.state = True
        try:
            return fn()
        finally:
            switch.state = old

    return run


def with_hopper_paths(fn: Callable[[], Any]) -> Callable[[], Any]:
    """fn run with the Hopper (wgmma/TMA) kernels selected (``zaya_ops._library.hopper_paths``)."""
    return with_switch("hopper_paths", fn)


def nvidia_gpu(device: torch.device) -> bool:
    """Whether ``device`` is an NVIDIA GPU (where the "v1" provider, the version-1 mma.sync kernels, runs)."""
    return torch.device(device).type == "cuda" and torch.version.hip is None and torch.cuda.is_available()


def hopper_gpu(device: torch.device) -> bool:
    """Whether ``device`` is an NVIDIA Hopper GPU (where the zaya-wgmma provider runs)."""
    dev = torch.device(device)
    return (dev.type == "cuda" and torch.cuda.is_available() and torch.version.hip is None
            and torch.cuda.get_device_capability(dev)[0] == 9)


class OpBench:
    """Base class of one op's benchmark. Subclasses set ``name`` and implement ``build``."""

    name: str = ""
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    #: the provider the "x eager" column divides by
    baseline: str = "eager"
    #: shape parameters the CLI's --tokens / --hidden map onto
    default_tokens: tuple[int, ...] = (1, 64, 512, 4096, 16384)
    quick_tokens: tuple[int, ...] = (1, 129)
    default_hidden: int = 2048
    quick_hidden: int = 256

    def shapes(self, *, quick: bool, tokens: Sequence[int] | None = None,
               hidden: int | None = None, **_: Any) -> list[dict[str, Any]]:
        """The shapes to run. The norms take (T, H); ``layer_cases`` adds prefill/decode phases
        (``batches``, ``context``, ``phases``), which the norms ignore."""
        toks = tuple(tokens) if tokens else (self.quick_tokens if quick else self.default_tokens)
        h = hidden or (self.quick_hidden if quick else self.default_hidden)
        return [{"T": int(t), "H": int(h)} for t in toks]

    def providers_for(self, device: torch.device) -> tuple[str, ...]:
        """The providers run by default on ``device`` (peers may depend on it, e.g. SDPA backends)."""
        return self.providers

    def known_providers(self, device: torch.device) -> tuple[str, ...]:
        """Every provider this op understands on ``device`` (an explicit ``--providers`` list is
        filtered to these, so ``--providers zaya,eager,sdpa`` adds SDPA to attention only)."""
        return (*self.providers_for(device), "zaya-raw")

    def build(self, params: dict[str, Any], dtype: torch.dtype, device: torch.device,
              gen: torch.Generator) -> Case:
        raise NotImplementedError

    def make_case(self, params: dict[str, Any], dtype: torch.dtype, device: torch.device,
                  seed: int = 0) -> Case:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return self.build(dict(params), dtype, device, gen)

    # -- implementations ---------------------------------------------------------------------------

    def reference(self) -> Callable[..., Any]:
        from .. import reference

        return getattr(reference, self.name)

    def make_provider(self, provider: str, case: Case) -> Callable[[], Any]:
        """A no-argument callable running ``provider`` on ``case``'s inputs. May raise SkipProvider.
        The caller makes the first call (which compiles, for ``compile``) outside the timed region."""
        if provider == "zaya":
            from .. import ops

            return case.bind(getattr(ops, self.name))
        if provider == "zaya-wgmma":  # the Hopper (wgmma) kernels, opt-in (ZAYA_WGMMA=1 or the switch)
            return with_hopper_paths(self.make_provider("zaya", case))
        if provider == "v1":  # the version-1 mma.sync kernels (ZAYA_KERNELS=v1): old against new in one run
            return with_switch("kernels_v1", self.make_provider("zaya", case))
        if provider == "zaya-wgmma-v1":  # the Hopper kernels' first version (moe_top1: no-swizzle TMA boxes)
            return with_hopper_paths(with_switch("kernels_v1", self.make_provider("zaya", case)))
        if provider == "zaya-raw":  # the registered op without the wrapper's Python checks
            return case.bind(getattr(torch.ops.zaya, self.name))
        if provider == "eager":
            return case.bind(self.reference())
        if provider == "compile":
            # A fresh dynamo cache per case: every shape gets its own static-shape compile, and the
            # recompile limit (per code object) can never make us silently time the eager fallback.
            torch._dynamo.reset()
            return case.bind(torch.compile(self.reference(), dynamic=False))
        raise SkipProvider(f"unknown provider {provider!r} for {self.name}")

    def cost(self, provider: str, case: Case) -> tuple[int, int]:
        """(bytes, FLOPs) of one call of ``provider`` (the backward benches' ``*-bwd`` providers do less
        than a case's forward plus backward)."""
        return case.bytes, case.flops

    def baseline_for(self, provider: str) -> str:
        """The provider whose median ``provider``'s "x eager" column divides by."""
        return self.baseline

    def row_params(self, provider: str) -> dict[str, Any]:
        """Extra ``params`` of ``provider``'s rows (the backward benches say which pass a row times)."""
        return {}

    def expected(self, case: Case) -> Any:
        """The oracle output for the correctness column: the eager reference."""
        return case.bind(self.reference())()

    def check(self, provider: str, case: Case, out: Any, expected: Any) -> tuple[float, float, bool, str]:
        """(max abs error, max relative error, within tolerance, note) of ``provider``'s first output
        against ``expected``; override for providers that return only part of the outputs (SDPA) or for
        outputs that may legitimately differ (the router's choice at a near-tie)."""
        a, r, ok = compare(out, expected, case.dtype)
        return a, r, ok, ""


def _randn(gen: torch.Generator, *shape: int, dtype: torch.dtype, device: torch.device,
           scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    """Seeded normal values (drawn on the CPU, so every device gets the same inputs); on the meta device
    just an empty tensor (cost-model use: bytes and FLOPs without allocating anything)."""
    if torch.device(device).type == "meta":
        return torch.empty(*shape, dtype=dtype, device="meta")
    t = torch.randn(*shape, generator=gen, dtype=torch.float32) * scale + shift
    return t.to(device=device, dtype=dtype)


class RmsNormBench(OpBench):
    """``rms_norm(x [T, H], weight [H])``; x in the param dtype.

    bytes = read x + weight, write y; FLOPs = 4 per element (square, sum, scale, weight).
    """

    name = "rms_norm"

    def build(self, params, dtype, device, gen):
        T, H = params["T"], params["H"]
        x = _randn(gen, T, H, dtype=dtype, device=device)
        w = _randn(gen, H, dtype=dtype, device=device, scale=0.1, shift=1.0)
        nbytes = _nbytes(x, w) + T * H * w.element_size()
        return Case(self.name, params, dtype, device, (x, w), {"eps": 1e-5}, bytes=nbytes,
                    flops=4 * T * H)


class ResidualScaleRmsNormBench(OpBench):
    """``residual_scale_rmsnorm(h [T, H] param dtype, residual [T, H] fp32, 5 params [H])``.

    bytes = read h + residual + the 5 [H] params, write new_residual (fp32) + normed (param dtype);
    FLOPs = 9 per element (2 adds, 2 muls, 1 add of the branches, then the 4 of the norm).
    """

    name = "residual_scale_rmsnorm"

    def build(self, params, dtype, device, gen):
        T, H = params["T"], params["H"]
        h = _randn(gen, T, H, dtype=dtype, device=device)
        residual = _randn(gen, T, H, dtype=torch.float32, device=device, scale=4.0)
        h_bias = _randn(gen, H, dtype=dtype, device=device, scale=0.1)
        h_scale = _randn(gen, H, dtype=dtype, device=device, scale=0.1, shift=1.0)
        r_bias = _randn(gen, H, dtype=dtype, device=device, scale=0.1)
        r_scale = _randn(gen, H, dtype=dtype, device=device, scale=0.1, shift=1.0)
        norm_w = _randn(gen, H, dtype=dtype, device=device, scale=0.1, shift=1.0)
        nbytes = (_nbytes(h, residual, h_bias, h_scale, r_bias, r_scale, norm_w)
                  + T * H * 4 + T * H * h.element_size())
        return Case(self.name, params, dtype, device,
                    (h, residual, h_bias, h_scale, r_bias, r_scale, norm_w), {"eps": 1e-5},
                    bytes=nbytes, flops=9 * T * H)


REGISTRY: dict[str, OpBench] = {}


def register(bench: OpBench) -> OpBench:
    if not bench.name:
        raise ValueError("an OpBench needs a name")
    REGISTRY[bench.name] = bench
    return bench


register(RmsNormBench())
register(ResidualScaleRmsNormBench())

from . import layer_cases  # noqa: E402,F401  (registers cca_qkv, cca_attention, router, moe_top1)


def get(name: str) -> OpBench:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"no benchmark for op {name!r}; known: {', '.join(REGISTRY)}") from None
