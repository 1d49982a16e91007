"""Benchmark cases of the decoder layer's other ops: ``cca_qkv``, ``cca_attention``, ``router``, ``moe_top1``.

Each op runs in two phases:

* ``prefill``: one sequence of T new tokens (T from ``--tokens``);
* ``decode``: B sequences of one new token each (B from ``--batch``); attention and the CCA prologue
  then sit after ``ctx`` tokens already in the cache / state (``--context``).

Shapes are ZAYA1-8B's (H = 2048, nq = 8, nkv = 2, D = 128, rotary 64, R = 256, E = 16, I = 2048), or
tiny ones with ``--quick``. Providers: ``zaya`` (the compiled op; ``n/a`` where it has no kernel for the
device), ``eager`` (``zaya_ops.reference``), ``compile`` (torch.compile of the reference), and peers:

* attention: torch ``scaled_dot_product_attention`` on the same q and the same keys/values gathered dense
  from the paged cache (outside the timed region), causal, GQA through ``enable_gqa`` (or repeated KV heads
  where a backend refuses it; the row's note says so). On GPUs each backend separately
  (``sdpa-flash``, ``sdpa-efficient``, ``sdpa-cudnn``, ``sdpa-math`` via ``torch.nn.attention.sdpa_kernel``);
  on CPUs ``sdpa`` (torch's own choice);
* experts: ``grouped_mm`` (``torch._grouped_mm`` over the tokens sorted by expert, no host sync; skipped
  with a note where this torch/device lacks it, e.g. CUDA before sm90) and ``dense-loop`` (the same
  sorted tokens, one dense GEMM pair per expert in a Python loop, one host read of the counts).

Bytes are the minimum a call must move (every input read once, every output written once); FLOPs count
the multiply-adds of the matrix work (2 per MAC). The formulas are written out next to each ``cost``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .cases import Case, OpBench, SkipProvider, _randn, compare, hopper_gpu, nvidia_gpu, register

#: ZAYA1-8B's layer shapes, and the tiny ones of --quick (the same ratios where it matters: GQA, R < H).
ZAYA1_DIMS = dict(H=2048, nq=8, nkv=2, D=128, R=256, E=16, I=2048)
QUICK_DIMS = dict(H=256, nq=4, nkv=2, D=64, R=32, E=4, I=128)

DEFAULT_PREFILL_TOKENS = (1024, 4096, 16384)
QUICK_PREFILL_TOKENS = (37,)
DEFAULT_DECODE_BATCHES = (1, 8, 64, 256)
QUICK_DECODE_BATCHES = (1, 3)
DEFAULT_CONTEXT = 4096
QUICK_CONTEXT = 40
BLOCK_SIZE = 16  # the model's default KV block size
PHASES = ("prefill", "decode")


def _dims(keys: Sequence[str], quick: bool, hidden: int | None) -> dict[str, int]:
    d = dict(QUICK_DIMS if quick else ZAYA1_DIMS)
    if hidden:
        d["H"] = int(hidden)
    return {k: d[k] for k in keys}


class _LayerOpBench(OpBench):
    """Shared shape logic: prefill rows (T tokens, one sequence) and decode rows (B sequences x 1 token)."""

    dim_keys: tuple[str, ...] = ()
    #: whether decode rows carry a context length (attention and the CCA prologue do)
    uses_context: bool = False

    def shapes(self, *, quick: bool, tokens: Sequence[int] | None = None, hidden: int | None = None,
               batches: Sequence[int] | None = None, context: int | None = None,
               phases: Sequence[str] | None = None, **_: Any) -> list[dict[str, Any]]:
        dims = _dims(self.dim_keys, quick, hidden)
        phases = tuple(phases) if phases else PHASES
        out: list[dict[str, Any]] = []
        if "prefill" in phases:
            for t in tokens or (QUICK_PREFILL_TOKENS if quick else DEFAULT_PREFILL_TOKENS):
                out.append({"phase": "prefill", "T": int(t), **dims})
        if "decode" in phases:
            ctx = int(context or (QUICK_CONTEXT if quick else DEFAULT_CONTEXT))
            for b in batches or (QUICK_DECODE_BATCHES if quick else DEFAULT_DECODE_BATCHES):
                p: dict[str, Any] = {"phase": "decode", "B": int(b)}
                if self.uses_context:
                    p["ctx"] = ctx
                out.append({**p, **dims})
        return out

    @staticmethod
    def tokens_of(params: dict[str, Any]) -> int:
        """New tokens in the call: T for prefill, B for decode."""
        return int(params["T"] if params.get("phase", "prefill") == "prefill" else params["B"])


def _paged(num_seqs: int, lens: Sequence[int], device: torch.device, gen: torch.Generator,
           block_size: int = BLOCK_SIZE) -> tuple[int, torch.Tensor]:
    """A block table giving sequence b ``ceil(lens[b] / block_size)`` blocks of a shuffled pool (as a
    paged cache hands them out over time). Returns (num_blocks, block_table int32 [B, max_blocks])."""
    per = [-(-n // block_size) for n in lens]
    num_blocks = sum(per)
    order = torch.randperm(num_blocks, generator=gen).to(torch.int32)
    table = torch.zeros(num_seqs, max(per), dtype=torch.int32)
    nxt = 0
    for b, n in enumerate(per):
        table[b, :n] = order[nxt:nxt + n]
        nxt += n
    return num_blocks, table.to(device)


# --------------------------------------------------------------------------------------------------
# cca_qkv: the CCA prologue (two causal convolutions, residual means, delayed values, QK norm, RoPE)
# --------------------------------------------------------------------------------------------------


def cca_qkv_cost(T: int, B: int, nq: int, nkv: int, D: int, rot: int, esize: int = 2) -> tuple[int, int]:
    """(bytes, FLOPs) of one ``cca_qkv`` call on T tokens of B sequences.

    FLOPs: the grouped conv, nq+nkv groups of a D x D matrix per tap, 2 taps, 2 FLOPs per MAC:
        2 * T * (nq + nkv) * D * D * 2     (0.66 MFLOP per token at ZAYA1 shapes; the depthwise conv,
                                            means, QK norm and RoPE are O(T * C) and left out)
    bytes (esize = 2 for bf16):
        read  qt, kt, vc, vd            T * (nq*D + nkv*D + nkv*D/2 + nkv*D/2) * esize
        write q                         T * nq * D * esize
        write k and v into the cache    2 * T * nkv * D * esize
        conv weights and biases         (C*2 + C + C*D*2 + C + nkv) * esize,  C = (nq + nkv) * D
        RoPE rows, positions, slots     T * rot * esize + T * 8 + T * 8
        per-sequence state, read+write  2 * B * (C*2 + nkv*D/2) * esize, plus cu_seqlens/state_indices
    """
    C = (nq + nkv) * D
    act_in = T * (nq * D + 2 * nkv * D) * esize
    act_out = T * nq * D * esize + 2 * T * nkv * D * esize
    weights = (C * 2 + C + C * D * 2 + C + nkv) * esize
    rope_meta = T * rot * esize + T * 8 + T * 8 + (B + 1) * 4 + B * 4
    state = 2 * B * (C * 2 + nkv * D // 2) * esize
    flops = 2 * T * (nq + nkv) * D * D * 2
    return act_in + act_out + weights + rope_meta + state, flops


def cca_inputs(gen: torch.Generator, T: int, rope_rows: int, nq: int, nkv: int, D: int, dtype: torch.dtype,
               device: torch.device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The seeded inputs every CCA-prologue case shares: (qt, kt, vc, vd, the two convs' weights and biases,
    qk_temp), with qt/kt/vc/vd column slices of one [T, qkv] projection as in the model, and the RoPE
    table's first ``rope_rows`` rows (ZAYA1's partial rotary 0.5, theta 5e6). Nothing is allocated on the
    meta device."""
    from .. import reference

    rot = D // 2
    C = (nq + nkv) * D
    meta = torch.device(device).type == "meta"
    r = lambda *sh, sc=1.0: _randn(gen, *sh, dtype=dtype, device=device, scale=sc)  # noqa: E731
    proj = r(T, nq * D + 2 * nkv * D)
    qd, kd = nq * D, nkv * D
    qt, kt = proj[:, :qd], proj[:, qd:qd + kd]
    vc, vd = proj[:, qd + kd:qd + kd + kd // 2], proj[:, qd + kd + kd // 2:]
    conv_dw_w, conv_dw_b = r(C, 1, 2, sc=0.7), r(C, sc=0.05)
    conv_g_w, conv_g_b = r(C, D, 2, sc=(2 * D) ** -0.5), r(C, sc=0.05)
    qk_temp = r(nkv, sc=0.1) if meta else (0.75 + 0.5 * torch.rand(nkv, generator=gen)).to(device, dtype)
    if meta:
        cos_sin = torch.empty(rope_rows, rot, dtype=dtype, device=device)
    else:
        inv = reference.rope_inv_freq(D, rot / D, 5_000_000.0)
        cos_sin = reference.rope_cos_sin(inv, rope_rows, dtype).to(device)
    return (qt, kt, vc, vd, conv_dw_w, conv_dw_b, conv_g_w, conv_g_b, qk_temp), cos_sin


class CcaQkvBench(_LayerOpBench):
    """``cca_qkv``: prefill = one new sequence of T tokens (zero state); decode = B sequences at position
    ctx-1, one token each, with random conv/value state. qt/kt/vc/vd are column slices of one [T, qkv]
    projection, as in the model. The op writes its states and the KV cache (``Case.mutates``)."""

    name = "cca_qkv"
    dim_keys = ("nq", "nkv", "D")
    uses_context = True

    def providers_for(self, device):
        return (*self.providers, *(("v1",) if nvidia_gpu(device) else ()))  # v1: scalar fragment loads

    def known_providers(self, device):
        return self.providers_for(device)

    def build(self, params, dtype, device, gen):
        nq, nkv, D = params["nq"], params["nkv"], params["D"]
        rot = D // 2  # ZAYA1's partial rotary factor 0.5
        C = (nq + nkv) * D
        prefill = params["phase"] == "prefill"
        T = params["T"] if prefill else params["B"]
        B = 1 if prefill else params["B"]
        ctx = T if prefill else params["ctx"]
        r = lambda *sh, sc=1.0: _randn(gen, *sh, dtype=dtype, device=device, scale=sc)  # noqa: E731
        (qt, kt, vc, vd, conv_dw_w, conv_dw_b, conv_g_w, conv_g_b, qk_temp), cos_sin = \
            cca_inputs(gen, T, ctx, nq, nkv, D, dtype, device)
        if prefill:
            positions = torch.arange(T, dtype=torch.int64)
            cu = torch.tensor([0, T], dtype=torch.int32)
            num_blocks, table = _paged(1, [T], torch.device("cpu"), gen)
            slots = table[0].to(torch.int64)[positions // BLOCK_SIZE] * BLOCK_SIZE + positions % BLOCK_SIZE
            conv_state = torch.zeros(1, C, 2, dtype=dtype, device=device)
            value_state = torch.zeros(1, nkv * D // 2, dtype=dtype, device=device)
        else:
            positions = torch.full((B,), ctx - 1, dtype=torch.int64)
            cu = torch.arange(B + 1, dtype=torch.int32)
            # one block per sequence holds its new token (the earlier keys are not touched by this op)
            num_blocks = B
            slots = torch.randperm(B, generator=gen).to(torch.int64) * BLOCK_SIZE + (ctx - 1) % BLOCK_SIZE
            conv_state, value_state = r(B, C, 2), r(B, nkv * D // 2)
        state_indices = torch.arange(B, dtype=torch.int32)
        k_cache = torch.zeros(num_blocks, BLOCK_SIZE, nkv, D, dtype=dtype, device=device)
        v_cache = torch.zeros(num_blocks, BLOCK_SIZE, nkv, D, dtype=dtype, device=device)
        args = (qt, kt, vc, vd, conv_dw_w, conv_dw_b, conv_g_w, conv_g_b, qk_temp, cos_sin,
                positions.to(device), cu.to(device), conv_state, value_state, state_indices.to(device),
                k_cache, v_cache, slots.to(device))
        nbytes, flops = cca_qkv_cost(T, B, nq, nkv, D, rot, torch.finfo(dtype).bits // 8)
        # args 12, 13, 15, 16: conv_state, value_state, k_cache, v_cache (written in place)
        return Case(self.name, params, dtype, device, args, {}, bytes=nbytes, flops=flops,
                    mutates=(12, 13, 15, 16))


# --------------------------------------------------------------------------------------------------
# cca_attention: causal GQA attention over the paged KV cache, and torch SDPA on the same q/k/v
# --------------------------------------------------------------------------------------------------


def attention_cost(seqs: Sequence[tuple[int, int]], nq: int, nkv: int, D: int, max_blocks: int = 0,
                   esize: int = 2) -> tuple[int, int]:
    """(bytes, FLOPs) of one ``cca_attention`` call; ``seqs`` = [(new queries n_b, keys L_b)].

    FLOPs: QK^T and PV, 2 FLOPs per MAC each, over the causal (query, key) pairs only:
        4 * nq * D * sum_b pairs_b,   pairs_b = n_b * (L_b - n_b) + n_b * (n_b + 1) / 2
        (prefill of T tokens: T(T+1)/2 pairs; decode: L pairs per sequence)
    bytes: q and out T * nq * D * esize each, lse nq * T * 4, and every cached key and value once:
        decode KV bytes = sum_b L_b * 2 * nkv * D * esize   (1 KiB per cached token at ZAYA1 shapes)
        plus cu_seqlens, seqused_k and the block table rows (4 bytes each).
    """
    T = sum(n for n, _ in seqs)
    pairs = sum(n * (L - n) + n * (n + 1) // 2 for n, L in seqs)
    kv = sum(L for _, L in seqs) * 2 * nkv * D * esize
    B = len(seqs)
    nbytes = 2 * T * nq * D * esize + nq * T * 4 + kv + (B + 1) * 4 + B * 4 + B * max_blocks * 4
    return nbytes, 4 * nq * D * pairs


SDPA_GPU_BACKENDS = {
    "sdpa-flash": "FLASH_ATTENTION",
    "sdpa-efficient": "EFFICIENT_ATTENTION",
    "sdpa-cudnn": "CUDNN_ATTENTION",
    "sdpa-math": "MATH",
}


class CcaAttentionBench(_LayerOpBench):
    """``cca_attention``: prefill = one sequence of T tokens attending causally to itself (T keys);
    decode = B sequences of one query after ctx - 1 cached tokens (ctx keys each). Keys/values random in
    a shuffled paged cache of block size 16."""

    name = "cca_attention"
    dim_keys = ("nq", "nkv", "D")
    uses_context = True

    def providers_for(self, device):
        dev = torch.device(device)
        peers = tuple(SDPA_GPU_BACKENDS) if dev.type == "cuda" else ("sdpa",)
        hopper = ("zaya-wgmma",) if hopper_gpu(dev) else ()
        v1 = ("v1",) if nvidia_gpu(dev) else ()
        return (*self.providers, *v1, *hopper, *peers)

    def known_providers(self, device):
        return (*self.providers_for(device), "sdpa")

    def build(self, params, dtype, device, gen):
        nq, nkv, D = params["nq"], params["nkv"], params["D"]
        prefill = params["phase"] == "prefill"
        if prefill:
            seqs = [(params["T"], params["T"])]
        else:
            seqs = [(1, params["ctx"])] * params["B"]
        B = len(seqs)
        T = sum(n for n, _ in seqs)
        num_blocks, table = _paged(B, [L for _, L in seqs], torch.device("cpu"), gen)
        q = _randn(gen, T, nq, D, dtype=dtype, device=device)
        k_cache = _randn(gen, num_blocks, BLOCK_SIZE, nkv, D, dtype=dtype, device=device)
        v_cache = _randn(gen, num_blocks, BLOCK_SIZE, nkv, D, dtype=dtype, device=device)
        cu = torch.tensor([0, *torch.tensor([n for n, _ in seqs]).cumsum(0).tolist()], dtype=torch.int32)
        used = torch.tensor([L for _, L in seqs], dtype=torch.int32)
        args = (q, k_cache, v_cache, cu.to(device), used.to(device), table.to(device))
        kwargs = {"scale": D ** -0.5, "max_seqlen_q": max(n for n, _ in seqs),
                  "max_seqlen_k": max(L for _, L in seqs)}
        nbytes, flops = attention_cost(seqs, nq, nkv, D, table.shape[1], torch.finfo(dtype).bits // 8)
        return Case(self.name, params, dtype, device, args, kwargs, bytes=nbytes, flops=flops,
                    extra={"seqs": seqs, "block_table_cpu": table})

    # -- SDPA ---------------------------------------------------------------------------------------

    @staticmethod
    def _dense(case: Case) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """q [B, nq, n, D], k and v [B, nkv, L, D] gathered from the paged cache (all sequences of a case
        have the same n and L), and whether the mask is causal (n == L; a single decode query sees every
        key, and SDPA's is_causal would align it top-left)."""
        q, k_cache, v_cache = case.args[0], case.args[1], case.args[2]
        seqs = case.extra["seqs"]
        n, L = seqs[0]
        if any(s != seqs[0] for s in seqs):
            raise SkipProvider("SDPA peer needs sequences of one length")
        B, (T, nq, D) = len(seqs), q.shape
        bs = k_cache.shape[1]
        table = case.extra["block_table_cpu"].to(torch.int64)
        j = torch.arange(L)
        blocks = table[:, j // bs].to(q.device)  # [B, L]
        offs = (j % bs).to(q.device)
        k = k_cache[blocks, offs[None, :].expand(B, L)].permute(0, 2, 1, 3).contiguous()  # [B, nkv, L, D]
        v = v_cache[blocks, offs[None, :].expand(B, L)].permute(0, 2, 1, 3).contiguous()
        q4 = q.reshape(B, n, nq, D).transpose(1, 2)  # a view, as a model would pass it
        return q4, k, v, n == L

    def _sdpa_fn(self, provider: str, case: Case) -> Callable[[], Any]:
        if case.device.type == "meta":
            raise SkipProvider("meta device")
        q4, k, v, causal = self._dense(case)
        B, nq, n, D = q4.shape
        T = B * n
        scale = case.kwargs["scale"]
        backends = None
        if provider != "sdpa":
            if case.device.type != "cuda":
                raise SkipProvider(f"{provider} is a GPU backend (on CPUs use 'sdpa')")
            from torch.nn.attention import SDPBackend, sdpa_kernel

            backend = getattr(SDPBackend, SDPA_GPU_BACKENDS[provider], None)
            if backend is None:
                raise SkipProvider(f"this torch has no SDPBackend.{SDPA_GPU_BACKENDS[provider]}")
            backends = (sdpa_kernel, [backend])

        def make(kk, vv, gqa):
            def run():
                if backends is None:
                    o = F.scaled_dot_product_attention(q4, kk, vv, is_causal=causal, scale=scale, enable_gqa=gqa)
                else:
                    with backends[0](backends[1]):
                        o = F.scaled_dot_product_attention(q4, kk, vv, is_causal=causal, scale=scale,
                                                           enable_gqa=gqa)
                return o.transpose(1, 2).reshape(T, nq * D)
            return run

        fn = make(k, v, True)
        try:
            fn()
            fn.note = "enable_gqa"
            return fn
        except (RuntimeError, TypeError) as exc:
            first = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:200]
        g = nq // k.shape[1]  # repeat_kv outside the timed region, as transformers' eager path does
        fn = make(k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1), False)
        try:
            fn()
        except (RuntimeError, TypeError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise SkipProvider(f"{provider} cannot run this case: {type(exc).__name__}: {msg}"[:300]) from None
        fn.note = f"KV heads repeated (enable_gqa refused: {first})"
        return fn

    def make_provider(self, provider, case):
        if provider == "sdpa" or provider in SDPA_GPU_BACKENDS:
            return self._sdpa_fn(provider, case)
        return super().make_provider(provider, case)

    def check(self, provider, case, out, expected):
        if provider == "sdpa" or provider in SDPA_GPU_BACKENDS:  # SDPA gives no lse: compare out only
            a, r, ok = compare(out, expected[0], case.dtype)
            return a, r, ok, ""
        return super().check(provider, case, out, expected)


# --------------------------------------------------------------------------------------------------
# router
# --------------------------------------------------------------------------------------------------


def router_cost(T: int, H: int, R: int, E: int, esize: int = 2) -> tuple[int, int]:
    """(bytes, FLOPs) of one ``router`` call (a layer after the first: prev_state and states_scale given,
    logits not returned).

    FLOPs: down projection H -> R, fc1 and fc2 R -> R, out R -> E+1, 2 FLOPs per MAC:
        2 * T * (H*R + 2*R*R + R*(E+1))   (1.3 MFLOP per token at ZAYA1 shapes)
    bytes: read x T*H and prev_state T*R (esize), the weights (R*H + 2*R*R + (E+1)*R) * esize, five [R]
    vectors (down bias, states scale, norm, fc1/fc2 biases) and the fp32 balancing biases (E+1)*4;
    write the index T*4 (int32), the weight T*esize, the router state T*R*esize and the counts (E+1)*4.
    """
    nbytes = (T * H + T * R) * esize + (R * H + 2 * R * R + (E + 1) * R) * esize + 5 * R * esize \
        + (E + 1) * 4 + T * 4 + T * esize + T * R * esize + (E + 1) * 4
    return nbytes, 2 * T * (H * R + 2 * R * R + R * (E + 1))


class RouterBench(_LayerOpBench):
    """``router`` (a layer after the first: with the previous layer's state); prefill = T tokens,
    decode = B tokens. Weights scaled so that every expert and the skip class get chosen."""

    name = "router"
    dim_keys = ("H", "R", "E")

    def providers_for(self, device):
        return (*self.providers, *(("v1",) if nvidia_gpu(device) else ()))

    def known_providers(self, device):
        return self.providers_for(device)

    def build(self, params, dtype, device, gen):
        H, R, E = params["H"], params["R"], params["E"]
        T = self.tokens_of(params)
        r = lambda *sh, sc=1.0, sh0=0.0: _randn(gen, *sh, dtype=dtype, device=device, scale=sc, shift=sh0)  # noqa: E731
        bb = _randn(gen, E + 1, dtype=torch.float32, device=device, scale=0.05)
        args = (r(T, H), r(T, R), r(R, H, sc=H ** -0.5), r(R, sc=0.05), r(R, sc=0.1, sh0=1.0),
                r(R, sc=0.1, sh0=1.0), r(R, R, sc=R ** -0.5), r(R, sc=0.05), r(R, R, sc=R ** -0.5),
                r(R, sc=0.05), r(E + 1, R, sc=3 * R ** -0.5), bb)
        nbytes, flops = router_cost(T, H, R, E, torch.finfo(dtype).bits // 8)
        return Case(self.name, params, dtype, device, args, {"eps": 1e-5}, bytes=nbytes, flops=flops)

    def expected(self, case):
        from .. import reference

        out = case.bind(reference.router)()
        # the reference's logits, to tell a near-tie from a wrong choice in check()
        case.extra["ref_logits"] = reference.router(*case.args, eps=case.kwargs["eps"], return_logits=True)[3]
        return out

    def check(self, provider, case, out, expected):
        """Expert choices must equal the reference's, except at near-ties: where a provider picks another
        class, the reference's biased probability of that class must be within 1e-2 (about two bf16
        roundings of a probability) of the best. The weight is compared where the choices agree; the
        counts must equal the histogram of the provider's own choices."""
        idx, w, st, lg, cnt = out
        ridx, rw, rst, rlg, rcnt = expected
        if idx.shape != ridx.shape or idx.dtype != ridx.dtype:
            return float("inf"), float("inf"), False, f"index {idx.dtype}{tuple(idx.shape)} != reference"
        same = idx.to(torch.int64) == ridx.to(torch.int64)
        note = ""
        ok_flips = True
        nflip = int((~same).sum())
        if nflip:
            bb = case.args[-1]
            biased = torch.softmax(case.extra["ref_logits"].float(), dim=-1) + bb.float()
            got = biased.gather(1, idx.to(torch.int64)[:, None])[:, 0]
            gap = (biased.max(dim=-1).values - got)[~same]
            ok_flips = bool((gap <= 1e-2).all())
            note = f"{nflip} of {idx.numel()} expert choices differ (largest probability gap {float(gap.max()):.2g})"
        a1, r1, ok1 = compare((w[same], st), (rw[same], rst), case.dtype)
        ok_cnt = bool(torch.equal(cnt.cpu(), torch.bincount(idx.to(torch.int64).cpu(), minlength=cnt.numel())
                                  .to(cnt.dtype)))
        if not ok_cnt:
            note = (note + "; " if note else "") + "counts do not match the chosen indices"
        return a1, r1, ok1 and ok_flips and ok_cnt and lg.shape == rlg.shape, note


# --------------------------------------------------------------------------------------------------
# moe_top1: top-1 SiLU-gated experts, torch._grouped_mm and a per-expert loop
# --------------------------------------------------------------------------------------------------


def moe_cost(T: int, routed: int, hit: int, H: int, I: int, E: int, esize: int = 2) -> tuple[int, int]:
    """(bytes, FLOPs) of one ``moe_top1`` call: T tokens, ``routed`` of them not skipped, ``hit``
    distinct experts chosen.

    FLOPs: gate/up H -> 2I and down I -> H for each routed token, 2 FLOPs per MAC:
        2 * T_routed * H * 3I   (25 MFLOP per routed token at ZAYA1 shapes)
    bytes: the weights of the experts hit, hit * 3 * I * H * esize (25 MB each at ZAYA1 shapes), read x
    of the routed tokens T_routed * H * esize, the index T * 4 and weight T * esize, write out T * H * esize.
    """
    nbytes = hit * 3 * I * H * esize + routed * H * esize + T * 4 + T * esize + T * H * esize
    return nbytes, 2 * routed * H * 3 * I


def _routing(T: int, E: int, gen: torch.Generator) -> torch.Tensor:
    """Seeded top-1 choices, uniform over the E experts and the skip class E; at least one token routed
    (a decode row of one skipped token would time nothing)."""
    idx = torch.randint(0, E + 1, (T,), generator=gen, dtype=torch.int32)
    if not bool((idx < E).any()):
        idx[0] = int(torch.randint(0, E, (1,), generator=gen))
    return idx


def moe_grouped_mm(x, expert_index, expert_weight, gate_up_proj, down_proj):
    """The experts with ``torch._grouped_mm``: tokens sorted by expert (skip class last), one grouped GEMM
    for gate/up over the groups ``offs``, SiLU * up, one grouped GEMM for down, weighted, unsorted. Static
    shapes, no host sync; rows past the last group (skipped tokens) are zeroed with a select."""
    E, I2, _ = gate_up_proj.shape
    idx = expert_index.to(torch.int64)
    order = torch.argsort(idx, stable=True)
    offs = torch.cumsum(torch.bincount(idx, minlength=E + 1)[:E], 0).to(torch.int32)
    xs = x.index_select(0, order)
    h = torch._grouped_mm(xs, gate_up_proj.transpose(-2, -1), offs=offs)  # [T, 2I]
    h = F.silu(h[:, :I2 // 2]) * h[:, I2 // 2:]
    y = torch._grouped_mm(h, down_proj.transpose(-2, -1), offs=offs)  # [T, H]
    y = y * expert_weight.index_select(0, order)[:, None]
    y = torch.where((idx.index_select(0, order) < E)[:, None], y, torch.zeros((), dtype=y.dtype, device=y.device))
    out = torch.empty_like(x)
    out.index_copy_(0, order, y)
    return out


def moe_dense_loop(x, expert_index, expert_weight, gate_up_proj, down_proj):
    """The experts as a loop of dense per-expert GEMMs over the tokens sorted by expert (one host read of
    the per-expert counts), the same rounding points as the reference."""
    E, I2, _ = gate_up_proj.shape
    idx = expert_index.to(torch.int64)
    order = torch.argsort(idx, stable=True)
    counts = torch.bincount(idx, minlength=E + 1).tolist()
    xs = x.index_select(0, order)
    ws = expert_weight.index_select(0, order)
    ys = torch.zeros_like(xs)
    start = 0
    for e in range(E):
        n = counts[e]
        if n:
            gate, up = F.linear(xs[start:start + n], gate_up_proj[e]).chunk(2, dim=-1)
            h = F.linear(F.silu(gate) * up, down_proj[e])
            ys[start:start + n] = h * ws[start:start + n, None]
            start += n
    out = torch.zeros_like(x)
    out.index_copy_(0, order[:start], ys[:start])
    return out


class MoeTop1Bench(_LayerOpBench):
    """``moe_top1``: prefill = T tokens, decode = B tokens, top-1 choices uniform over E experts + skip
    (seeded). Weight bytes count only the experts actually chosen in the case."""

    name = "moe_top1"
    dim_keys = ("H", "E", "I")
    peers = ("grouped_mm", "dense-loop")

    def providers_for(self, device):
        # zaya-wgmma-v1: the Hopper kernels with 16-byte no-swizzle TMA boxes, timed against the swizzled ones
        hopper = ("zaya-wgmma", "zaya-wgmma-v1") if hopper_gpu(device) else ()
        v1 = ("v1",) if nvidia_gpu(device) else ()
        return (*self.providers, *v1, *hopper, *self.peers)

    def known_providers(self, device):
        return self.providers_for(device)

    def build(self, params, dtype, device, gen):
        H, E, I = params["H"], params["E"], params["I"]
        T = self.tokens_of(params)
        idx = _routing(T, E, gen)
        w = torch.rand(T, generator=gen)
        w[idx == E] = 0
        routed = int((idx < E).sum())
        hit = int(torch.unique(idx[idx < E]).numel())
        x = _randn(gen, T, H, dtype=dtype, device=device)
        gate_up = _randn(gen, E, 2 * I, H, dtype=dtype, device=device, scale=H ** -0.5)
        down = _randn(gen, E, H, I, dtype=dtype, device=device, scale=I ** -0.5)
        args = (x, idx.to(device), w.to(device=device, dtype=dtype), gate_up, down)
        nbytes, flops = moe_cost(T, routed, hit, H, I, E, torch.finfo(dtype).bits // 8)
        return Case(self.name, params, dtype, device, args, {}, bytes=nbytes, flops=flops,
                    extra={"routed": routed, "experts_hit": hit})

    def make_provider(self, provider, case):
        if provider == "grouped_mm":
            if not hasattr(torch, "_grouped_mm"):
                raise SkipProvider(f"torch {torch.__version__} has no torch._grouped_mm")
            fn = case.bind(moe_grouped_mm)
            try:
                fn()
            except (RuntimeError, NotImplementedError, TypeError) as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                where = case.device.type
                if where == "cuda" and not getattr(torch.version, "hip", None):
                    cap = torch.cuda.get_device_capability(case.device)
                    where = f"cuda sm_{cap[0]}{cap[1]}"
                raise SkipProvider(f"torch._grouped_mm unavailable here ({where}, {case.dtype_name}): "
                                   f"{type(exc).__name__}: {msg}"[:300]) from None
            return fn
        if provider == "dense-loop":
            return case.bind(moe_dense_loop)
        return super().make_provider(provider, case)


register(CcaQkvBench())
register(CcaAttentionBench())
register(RouterBench())
register(MoeTop1Bench())


def expected_experts_hit(T: int, E: int) -> float:
    """Expected distinct experts chosen by T tokens routed uniformly over E experts + skip."""
    return E * (1.0 - (1.0 - 1.0 / (E + 1)) ** T)


def projected_cost(op: str, params: dict[str, Any], dtype: torch.dtype = torch.bfloat16) -> tuple[int, int]:
    """(bytes, FLOPs) of ``op`` at ``params`` without building inputs (the expert routing at its
    expectation under uniform choices): used for projections to devices nobody has run on."""
    es = torch.finfo(dtype).bits // 8
    phase = params.get("phase", "prefill")
    T = int(params["T"] if phase == "prefill" else params.get("B", params.get("T")))
    if op == "cca_qkv":
        return cca_qkv_cost(T, 1 if phase == "prefill" else T, params["nq"], params["nkv"], params["D"],
                            params["D"] // 2, es)
    if op == "cca_attention":
        seqs = [(T, T)] if phase == "prefill" else [(1, params["ctx"])] * T
        return attention_cost(seqs, params["nq"], params["nkv"], params["D"],
                              max(-(-L // BLOCK_SIZE) for _, L in seqs), es)
    if op == "router":
        return router_cost(T, params["H"], params["R"], params["E"], es)
    if op == "moe_top1":
        E = params["E"]
        routed = round(T * E / (E + 1))
        hit = max(1, round(expected_experts_hit(T, E)))
        return moe_cost(T, max(routed, 1), hit, params["H"], params["I"], E, es)
    raise KeyError(op)


__all__ = [
    "CcaAttentionBench", "CcaQkvBench", "MoeTop1Bench", "RouterBench", "attention_cost", "cca_inputs", "cca_qkv_cost",
    "expected_experts_hit", "moe_cost", "moe_dense_loop", "moe_grouped_mm", "projected_cost", "router_cost",
]
