"""The op library as an API: schemas, build info, fake kernels, torch.compile tracing, opcheck of every
kernel on every target (the GPU kernels also under the SIMT emulators), and argument errors."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import zaya_ops
from conftest import EMULATORS
from zaya_ops import ops, reference, samples

OPS = list(samples.SAMPLES)


def test_build_info():
    info = zaya_ops.build_info()
    assert "cpu" in info["backends"]
    assert info["torch_version"].split("+")[0] == torch.__version__.split("+")[0]
    assert set(info) >= {"backends", "cuda_archs", "hip_archs", "torch_version", "torch_runtime"}


@pytest.mark.parametrize("name", OPS)
def test_schema_registered(name):
    op = getattr(torch.ops.zaya, name).default
    assert op._schema.name == f"zaya::{name}"


@pytest.mark.parametrize("name", OPS)
def test_fake_kernel_matches_reference_shapes(name):
    """The fake kernel gives the reference's output shapes and dtypes, without running anything."""
    kwargs = samples.SAMPLES[name]()
    ref = reference.__dict__[name](**samples.clone_args(kwargs))
    ref = list(ref) if isinstance(ref, tuple) else [ref]
    mode = FakeTensorMode()
    with mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a
                     for a in samples.to_op_args(name, kwargs)]
        out = getattr(torch.ops.zaya, name)(*fake_args)
    out = list(out) if isinstance(out, tuple) else [out]
    assert [(tuple(o.shape), o.dtype) for o in out] == [(tuple(r.shape), r.dtype) for r in ref]


