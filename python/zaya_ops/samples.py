"""Small seeded sample inputs for every op, shared by the main job, opcheck tests and benchmarks.

Each builder returns the op's keyword arguments (the wrapper's parameter names). ``clone_args`` gives
an independent copy, since ``cca_qkv`` writes its state and cache arguments in place. ``SAMPLES`` holds
one builder per op; ``CHECK_CASES`` the small awkward cases (decode, prefill, varlen) that
``zaya_ops.selftest`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SampleShape:
    """Sizes of a sample: tokens per sequence, hidden size, heads, experts, ..."""

    seq_lens: tuple[int, ...] = (5, 1, 11)
    hidden: int = 264
    nq: int = 4
    nkv: int = 2
    head_dim: int = 32
    rot_dim: int = 16
    experts: int = 4
    intermediate: int = 48
    router_hidden: int = 32
    block_size: int = 8

    @property
    def tokens(self) -> int:
        return sum(self.seq_lens)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g, *shape, dtype, device, scale=1.0):
    return (torch.randn(*shape, generator=g) * scale).to(dtype=dtype, device=device)


def rms_norm_args(T=7, H=264, dtype=torch.bfloat16, device="cpu", seed=0, x_dtype=torch.float32):
    g = _gen(seed)
    return dict(x=_randn(g, T, H, dtype=x_dtype, device=device, scale=3.0),
                weight=_randn(g, H, dtype=dtype, device=device), eps=1e-5)


def residual_scale_rmsnorm_args(T=7, H=264, dtype=torch.bfloat16, device="cpu", seed=0):
    g = _gen(seed)
    vec = lambda s=1.0: _randn(g, H, dtype=dtype, device=device, scale=s)  # noqa: E731
    return dict(h=_randn(g, T, H, dtype=dtype, device=device),
                residual=_randn(g, T, H, dtype=torch.float32, device=device, scale=4.0),
                h_bias=vec(0.1), h_scale=vec(), r_bias=vec(0.1), r_scale=vec(), norm_weight=vec(), eps=1e-5)


def _paged_layout(s: SampleShape, device, g):
    """Block table and slot mapping for sequences that start empty, blocks in a shuffled order."""
    blocks_per_seq = [(n + s.block_size - 1) // s.block_size for n in s.seq_lens]
    max_blocks = max(blocks_per_seq)
    num_blocks = sum(blocks_per_seq) + 1  # one spare block that no sequence owns
    order = torch.randperm(num_blocks, generator=g)
    table = torch.zeros(len(s.seq_lens), max_blocks, dtype=torch.int32)
    slots, nxt = [], 0
    for b, (n, nb) in enumerate(zip(s.seq_lens, blocks_per_seq)):
        table[b, :nb] = order[nxt:nxt + nb].to(torch.int32)
        nxt += nb
        for i in range(n):
            slots.append(int(table[b, i // s.block_size]) * s.block_size + i % s.block_size)
    return num_blocks, table.to(device), torch.tensor(slots, dtype=torch.int64, device=device)


def _cu_seqlens(seq_lens, device):
    cu = [0]
    for n in seq_lens:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=torch.int32, device=device)


def cca_qkv_args(shape: SampleShape = SampleShape(), dtype=torch.bfloat16, device="cpu", seed=0):
    s, g = shape, _gen(seed)
    T, D, C = s.tokens, s.head_dim, (s.nq + s.nkv) * s.head_dim
    r = lambda *sh, sc=1.0: _randn(g, *sh, dtype=dtype, device=device, scale=sc)  # noqa: E731
    num_blocks, _, slots = _paged_layout(s, device, g)
    B = len(s.seq_lens)
    max_pos = 64
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, s.rot_dim, 2, dtype=torch.float32) / s.rot_dim))
    freqs = torch.arange(max_pos, dtype=torch.float32)[:, None] * inv_freq[None, :]
    cos_sin = torch.cat([freqs.cos(), freqs.sin()], dim=-1).to(dtype=dtype, device=device)
    positions = torch.cat([torch.arange(n) + 3 * b for b, n in enumerate(s.seq_lens)]).to(device)
    return dict(
        qt=r(T, s.nq * D), kt=r(T, s.nkv * D), vc=r(T, s.nkv * D // 2), vd=r(T, s.nkv * D // 2),
        conv_dw_weight=r(C, 1, 2, sc=0.5), conv_dw_bias=r(C, sc=0.1),
        conv_g_weight=r(C, D, 2, sc=D ** -0.5), conv_g_bias=r(C, sc=0.1),
        qk_temp=r(s.nkv), cos_sin=cos_sin, positions=positions, cu_seqlens=_cu_seqlens(s.seq_lens, device),
        conv_state=r(B + 1, C, 2), value_state=r(B + 1, s.nkv * D // 2),
        state_indices=torch.arange(B, 0, -1, dtype=torch.int32, device=device),
        k_cache=torch.zeros(num_blocks, s.block_size, s.nkv, D, dtype=dtype, device=device),
        v_cache=torch.zeros(num_blocks, s.block_size, s.nkv, D, dtype=dtype, device=device),
        slot_mapping=slots, qk_norm_eps=None,
    )


def cca_qkv_functional_args(shape: SampleShape = SampleShape(), dtype=torch.bfloat16, device="cpu", seed=0):
    """cca_qkv_functional's arguments: those of :func:`cca_qkv_args` (same seed, same values) with the
    histories of each sequence's slot as its own row and no cache."""
    kw = cca_qkv_args(shape, dtype=dtype, device=device, seed=seed)
    rows = kw.pop("state_indices").long()
    for name in ("k_cache", "v_cache", "slot_mapping"):
        kw.pop(name)
    kw["conv_state"], kw["value_state"] = kw["conv_state"][rows], kw["value_state"][rows]
    return kw


