"""Autograd of zaya::cca_attention (python/zaya_ops/_autograd.py, csrc/cpu/cca_attention_backward.cpp).

* gradcheck in float64 (the CPU kernels run float64 exactly) through out and lse, with varlen, GQA,
  prefix sharing (one cache block read by two sequences), a sequence without queries and unread blocks;
* fp32/bf16/fp16 gradients of q, k_cache and v_cache against autograd of zaya_ops.reference: the
  kernel's error against float64 at most twice the reference's own error (the FlashAttention rule), at
  T = 1, 7, 257, D = 64 and 128, block sizes 1 (the training layout: k.unsqueeze(1) and a table of token
  rows) and 16, several sequences of different lengths, non-contiguous q, grad_lse given or None;
* the gradients do not depend on the thread count; opcheck of the forward (inputs requiring grad) and of
  the backward op; bad input to the backward op names the argument;
* the GPU kernels under the SIMT emulator: forward and backward kernels by the same 2x rule (bf16, fp16;
  D = 64, 128), the backward op's contract and opcheck; D = 256 by recompute of the reference.
"""

from __future__ import annotations

import pytest
import torch

import zaya_ops
from conftest import EMULATORS, use_target
from zaya_ops import reference as ref

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _case(seqs, nq, nkv, D, block_size, dtype, seed, *, spare_blocks=2, share_prefix=False, strided_q=False):
    """seqs: (n_b new queries, seqused_k L_b) per sequence. Blocks are assigned in a shuffled order, with
    ``spare_blocks`` that no sequence reads; ``share_prefix`` makes sequence 1 read sequence 0's first
    block (both must have at least block_size keys)."""
    g = torch.Generator().manual_seed(seed)
    need = [(L + block_size - 1) // block_size for _, L in seqs]
    num_blocks = sum(need) + spare_blocks
    perm = torch.randperm(num_blocks, generator=g).tolist()
    cols = max(need) + 1
    table = torch.zeros(len(seqs), cols, dtype=torch.int32)
    k = 0
    for b, nb in enumerate(need):
        table[b, :nb] = torch.tensor(perm[k:k + nb], dtype=torch.int32)
        k += nb
    if share_prefix:
        table[1, 0] = table[0, 0]
    T = sum(n for n, _ in seqs)
    if strided_q:  # heads and head dims interleaved with garbage: strides (3 nq D, 3 D, 1)... then sliced
        q = (torch.randn(T, nq, 3 * D, generator=g) * 1.5).to(dtype)[:, :, D:2 * D]
    else:
        q = (torch.randn(T, nq, D, generator=g) * 1.5).to(dtype)
    kc = (torch.randn(num_blocks, block_size, nkv, D, generator=g) * 1.5).to(dtype)
    vc = torch.randn(num_blocks, block_size, nkv, D, generator=g).to(dtype)
    cu = torch.tensor([0] + torch.tensor([n for n, _ in seqs]).cumsum(0).tolist(), dtype=torch.int32)
    used = torch.tensor([L for _, L in seqs], dtype=torch.int32)
    gout = torch.randn(T, nq * D, generator=g).to(dtype)
    glse = torch.randn(nq, T, generator=g) * 0.5
    return [q, kc, vc], (cu, used, table), [gout, glse]


def _kernel(index):
    return lambda q, k, v: zaya_ops.cca_attention(q, k, v, *index)


def _reference(index):
    return lambda q, k, v: ref.cca_attention(q, k, v, *index)


def _grads(fn, inputs, grad_outputs):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    outs = fn(*leaves)
    keep = [(o, g) for o, g in zip(outs, grad_outputs) if g is not None]
    return torch.autograd.grad([o for o, _ in keep], leaves, [g for _, g in keep])


def _check_2x(name, index, inputs, grad_outputs):
    got = _grads(_kernel(index), inputs, grad_outputs)
    want = _grads(_reference(index), inputs, grad_outputs)
    exact = _grads(_reference(index), [t.double() for t in inputs],
                   [None if t is None else t.double() for t in grad_outputs])
    for i, (a, b, e) in enumerate(zip(got, want, exact)):
        assert a.dtype == b.dtype and a.shape == b.shape, (name, i)
        assert torch.isfinite(a).all(), (name, i)
        err_k = (a.double() - e).abs().max().item()
        err_r = (b.double() - e).abs().max().item()
        floor = 1e-6 * max(e.abs().max().item(), 1.0)
        assert err_k <= 2 * err_r + floor, f"{name} grad {i}: kernel error {err_k:.3g} > 2 x reference {err_r:.3g}"
    return got


# --------------------------------------------------------------------------------------------------
# gradcheck (float64, CPU kernels)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size,fast", [(2, False), (1, True)])
def test_gradcheck(block_size, fast):
    seqs = [(3, 5), (2, 4), (0, 3), (1, 1)]  # sequence 2 has no queries: reads nothing
    inputs, index, _ = _case(seqs, 4, 2, 4, block_size, torch.float64, 1, share_prefix=True, spare_blocks=1)
    inputs = [t.requires_grad_() for t in inputs]
    fn = _kernel(index)
    assert torch.autograd.gradcheck(fn, tuple(inputs), fast_mode=fast)
    # one output alone (out: grad_lse None; lse: grad_out zeros), fast mode (random projections)
    assert torch.autograd.gradcheck(lambda *a: fn(*a)[0], tuple(inputs), fast_mode=True)
    assert torch.autograd.gradcheck(lambda *a: fn(*a)[1], tuple(inputs), fast_mode=True)


def test_float64_matches_reference():
    inputs, index, (gout, glse) = _case([(4, 9), (3, 3)], 6, 2, 8, 4, torch.float64, 2, strided_q=True)
    for a, b in zip(_kernel(index)(*inputs), _reference(index)(*inputs)):
        assert a.dtype == b.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(_kernel(index), inputs, [gout.double(), glse.double()]),
                    _grads(_reference(index), inputs, [gout.double(), glse.double()])):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