@pytest.mark.parametrize("name", OPS)
def test_compile_fullgraph_traces(name):
    """torch.compile(fullgraph=True) captures the op as one node (the fake kernel is enough)."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    kwargs = samples.SAMPLES[name]()
    fn = torch.compile(lambda kw: getattr(ops, name)(**kw), fullgraph=True, backend=capture)
    torch._dynamo.reset()
    try:
        fn(samples.clone_args(kwargs))
    except NotImplementedError:
        pass  # traced, then the missing kernel raised at run time
    assert graphs, "nothing was captured"
    targets = {str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"}
    assert any(f"zaya.{name}" in t for t in targets), targets


def _kernel_sample(name: str, target: str, device: str) -> dict:
    """The op's sample, at a head dim the GPU attention kernel takes when the target is a GPU's."""
    if target != "cpu" and name == "cca_attention":
        return samples.SAMPLES[name](samples.SampleShape(head_dim=64), device=device)
    return samples.SAMPLES[name](device=device)


@pytest.mark.parametrize("name", OPS)
def test_opcheck(name, kernel_device, request):
    """Every op has a kernel on every target (CPU, a GPU when present, the GPU kernels under the SIMT
    emulators); each passes opcheck against the fake kernels: schema (what it mutates), fake-tensor
    outputs, and AOT dispatch."""
    target = request.node.callspec.params["kernel_device"]
    kwargs = _kernel_sample(name, target, kernel_device)
    torch.library.opcheck(getattr(ops._OPS, name).default, samples.to_op_args(name, kwargs))


# --- mixed devices in a direct torch.ops call ---------------------------------------------------------

OTHER_DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("other", OTHER_DEVICES)
@pytest.mark.parametrize("name", OPS)
def test_direct_call_with_mixed_devices_raises(name, other):
    """A direct ``torch.ops.zaya.<op>`` call with one tensor on another device and the rest on the CPU.
    The dispatcher picks the kernel of the highest backend among the arguments: with a meta tensor the
    Meta kernel, i.e. the fake (which returned uninitialised CPU memory before it checked devices),
    with a CUDA tensor the CUDA kernel. Each must raise a ValueError naming the argument's device. The
    CPU kernels and the emulated GPU glue, reached with the same mixture by redispatching to the CPU
    key, refuse it too."""
    op = getattr(torch.ops.zaya, name).default
    names = [a.name for a in op._schema.arguments]
    cpu_key = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    emulated = [getattr(torch.ops, f"zaya_{e}") for e in EMULATORS]
    for ns in [torch.ops.zaya] + emulated:
        args = samples.to_op_args(name, _kernel_sample(name, "cpu" if ns is torch.ops.zaya else "emu", "cpu"))
        nsop = getattr(ns, name).default
        for i, a in enumerate(args):
            if not isinstance(a, torch.Tensor):
                continue
            mixed = list(args)
            mixed[i] = a.to(other)
            if ns is torch.ops.zaya:
                with pytest.raises(ValueError, match=f"(?i){other}") as e:
                    nsop(*mixed)
                if other == "meta":
                    assert f"{names[i]} is on meta" in str(e.value) or f"but {names[i]} on meta" in str(e.value)
            if other == "meta":
                with pytest.raises(ValueError, match="meta"):
                    nsop.redispatch(cpu_key, *mixed)


def test_meta_call_with_zero_head_dim_raises():
    """The cca_qkv fake divides by the head dim: a zero one is a ValueError, not a ZeroDivisionError."""
    kw = samples.cca_qkv_args()
    kw["k_cache"], kw["v_cache"] = kw["k_cache"][..., :0], kw["v_cache"][..., :0]
    args = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in samples.to_op_args("cca_qkv", kw)]
    with pytest.raises(ValueError, match="k_cache head dim must be positive"):
        torch.ops.zaya.cca_qkv(*args)


# --- argument errors through the wrappers: each names the argument ---------------------------------

def _bad(name, change, exc, match):
    kwargs = samples.SAMPLES[name]()
    kwargs.update(change(kwargs))
    with pytest.raises(exc, match=match):
        getattr(ops, name)(**kwargs)


BAD_INPUTS = [
    ("rms_norm", lambda k: {"weight": k["weight"].float()[:-1]}, ValueError, "weight"),
    ("rms_norm", lambda k: {"x": k["x"].to(torch.int32)}, TypeError, "x must have dtype"),
    ("rms_norm", lambda k: {"x": k["x"][0]}, ValueError, "x must be 2-D"),
    ("rms_norm", lambda k: {"eps": -1.0}, ValueError, "eps"),
    ("rms_norm", lambda k: {"weight": k["weight"].to("meta")}, ValueError, "weight must be on cpu"),
    ("residual_scale_rmsnorm", lambda k: {"residual": k["residual"].bfloat16()}, TypeError, "residual"),
    ("residual_scale_rmsnorm", lambda k: {"r_scale": k["r_scale"][:3]}, ValueError, "r_scale"),
    ("residual_scale_rmsnorm", lambda k: {"h_bias": k["h_bias"].float()}, TypeError, "h_bias"),
    ("residual_scale_rmsnorm", lambda k: {"h": [1.0]}, TypeError, "h must be a torch.Tensor"),
    ("cca_qkv", lambda k: {"kt": k["kt"][:, :-2]}, ValueError, "kt must have shape"),
    ("cca_qkv", lambda k: {"cu_seqlens": k["cu_seqlens"].long()}, TypeError, "cu_seqlens"),
    ("cca_qkv", lambda k: {"conv_state": k["conv_state"][:, :, :1]}, ValueError, "conv_state"),
    ("cca_qkv", lambda k: {"value_state": k["value_state"].float()}, TypeError, "value_state"),
    ("cca_qkv", lambda k: {"qt": k["qt"][:, :-3]}, ValueError, "qt width"),
    ("cca_qkv", lambda k: {"state_indices": k["state_indices"][:1]}, ValueError, "state_indices"),
    ("cca_qkv", lambda k: {"k_cache": k["k_cache"][:, :, :0], "v_cache": k["v_cache"][:, :, :0]}, ValueError,
     r"multiple of KV heads \(0, k_cache.shape\[2\]\)"),
    ("cca_attention", lambda k: {"k_cache": k["k_cache"][..., :16], "v_cache": k["v_cache"][..., :16]},
     ValueError, "head dim"),
    ("cca_attention", lambda k: {"q": k["q"][:, :3]}, ValueError, "multiple of k_cache heads"),
    ("cca_attention", lambda k: {"block_table": k["block_table"].long()}, TypeError, "block_table"),
    ("cca_attention", lambda k: {"seqused_k": k["seqused_k"][:1]}, ValueError, "seqused_k"),
    ("cca_attention", lambda k: {"scale": float("nan")}, ValueError, "scale must be a finite number"),
    ("cca_attention", lambda k: {"scale": float("-inf")}, ValueError, "scale must be a finite number"),
    ("cca_attention", lambda k: {"scale": 1e39}, ValueError, "scale must be a finite number"),
    ("router", lambda k: {"prev_state": None}, ValueError, "prev_state and states_scale"),
    ("router", lambda k: {"balancing_biases": k["balancing_biases"].bfloat16()}, TypeError,
     "balancing_biases"),
    ("router", lambda k: {"fc1_weight": k["fc1_weight"][:, :-1]}, ValueError, "fc1_weight"),
    ("router", lambda k: {"out_weight": k["out_weight"][:1]}, ValueError, "out_weight"),
    ("moe_top1", lambda k: {"expert_index": k["expert_index"].float()}, TypeError, "expert_index"),
    ("moe_top1", lambda k: {"down_proj": k["down_proj"][:, :, :-1]}, ValueError, "down_proj"),
    ("moe_top1", lambda k: {"expert_start": 3, "expert_end": 2}, ValueError, "expert range"),
    ("moe_top1", lambda k: {"expert_weight": k["expert_weight"].float()}, TypeError, "expert_weight"),
]


@pytest.mark.parametrize("name,change,exc,match", BAD_INPUTS,
                         ids=[f"{b[0]}-{b[3].split()[0]}-{i}" for i, b in enumerate(BAD_INPUTS)])
def test_bad_input_names_argument(name, change, exc, match):
    _bad(name, change, exc, match)


def test_main_job_runs(capsys):
    from zaya_ops.__main__ import main

    assert main(["--check-ops", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for name in OPS:
        assert name in out