def cca_attention_args(shape: SampleShape = SampleShape(), dtype=torch.bfloat16, device="cpu", seed=0,
                       cached: tuple[int, ...] | None = None):
    """Queries of ``shape.seq_lens`` new tokens each, after ``cached`` earlier tokens per sequence."""
    s, g = shape, _gen(seed)
    cached = cached or tuple(3 * b for b in range(len(s.seq_lens)))
    total = SampleShape(**{**s.__dict__, "seq_lens": tuple(c + n for c, n in zip(cached, s.seq_lens))})
    num_blocks, table, _ = _paged_layout(total, device, g)
    D = s.head_dim
    return dict(
        q=_randn(g, s.tokens, s.nq, D, dtype=dtype, device=device),
        k_cache=_randn(g, num_blocks, s.block_size, s.nkv, D, dtype=dtype, device=device),
        v_cache=_randn(g, num_blocks, s.block_size, s.nkv, D, dtype=dtype, device=device),
        cu_seqlens_q=_cu_seqlens(s.seq_lens, device),
        seqused_k=torch.tensor(total.seq_lens, dtype=torch.int32, device=device),
        block_table=table, scale=D ** -0.5,
        max_seqlen_q=max(s.seq_lens), max_seqlen_k=max(total.seq_lens),
    )


def router_args(T=7, H=264, R=32, E=4, dtype=torch.bfloat16, device="cpu", seed=0, first_layer=False):
    g = _gen(seed)
    r = lambda *sh, sc=1.0: _randn(g, *sh, dtype=dtype, device=device, scale=sc)  # noqa: E731
    biases = torch.zeros(E + 1, dtype=torch.float32)
    biases[-1] = -0.05
    return dict(
        x=r(T, H), prev_state=None if first_layer else r(T, R),
        down_weight=r(R, H, sc=H ** -0.5), down_bias=r(R, sc=0.1),
        states_scale=None if first_layer else r(R, sc=0.5),
        norm_weight=r(R), fc1_weight=r(R, R, sc=R ** -0.5), fc1_bias=r(R, sc=0.1),
        fc2_weight=r(R, R, sc=R ** -0.5), fc2_bias=r(R, sc=0.1), out_weight=r(E + 1, R, sc=R ** -0.5),
        balancing_biases=biases.to(device), eps=1e-5, return_logits=True,
    )


def moe_top1_args(T=7, H=264, I=48, E=4, dtype=torch.bfloat16, device="cpu", seed=0):
    g = _gen(seed)
    idx = torch.randint(0, E + 1, (T,), generator=g, dtype=torch.int32)
    w = torch.rand(T, generator=g)
    w[idx == E] = 0
    return dict(
        x=_randn(g, T, H, dtype=dtype, device=device),
        expert_index=idx.to(device), expert_weight=w.to(dtype=dtype, device=device),
        gate_up_proj=_randn(g, E, 2 * I, H, dtype=dtype, device=device, scale=H ** -0.5),
        down_proj=_randn(g, E, H, I, dtype=dtype, device=device, scale=I ** -0.5),
        expert_start=0, expert_end=None,
    )


SAMPLES = {
    "rms_norm": rms_norm_args,
    "residual_scale_rmsnorm": residual_scale_rmsnorm_args,
    "cca_qkv": cca_qkv_args,
    "cca_qkv_functional": cca_qkv_functional_args,
    "cca_attention": cca_attention_args,
    "router": router_args,
    "moe_top1": moe_top1_args,
}

