"""Validation of index values (cu_seqlens, block tables, state slots, positions, cache slots, expert
indices) for direct calls of the op wrappers (``zaya_ops.<op>``).

The GPU glue never reads index values (a host read would synchronise with the device at every call,
csrc/gpu/glue.h): the model validates its metadata where it makes it, once per change of batch
(``ZayaCache.validate_batch``), and a direct call is validated here. Each check evaluates every rule
at once on the tensors' device and reads one small result on the host (one sync per call on a GPU);
only when a rule fails are the values copied to the host to name the first bad entry, with the same
messages as the CPU kernels' C++ checks (csrc/cca_checks.h, csrc/cca_qkv_checks.h,
csrc/cpu/moe_top1.cpp).

:func:`enabled` says whether a call validates: not with ``ZAYA_CHECK_INDICES=0`` (eager serving
loops), not while a CUDA graph is being captured and not while torch.compile traces (neither can
read values on the host). The kernels then guard themselves: an out-of-range index is never followed
(tests/test_unchecked_indices_gpu.py).
"""

from __future__ import annotations

import os

import torch

__all__ = ["enabled", "cca_qkv", "cca_qkv_functional", "cca_attention", "moe_top1"]


def enabled(t: torch.Tensor) -> bool:
    """Whether a direct op call on ``t``'s device validates its index values now."""
    if torch.compiler.is_compiling():
        return False
    if os.environ.get("ZAYA_CHECK_INDICES") == "0":
        return False
    return not (t.device.type == "cuda" and torch.cuda.is_current_stream_capturing())


def _host(flags: list[torch.Tensor]) -> list[int]:
    """The one host read of a check: every flag and maximum, as ints."""
    return torch.stack([f.to(torch.int64) for f in flags]).tolist()


