"""CPU timings of the cca_qkv and cca_attention kernels (ZAYA1 shapes: nq=8, nkv=2, D=128, rot=64).

cca_qkv against the reference composition (zaya_ops.reference.cca_qkv); cca_attention against
torch's CPU SDPA on the same shapes (enable_gqa=True, and after repeating the KV heads). Wall-clock
medians in one process, torch's default thread count; pass --threads to change it.

    PYTHONPATH=python python bench/bench_cca_cpu.py [--threads N] [--dtype bf16|fp32|both]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from zaya_ops import ops, reference as ref, samples

NQ, NKV, D, ROT, BS = 8, 2, 128, 64, 16


def timeit(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2] * 1e3


def qkv_case(seq_lens, dtype):
    shape = samples.SampleShape(seq_lens=seq_lens, nq=NQ, nkv=NKV, head_dim=D, rot_dim=ROT, block_size=BS)
    kw = samples.cca_qkv_args(shape, dtype=dtype)
    inv_freq = ref.rope_inv_freq(D, ROT / D, 5e6)
    kw["cos_sin"] = ref.rope_cos_sin(inv_freq, int(kw["positions"].max()) + 1, dtype)
    return kw


def paged(B, n, L, dtype, g):
    nb = (L + BS - 1) // BS
    k = torch.randn(B, L, NKV, D, generator=g).to(dtype)
    v = torch.randn(B, L, NKV, D, generator=g).to(dtype)
    q = torch.randn(B, n, NQ, D, generator=g).to(dtype)
    table = torch.randperm(B * nb, generator=g).view(B, nb)
    pad = lambda x: F.pad(x, (0, 0, 0, 0, 0, nb * BS - L)).view(B, nb, BS, NKV, D)  # noqa: E731
    kc = torch.empty(B * nb, BS, NKV, D, dtype=dtype)
    vc = torch.empty_like(kc)
    kc[table.flatten()] = pad(k).flatten(0, 1)
    vc[table.flatten()] = pad(v).flatten(0, 1)
    args = dict(q=q.flatten(0, 1), k_cache=kc, v_cache=vc, cu_seqlens_q=torch.arange(B + 1, dtype=torch.int32) * n,
                seqused_k=torch.full((B,), L, dtype=torch.int32), block_table=table.to(torch.int32),
                max_seqlen_q=n, max_seqlen_k=L)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), args


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dtype", choices=["bf16", "fp32", "both"], default="both")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dtypes = {"bf16": [torch.bfloat16], "fp32": [torch.float32], "both": [torch.bfloat16, torch.float32]}[a.dtype]
    print(f"threads={torch.get_num_threads()}")
    for dtype in dtypes:
        name = str(dtype).replace("torch.", "")
        for label, lens in (("prefill T=4096", (4096,)), ("decode B=16", (1,) * 16)):
            kw = qkv_case(lens, dtype)
            ours = timeit(lambda: ops.cca_qkv(**samples.clone_args(kw)), a.reps)
            base = timeit(lambda: ref.cca_qkv(**samples.clone_args(kw)), 1 if len(lens) == 1 else a.reps)
            print(f"cca_qkv {name} {label}: kernel {ours:.2f} ms, reference {base:.1f} ms, x{base / ours:.1f}")
        g = torch.Generator().manual_seed(0)
        for label, B, n, L in (("prefill T=2048", 1, 2048, 2048), ("decode B=16 ctx=2048", 16, 1, 2048)):
            q, k, v, args = paged(B, n, L, dtype, g)
            causal = n > 1
            kr, vr = k.repeat_interleave(NQ // NKV, 1), v.repeat_interleave(NQ // NKV, 1)
            ours = timeit(lambda: ops.cca_attention(**args), a.reps)
            gqa = timeit(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True), a.reps)
            rep = timeit(lambda: F.scaled_dot_product_attention(q, kr, vr, is_causal=causal), a.reps)
            print(f"cca_attention {name} {label}: kernel {ours:.1f} ms, SDPA gqa {gqa:.1f} ms (x{gqa / ours:.2f}), "
                  f"SDPA repeated KV {rep:.1f} ms (x{rep / ours:.2f})")


if __name__ == "__main__":
    main()