# --------------------------------------------------------------------------------------------------
# fp32 / bf16 / fp16 against the reference's autograd (2x rule)
# --------------------------------------------------------------------------------------------------

_SHAPES = {  # name: (seqs, nq, nkv, D)
    "T1-decode": ([(1, 37)], 4, 2, 64),
    "T7-varlen": ([(3, 10), (1, 1), (3, 21)], 8, 2, 128),
    "T257-varlen": ([(200, 230), (57, 57)], 4, 1, 64),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape", sorted(_SHAPES))
@pytest.mark.parametrize("block_size", [1, 16])
def test_grads_2x(dtype, shape, block_size):
    seqs, nq, nkv, D = _SHAPES[shape]
    inputs, index, gouts = _case(seqs, nq, nkv, D, block_size, dtype, 10 + len(shape), strided_q=True,
                                 share_prefix=len(seqs) > 1 and min(L for _, L in seqs[:2]) >= block_size)
    _check_2x(f"{shape} bs={block_size}", index, inputs, gouts)
    _check_2x(f"{shape} bs={block_size} out only", index, inputs, [gouts[0], None])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("D", [64, 128])
def test_training_layout(dtype, D):
    """The training path: per-token k, v [T, nkv, D] as block-size-1 caches k.unsqueeze(1), the table
    row of sequence b listing its token rows; gradients reach k and v through the view."""
    g = torch.Generator().manual_seed(D)
    lens = [5, 1, 13, 7]
    T, nq, nkv = sum(lens), 4, 2
    q = torch.randn(T, nq, D, generator=g).to(dtype)
    k = torch.randn(T, nkv, D, generator=g).to(dtype)
    v = torch.randn(T, nkv, D, generator=g).to(dtype)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    table = torch.zeros(len(lens), max(lens), dtype=torch.int32)
    for b, n in enumerate(lens):
        table[b, :n] = torch.arange(int(cu[b]), int(cu[b]) + n, dtype=torch.int32)
    index = (cu, torch.tensor(lens, dtype=torch.int32), table)

    def kern(q, k, v):
        return zaya_ops.cca_attention(q, k.unsqueeze(1), v.unsqueeze(1), *index)

    def refn(q, k, v):
        return ref.cca_attention(q, k.unsqueeze(1), v.unsqueeze(1), *index)

    gout = torch.randn(T, nq * D, generator=g).to(dtype)
    got = _grads(kern, [q, k, v], [gout, None])
    want = _grads(refn, [q, k, v], [gout, None])
    exact = _grads(refn, [q.double(), k.double(), v.double()], [gout.double(), None])
    for a, b, e in zip(got, want, exact):
        assert a.shape == b.shape
        assert (a.double() - e).abs().max() <= 2 * (b.double() - e).abs().max() + 1e-6 * e.abs().max()


def test_unread_and_shared_blocks():
    """Cache positions no sequence reads get 0; a block two sequences read sums both gradients."""
    inputs, index, gouts = _case([(2, 6), (3, 5)], 4, 2, 8, 4, torch.float32, 3, spare_blocks=3, share_prefix=True)
    cu, used, table = index
    gq, gk, gv = _grads(_kernel(index), inputs, gouts)
    read = torch.zeros(gk.shape[:2], dtype=torch.bool)
    for b in range(2):
        for pos in range(int(used[b])):
            read[table[b, pos // 4], pos % 4] = True
    assert (gk[~read] == 0).all() and (gv[~read] == 0).all()
    assert gk[read].abs().amax(-1).gt(0).all()
    # the shared block: the sum of the gradients of the two sequences run alone
    alone = [_grads(_kernel((torch.tensor([0, n], dtype=torch.int32), used[b:b + 1], table[b:b + 1])),
                    [inputs[0][int(cu[b]):int(cu[b + 1])], *inputs[1:]],
                    [gouts[0][int(cu[b]):int(cu[b + 1])], gouts[1][:, int(cu[b]):int(cu[b + 1])]])
             for b, n in ((0, 2), (1, 3))]
    shared = int(table[0, 0])
    torch.testing.assert_close(gk[shared], alone[0][1][shared] + alone[1][1][shared], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gv[shared], alone[0][2][shared] + alone[1][2][shared], rtol=1e-5, atol=1e-6)


def test_grads_do_not_depend_on_threads():
    inputs, index, gouts = _case([(150, 300), (40, 40), (9, 100)], 8, 2, 64, 16, torch.bfloat16, 4,
                                 share_prefix=True)
    old = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append(_grads(_kernel(index), inputs, gouts))
    finally:
        torch.set_num_threads(old)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


def test_empty():
    inputs, index, _ = _case([(0, 4)], 2, 1, 8, 4, torch.float32, 5)
    leaves = [t.requires_grad_() for t in inputs]
    out, lse = zaya_ops.cca_attention(*leaves, *index)
    (out.sum() + lse.sum()).backward()
    assert leaves[0].grad.shape == (0, 2, 8)
    assert torch.equal(leaves[1].grad, torch.zeros_like(leaves[1])) and torch.equal(leaves[2].grad, torch.zeros_like(leaves[2]))


# --------------------------------------------------------------------------------------------------
# errors, opcheck, compile
# --------------------------------------------------------------------------------------------------


def _bwd_args(dtype=torch.bfloat16, D=8):
    inputs, index, (gout, glse) = _case([(3, 5), (2, 2)], 4, 2, D, 2, dtype, 6)
    _, lse = zaya_ops.cca_attention(*inputs, *index)
    return [gout, glse, *inputs, lse, *index, D ** -0.5, 3, 5]


@pytest.mark.parametrize("pos,bad,exc,name", [
    (0, lambda a: a.float(), TypeError, "grad_out"),
    (0, lambda a: a[:, :-1], ValueError, "grad_out"),
    (1, lambda a: a.bfloat16(), TypeError, "grad_lse"),
    (1, lambda a: a[:, :1], ValueError, "grad_lse"),
    (5, lambda a: a[:1], ValueError, "lse"),
    (5, lambda a: a.double(), TypeError, "lse"),
    (3, lambda a: a.float(), TypeError, "k_cache"),
    (8, lambda a: a + 100, ValueError, "block_table"),
])
def test_backward_op_errors(pos, bad, exc, name):
    args = _bwd_args()
    args[pos] = bad(args[pos])
    with pytest.raises(exc, match=rf"\b{name}\b"):
        torch.ops.zaya.cca_attention_backward(*args)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_opcheck(dtype):
    inputs, index, _ = _case([(3, 5), (2, 7)], 4, 2, 16, 4, dtype, 7, share_prefix=True)
    args = (*[t.clone().requires_grad_() for t in inputs], *index, 0.25, 3, 7)
    torch.library.opcheck(torch.ops.zaya.cca_attention.default, args)
    bargs = _bwd_args(dtype)
    torch.library.opcheck(torch.ops.zaya.cca_attention_backward.default, tuple(bargs))
    bargs[1] = None
    torch.library.opcheck(torch.ops.zaya.cca_attention_backward.default, tuple(bargs))


def test_torch_compile_forward_backward():
    inputs, index, (gout, glse) = _case([(4, 9), (3, 3)], 4, 2, 16, 4, torch.bfloat16, 8)

    def loss(q, k, v):
        out, lse = zaya_ops.cca_attention(q, k, v, *index, 0.25, 4, 9)
        return (out.float() * gout.float()).sum() + (lse * glse).sum()

    def run(fn):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        out = fn(*leaves)
        out.backward()
        return out, [t.grad for t in leaves]

    torch._dynamo.reset()
    out_c, grads_c = run(torch.compile(loss, fullgraph=True, backend="aot_eager"))
    out_e, grads_e = run(loss)
    torch.testing.assert_close(out_c, out_e)
    for a, b in zip(grads_c, grads_e):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------------
# The GPU kernels under the emulator: forward and backward kernels (csrc/kernels/cca_attention_backward.cuh)
# --------------------------------------------------------------------------------------------------

_EMU_SHAPES = {  # name: (seqs, nq, nkv, D): small, so that each emulated case stays well under 20 s
    "T1-decode": ([(1, 37)], 4, 2, 64),
    "T7-varlen": ([(3, 10), (1, 1), (3, 21)], 8, 2, 128),
    "T257-varlen": ([(200, 230), (0, 5), (57, 57)], 4, 1, 64),
    "T257-D128": ([(57, 80), (200, 200)], 4, 2, 128),
}


@pytest.mark.parametrize("target", EMULATORS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape,block_size", [("T1-decode", 16), ("T7-varlen", 1), ("T7-varlen", 16),
                                              ("T257-varlen", 16), ("T257-D128", 1)])
def test_emulated_gpu_backward(target, dtype, shape, block_size, monkeypatch):
    """The backward kernels by the 2x rule: varlen (a sequence without queries), GQA, strided q, a cache
    block two sequences read, unread blocks; through out and lse, and through out alone."""
    use_target(target, monkeypatch)
    seqs, nq, nkv, D = _EMU_SHAPES[shape]
    inputs, index, gouts = _case(seqs, nq, nkv, D, block_size, dtype, 20 + len(shape), strided_q=True,
                                 share_prefix=len(seqs) > 1 and min(L for _, L in seqs[:2]) >= block_size)
    _check_2x(f"{shape} bs={block_size} on {target}", index, inputs, gouts)
    if not shape.startswith("T257"):
        _check_2x(f"{shape} bs={block_size} on {target}, out only", index, inputs, [gouts[0], None])


@pytest.mark.parametrize("target", EMULATORS)
def test_emulated_gpu_backward_kernel_contract(target, monkeypatch):
    """The backward op itself: the CPU kernel's zero rows (unread cache positions) and shared-block sums,
    the same bits run to run, opcheck, and NotImplementedError for what the kernels do not cover."""
    use_target(target, monkeypatch)
    ns = getattr(torch.ops, "zaya_" + target)
    inputs, index, (gout, glse) = _case([(3, 9), (4, 20), (0, 6)], 4, 2, 64, 4, torch.bfloat16, 31,
                                        spare_blocks=3, share_prefix=True)
    q, kc, vc = inputs
    _, lse = ns.cca_attention(q, kc, vc, *index, 0.125, 4, 20)
    args = (gout, glse, q, kc, vc, lse, *index, 0.125, 4, 20)
    got = ns.cca_attention_backward(*args)
    again = ns.cca_attention_backward(*args)
    assert all(torch.equal(a, b) for a, b in zip(got, again))
    # looser bounds (more, empty, blocks; another partial-row layout): the same bits
    loose = ns.cca_attention_backward(*args[:-2], 9, 47)
    assert all(torch.equal(a, b) for a, b in zip(got, loose))
    cpu = torch.ops.zaya.cca_attention_backward(*args)
    cu, used, table = index
    read = torch.zeros(kc.shape[:2], dtype=torch.bool)
    for b in range(2):
        for pos in range(int(used[b])):
            read[table[b, pos // 4], pos % 4] = True
    for g, c in zip(got, cpu):
        assert g.dtype == c.dtype and g.shape == c.shape
    for g in got[1:]:
        assert (g[~read] == 0).all() and g[read].abs().amax(-1).gt(0).all()
    # against the CPU kernel (fp32 throughout): bf16 operands of the matrix products, so bf16-sized errors
    for g, c in zip(got, cpu):
        torch.testing.assert_close(g.float(), c.float(), rtol=0.05, atol=0.05 * c.float().abs().max().item())
    torch.library.opcheck(ns.cca_attention_backward.default, args)
    torch.library.opcheck(ns.cca_attention_backward.default, (gout, None, *args[2:]))
    small, sindex, (sgout, sglse) = _case([(3, 5)], 4, 2, 16, 4, torch.bfloat16, 33)
    _, slse = torch.ops.zaya.cca_attention(*small, *sindex, 0.25, 3, 5)  # the CPU kernel's lse
    with pytest.raises(NotImplementedError, match="head dim"):
        ns.cca_attention_backward(sgout, sglse, *small, slse, *sindex, 0.25, 3, 5)
    with pytest.raises(TypeError, match=r"\bgrad_out\b"):
        ns.cca_attention_backward(gout.float(), *args[1:])


@pytest.mark.parametrize("target", EMULATORS)
def test_emulated_gpu_backward_d256_by_reference(target, monkeypatch):
    """Head dim 256 (the forward kernel takes it, the backward kernels do not): autograd recomputes the
    reference, by the same 2x rule."""
    use_target(target, monkeypatch)
    inputs, index, gouts = _case([(2, 5), (1, 3)], 2, 1, 256, 4, torch.bfloat16, 32)
    _check_2x(f"D=256 on {target}", index, inputs, gouts)


def test_backward_backends():
    assert zaya_ops.backward_backends("cpu")["cca_attention"] == "kernel (cpu)"
    assert zaya_ops.backward_backends("cuda")["cca_attention"] == (
        "kernel (cuda: bfloat16/float16 with head dim 64 or 128; otherwise reference (recompute))")