def _cu_flags(cu: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(run lengths n [B], bad flag) of a cu_seqlens vector (int64, >= 2 entries)."""
    n = cu[1:] - cu[:-1]
    return n, (cu[0] != 0) | (n < 0).any() | (cu[-1] != T)


def _raise_cu(name: str, cu: list[int], T: int) -> None:
    """The first broken rule of a cu_seqlens vector, as csrc/arg_checks.h words it."""
    if cu[0] != 0:
        raise ValueError(f"{name}[0] must be 0, got {cu[0]}")
    for b in range(1, len(cu)):
        if cu[b] < cu[b - 1]:
            raise ValueError(f"{name} must be non-decreasing, but {name}[{b}] = {cu[b]} < {name}[{b - 1}] = "
                             f"{cu[b - 1]}")
    if cu[-1] != T:
        raise ValueError(f"{name}[-1] must equal the number of tokens {T}, got {cu[-1]}")


def cca_attention(T: int, num_blocks: int, block_size: int, cu_seqlens_q: torch.Tensor, seqused_k: torch.Tensor,
                  block_table: torch.Tensor, max_seqlen_q: int | None, max_seqlen_k: int | None) -> tuple[int, int]:
    """Check cca_attention's index values (shapes and dtypes already checked); returns the longest query
    run and the longest seqused_k of the sequences with queries (the exact max_seqlen_q/k).

    Rules: cu_seqlens_q starts at 0, never decreases and ends at T; ``seqused_k[b] >= n_b``; for a
    sequence with queries, ``seqused_k[b]`` fits the block table and the table entries it uses lie in
    the cache; given max_seqlen_q/k bound the runs.
    """
    cu = cu_seqlens_q.to(torch.int64)
    used = seqused_k.to(torch.int64)
    cols = block_table.shape[1]
    n, bad_cu = _cu_flags(cu, T)
    live = n > 0
    need = (used.clamp(min=0) + block_size - 1) // block_size  # blocks each sequence reads
    cols_used = torch.arange(cols, device=cu.device)[None, :] < need[:, None]
    off = (block_table < 0) | (block_table >= num_blocks)
    flags = [bad_cu, (used < n).any(), (live & (used > cols * block_size)).any(),
             (live[:, None] & cols_used & off).any(), torch.where(live, n, 0).max(), torch.where(live, used, 0).max()]
    bad_cu, bad_used, bad_cap, bad_table, longest_q, longest_k = _host(flags)
    if bad_cu or bad_used or bad_cap or bad_table:
        cu_h, used_h, table_h = cu.tolist(), used.tolist(), block_table.tolist()
        _raise_cu("cu_seqlens_q", cu_h, T)
        for b in range(len(used_h)):
            nb, L = cu_h[b + 1] - cu_h[b], used_h[b]
            if L < nb:
                raise ValueError(f"seqused_k[{b}] = {L} is smaller than the sequence's {nb} new queries "
                                 f"(seqused_k counts them too)")
            if nb == 0:
                continue
            if L > cols * block_size:
                raise ValueError(f"seqused_k[{b}] = {L} exceeds the block_table capacity of {cols} blocks of "
                                 f"{block_size} keys")
            for kb in range(-(-L // block_size)):
                e = table_h[b][kb]
                if not 0 <= e < num_blocks:
                    raise ValueError(f"block_table[{b}, {kb}] = {e} is outside the cache's {num_blocks} blocks")
        raise AssertionError("zaya_ops: index check flagged an error it cannot name")  # pragma: no cover
    if max_seqlen_q is not None and max_seqlen_q < longest_q:
        raise ValueError(f"max_seqlen_q = {max_seqlen_q} is smaller than the longest query run ({longest_q})")
    if max_seqlen_k is not None and max_seqlen_k < longest_k:
        raise ValueError(f"max_seqlen_k = {max_seqlen_k} is smaller than the longest seqused_k ({longest_k})")
    return longest_q, longest_k


def cca_qkv(T: int, P: int, S: int, cache_slots: int, block_size: int, cu_seqlens: torch.Tensor,
            state_indices: torch.Tensor, positions: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Check cca_qkv's index values (shapes and dtypes already checked).

    Rules: cu_seqlens as for cca_attention; each sequence's state slot lies in ``[0, S)`` and no two
    sequences with tokens share one; positions lie in ``[0, P)`` (rows of cos_sin); slot_mapping in
    ``[-1, cache_slots)`` (-1 skips the cache write).
    """
    op = "zaya::cca_qkv"
    cu = cu_seqlens.to(torch.int64)
    slots = state_indices.to(torch.int64)
    n, bad_cu = _cu_flags(cu, T)
    B = slots.shape[0]
    # Slots of sequences with tokens must be distinct: sort them (empty ones get unique negatives).
    keyed = torch.where(n > 0, slots, -1 - torch.arange(B, device=slots.device)).sort().values
    flags = [bad_cu, ((slots < 0) | (slots >= S)).any(), (keyed[1:] == keyed[:-1]).any(),
             ((positions < 0) | (positions >= P)).any(), ((slot_mapping < -1) | (slot_mapping >= cache_slots)).any()]
    if not any(_host(flags)):
        return
    cu_h, slots_h = cu.tolist(), slots.tolist()
    _raise_cu("cu_seqlens", cu_h, T)
    seen = set()
    for b, s in enumerate(slots_h):
        if not 0 <= s < S:
            raise ValueError(f"{op}: state_indices[{b}] = {s} is outside the {S} state slots")
        if cu_h[b + 1] != cu_h[b]:
            if s in seen:
                raise ValueError(f"{op}: state_indices[{b}] = {s} is the slot of an earlier sequence of this call: "
                                 f"each sequence needs its own slot")
            seen.add(s)
    for t, (p, m) in enumerate(zip(positions.tolist(), slot_mapping.tolist())):
        if not 0 <= p < P:
            raise ValueError(f"{op}: positions[{t}] = {p} is outside the {P} rows of cos_sin")
        if not -1 <= m < cache_slots:
            raise ValueError(f"{op}: slot_mapping[{t}] = {m} is outside the cache ({cache_slots // block_size} "
                             f"blocks of {block_size} slots; -1 skips)")
    raise AssertionError("zaya_ops: index check flagged an error it cannot name")  # pragma: no cover


def moe_top1(expert_index: torch.Tensor, E: int) -> None:
    """Check that every expert index lies in ``0..E`` (E = the skip class)."""
    bad = (expert_index < 0) | (expert_index > E)
    if not _host([bad.any()])[0]:
        return
    pos = int(bad.nonzero()[0, 0])
    raise ValueError(f"moe_top1: expert_index entries must lie in 0..{E} ({E} = skip class), got "
                     f"{int(expert_index[pos])} at position {pos}")


def cca_qkv_functional(T: int, P: int, cu_seqlens: torch.Tensor, positions: torch.Tensor) -> None:
    """Check cca_qkv_functional's index values: cu_seqlens as for cca_qkv, positions in ``[0, P)``."""
    cu = cu_seqlens.to(torch.int64)
    _, bad_cu = _cu_flags(cu, T)
    if not any(_host([bad_cu, ((positions < 0) | (positions >= P)).any()])):
        return
    _raise_cu("cu_seqlens", cu.tolist(), T)
    for t, p in enumerate(positions.tolist()):
        if not 0 <= p < P:
            raise ValueError(f"zaya::cca_qkv_functional: positions[{t}] = {p} is outside the {P} rows of cos_sin")
    raise AssertionError("zaya_ops: index check flagged an error it cannot name")  # pragma: no cover