#: Heads of the self-check cases: head dim 64, within every attention kernel's coverage (the GPU kernels
#: take 64, 128 and 256), GQA 2:1, partial rotary, blocks of 8 tokens (sequences cross blocks).
_CHECK_HEADS = SampleShape(nq=4, nkv=2, head_dim=64, rot_dim=32, block_size=8)


def _with_lens(seq_lens) -> SampleShape:
    return SampleShape(**{**_CHECK_HEADS.__dict__, "seq_lens": tuple(seq_lens)})


#: Small awkward cases of every op for ``zaya_ops.selftest``: decode (T = 1, one token per sequence),
#: prefill (T = 7), varlen batches with an empty sequence and cached context, moe_top1 on both sides of
#: the GPU kernels' decode/prefill switch (T <= 8 / T > 8), the router's first and later layers, rows
#: of a hidden size that is a multiple of 8 but not of 16 or 64 (264). Each entry: (label, builder,
#: builder keyword arguments); :func:`check_case` builds one for a dtype and device.
CHECK_CASES = {
    "rms_norm": [
        ("decode T=1", rms_norm_args, dict(T=1, seed=11)),
        ("prefill T=7", rms_norm_args, dict(T=7, seed=12)),
        ("prefill T=7, x in the param dtype", rms_norm_args, dict(T=7, seed=13, x_dtype=None)),
    ],
    "residual_scale_rmsnorm": [
        ("decode T=1", residual_scale_rmsnorm_args, dict(T=1, seed=21)),
        ("prefill T=7", residual_scale_rmsnorm_args, dict(T=7, seed=22)),
    ],
    "cca_qkv": [
        ("varlen prefill (7, 0, 1, 5)", cca_qkv_args, dict(shape=_with_lens((7, 0, 1, 5)), seed=31)),
        ("decode (1, 1, 1)", cca_qkv_args, dict(shape=_with_lens((1, 1, 1)), seed=32)),
    ],
    "cca_qkv_functional": [
        ("varlen prefill (7, 0, 1, 5)", cca_qkv_functional_args, dict(shape=_with_lens((7, 0, 1, 5)), seed=33)),
        ("decode (1, 1, 1)", cca_qkv_functional_args, dict(shape=_with_lens((1, 1, 1)), seed=34)),
    ],
    "cca_attention": [
        ("varlen prefill (7, 1, 0, 5) after (0, 3, 4, 9) cached", cca_attention_args,
         dict(shape=_with_lens((7, 1, 0, 5)), cached=(0, 3, 4, 9), seed=41)),
        ("decode (1, 1, 1) after (0, 6, 20) cached", cca_attention_args,
         dict(shape=_with_lens((1, 1, 1)), cached=(0, 6, 20), seed=42)),
    ],
    "router": [
        ("decode T=1", router_args, dict(T=1, seed=51)),
        ("prefill T=7, first layer", router_args, dict(T=7, seed=52, first_layer=True)),
    ],
    "moe_top1": [
        ("decode T=1", moe_top1_args, dict(T=1, seed=61)),
        ("T=7", moe_top1_args, dict(T=7, seed=62)),
        ("prefill T=9", moe_top1_args, dict(T=9, seed=63)),
    ],
}


def check_case(builder, kwargs: dict, dtype: torch.dtype, device) -> dict:
    """The wrapper arguments of one :data:`CHECK_CASES` entry in ``dtype`` on ``device`` (an ``x_dtype``
    of None means the param dtype)."""
    if "x_dtype" in kwargs and kwargs["x_dtype"] is None:
        kwargs = {**kwargs, "x_dtype": dtype}
    return builder(dtype=dtype, device=device, **kwargs)


def clone_args(kwargs: dict) -> dict:
    """A deep copy of tensor arguments (ops may write some of them in place)."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def to_op_args(name: str, kwargs: dict) -> tuple:
    """The positional arguments of ``torch.ops.zaya.<name>`` for the wrapper keyword arguments."""
    from . import ops  # local: samples must stay importable without the compiled library for docs

    import inspect

    params = [p.name for p in inspect.signature(getattr(ops, name)).parameters.values()
              if p.kind is not p.KEYWORD_ONLY]  # the op's arguments (not the wrappers' _prevalidated)
    args = [kwargs[p] for p in params]
    if name in ("cca_qkv", "cca_qkv_functional") and args[-1] is None:
        args[-1] = torch.finfo(kwargs["qt"].dtype).eps
    if name == "moe_top1" and args[-1] is None:
        args[-1] = -1
    return tuple(args)
