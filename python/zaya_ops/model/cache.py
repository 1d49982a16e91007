"""``ZayaCache``: the decode state of a batch of sequences, in the layouts the ops use.

Per layer: a paged KV cache ``k``/``v`` [num_blocks, block_size, nkv, D] (k after QK-norm and RoPE), the
CCA ``conv_state`` [S, C, 2] (the last two raw z = [qt; kt] steps) and ``value_state`` [S, nkv*D/2] (the
last delayed value projection), for S sequence slots. Shared by all layers: ``block_table`` int32
[S, max_blocks_per_seq] (block ids of each slot's tokens, in order) and ``seq_lens`` int32 [S] (tokens
cached per slot), on the model's device, with host mirrors that the bookkeeping uses (so the decode step
needs no device-to-host reads).

Blocks come from a shared pool as sequences grow (``reserve``), so a cache can hold many short sequences
and a few long ones; by default the pool is large enough for every slot to reach ``max_seq_len``.

The index metadata the kernels receive (state slots, block-table entries, positions and cache slots
derived from them) is made here, and validated here on the host mirrors (``validate_batch``): once per
change of batch or allocation, not per op call, so the model calls the ops without their per-call index
check and a decode step reads nothing back from the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import ZayaConfig

__all__ = ["ZayaCache"]


class ZayaCache:
    """Paged KV cache plus per-slot conv/value states for every layer of one model.

    Create it with :meth:`ZayaForCausalLM.new_cache` (which ties it to the model). Sequences are admitted
    into free slots with :meth:`admit` (their states are reset), grow with :meth:`reserve` (bounds check and
    block allocation, done by the model before each step) and leave with :meth:`release`.

    Args:
        config: the model config.
        max_seqs: number of sequence slots S.
        max_seq_len: the most tokens one sequence may hold (<= max_position_embeddings).
        block_size: tokens per KV block.
        num_blocks: size of the block pool (default: ``max_seqs * ceil(max_seq_len / block_size)``).
        device, dtype: of the cache tensors (the model's).
        value_state_init: per layer, the value a new slot's ``value_state`` starts with (the delayed-value
            projection bias, or None for zero).
        owner: an opaque token of the model that made the cache (checked by the model).
    """

    def __init__(
        self,
        config: ZayaConfig,
        max_seqs: int,
        max_seq_len: int,
        *,
        block_size: int = 16,
        num_blocks: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        value_state_init: Sequence[torch.Tensor | None] | None = None,
        owner: object = None,
    ) -> None:
        for name, v in (("max_seqs", max_seqs), ("max_seq_len", max_seq_len), ("block_size", block_size)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if max_seq_len > config.max_position_embeddings:
            raise ValueError(f"max_seq_len {max_seq_len} exceeds the model's max_position_embeddings "
                             f"{config.max_position_embeddings}")
        self.config = config
        self.max_seqs = max_seqs
        self.max_seq_len = max_seq_len
        self.block_size = block_size
        self.max_blocks_per_seq = -(-max_seq_len // block_size)
        if num_blocks is None:
            num_blocks = max_seqs * self.max_blocks_per_seq
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive integer, got {num_blocks!r}")
        self.num_blocks = num_blocks
        self.device = torch.device(device)
        self.dtype = dtype
        self.owner = owner
        L, nkv, D, C = config.num_hidden_layers, config.num_key_value_heads, config.head_dim, config.conv_channels
        kw = dict(device=self.device, dtype=dtype)
        self.k = [torch.zeros(num_blocks, block_size, nkv, D, **kw) for _ in range(L)]
        self.v = [torch.zeros(num_blocks, block_size, nkv, D, **kw) for _ in range(L)]
        self.conv_state = [torch.zeros(max_seqs, C, 2, **kw) for _ in range(L)]
        self.value_state = [torch.zeros(max_seqs, nkv * D // 2, **kw) for _ in range(L)]
        if value_state_init is not None and len(value_state_init) != L:
            raise ValueError(f"value_state_init needs {L} entries (one per layer), got {len(value_state_init)}")
        self._value_init = list(value_state_init) if value_state_init is not None else [None] * L
        # Unused block-table entries point at block 0: never read (seqused_k bounds every read), never
        # written (slot_mapping is built only for reserved positions).
        self.block_table = torch.zeros(max_seqs, self.max_blocks_per_seq, dtype=torch.int32, device=self.device)
        self.seq_lens = torch.zeros(max_seqs, dtype=torch.int32, device=self.device)
        self._host_table: list[list[int]] = [[] for _ in range(max_seqs)]
        self._host_lens = [0] * max_seqs
        self._active: list[int] = []
        self._free_blocks = list(range(num_blocks - 1, -1, -1))  # pop() hands out 0, 1, 2, ...
        # Bumped by every change of the slots' allocation (admit, release, a new block): validate_batch
        # keeps its last result until the batch or this changes.
        self._version = 0
        self._validated: tuple | None = None

    # ------------------------------------------------------------------------------------------
    @property
    def active_slots(self) -> list[int]:
        """Slots holding a sequence, in admission order."""
        return list(self._active)

    def seq_len(self, slot: int) -> int:
        """Tokens cached for ``slot`` (host bookkeeping, no device read)."""
        self._check_slots([slot])
        return self._host_lens[slot]

    @property
    def free_blocks(self) -> int:
        """Blocks left in the pool."""
        return len(self._free_blocks)

    def memory_bytes(self) -> int:
        """Bytes held by the cache tensors."""
        ts = self.k + self.v + self.conv_state + self.value_state + [self.block_table, self.seq_lens]
        return sum(t.numel() * t.element_size() for t in ts)

    # ------------------------------------------------------------------------------------------
    def admit(self, n: int = 1) -> list[int]:
        """Take ``n`` free slots for new sequences and reset their state: zero conv state, the
        delayed-value bias (zero for ZAYA1) as value state, length 0. Raises ValueError if fewer than
        ``n`` slots are free."""
        free = [s for s in range(self.max_seqs) if s not in self._active]
        if n < 1 or n > len(free):
            raise ValueError(f"cannot admit {n} sequence(s): the cache has {len(free)} free slot(s) of "
                             f"{self.max_seqs}")
        slots = free[:n]
        idx = torch.tensor(slots, dtype=torch.long, device=self.device)
        with torch.no_grad():
            for layer in range(self.config.num_hidden_layers):
                self.conv_state[layer].index_fill_(0, idx, 0)
                init = self._value_init[layer]
                if init is None:
                    self.value_state[layer].index_fill_(0, idx, 0)
                else:
                    self.value_state[layer][idx] = init.to(self.dtype)
            self.seq_lens.index_fill_(0, idx, 0)
        for s in slots:
            self._host_lens[s] = 0
            self._active.append(s)
        self._version += 1
        return slots

    def release(self, slots: Sequence[int]) -> None:
        """Free ``slots`` and their blocks (their tensors are left as they are until re-admitted)."""
        self._check_slots(slots)
        for s in slots:
            self._free_blocks.extend(reversed(self._host_table[s]))
            self._host_table[s] = []
            self._host_lens[s] = 0
            self._active.remove(s)
        self._version += 1

    def reset(self) -> None:
        """Release every sequence."""
        self.release(self.active_slots)

    # ------------------------------------------------------------------------------------------
    def _check_slots(self, slots: Sequence[int]) -> None:
        if len(set(slots)) != len(slots):
            raise ValueError(f"slots must be distinct, got {list(slots)}")
        for s in slots:
            if not isinstance(s, int) or not 0 <= s < self.max_seqs:
                raise ValueError(f"slot {s!r} is out of range for a cache of {self.max_seqs} slots")
            if s not in self._active:
                raise ValueError(f"slot {s} holds no sequence in this cache (admit it first)")

    def validate_batch(self, slots: Sequence[int]) -> None:
        """Check the index metadata a step of ``slots`` hands the kernels, on the host mirrors (no device
        read): the slots are distinct, active and in ``[0, max_seqs)`` (``state_indices``); each slot's
        block-table entries lie in ``[0, num_blocks)`` and cover its cached tokens, which stay within
        ``max_seq_len`` (so positions stay inside the model's rotary table, and the slot mapping and
        ``seqused_k`` derived from them inside the cache and the table). Done once per change of batch:
        the result holds until ``slots`` or the cache's allocation (admit, release, a new block) change.
        Raises ValueError naming the slot."""
        key = (tuple(slots), self._version)
        if key == self._validated:
            return
        self._check_slots(slots)
        bs = self.block_size
        for s in slots:
            table, n = self._host_table[s], self._host_lens[s]
            bad = [b for b in table if not 0 <= b < self.num_blocks]
            if bad or len(table) > self.max_blocks_per_seq:
                raise ValueError(f"slot {s}: block table {table} does not fit the cache ({self.num_blocks} blocks, "
                                 f"{self.max_blocks_per_seq} per sequence)")
            if n > min(len(table) * bs, self.max_seq_len):
                raise ValueError(f"slot {s}: {n} cached tokens exceed its {len(table)} blocks of {bs} or max_seq_len "
                                 f"{self.max_seq_len}")
        self._validated = key

    def reserve(self, slots: Sequence[int], counts: Sequence[int]) -> None:
        """Make room for ``counts[i]`` more tokens of ``slots[i]``: check ``max_seq_len`` and hand out
        blocks (updating ``block_table``). Everything is checked before anything changes, so a
        ValueError (sequence too long, pool exhausted) leaves the cache as it was. Reserving again
        without :meth:`advance` in between is a no-op for the positions already reserved."""
        self.validate_batch(slots)
        need = []
        for s, n in zip(slots, counts):
            end = self._host_lens[s] + n
            if end > self.max_seq_len:
                raise ValueError(f"sequence in slot {s} would hold {end} tokens ({self._host_lens[s]} cached + {n} "
                                 f"new), more than the cache's max_seq_len {self.max_seq_len}")
            need.append(max(0, -(-end // self.block_size) - len(self._host_table[s])))
        if sum(need) > len(self._free_blocks):
            raise ValueError(f"the cache's block pool is exhausted: {sum(need)} more block(s) needed, "
                             f"{len(self._free_blocks)} free of {self.num_blocks}")
        rows, cols, vals = [], [], []
        for s, k in zip(slots, need):
            for _ in range(k):
                b = self._free_blocks.pop()
                rows.append(s)
                cols.append(len(self._host_table[s]))
                vals.append(b)
                self._host_table[s].append(b)
        if vals:
            # Host-made indices and values, copied without a blocking (synchronising) transfer.
            to_dev = dict(device=self.device, non_blocking=True)
            self.block_table[torch.tensor(rows).to(**to_dev), torch.tensor(cols).to(**to_dev)] = torch.tensor(
                vals, dtype=torch.int32).to(**to_dev)
            self._version += 1

    def lengths(self, slots: Sequence[int]) -> list[int]:
        """Tokens cached per slot (host bookkeeping, no device read), for slots that
        :meth:`validate_batch` accepted."""
        return [self._host_lens[s] for s in slots]

    def advance(self, slots: Sequence[int], counts: Sequence[int]) -> None:
        """Host bookkeeping after a step wrote ``counts[i]`` tokens of ``slots[i]`` (the device ``seq_lens``
        is updated by the model step itself)."""
        for s, n in zip(slots, counts):
            self._host_lens[s] += n

    # ------------------------------------------------------------------------------------------
    def slot_mapping(self, slots: Sequence[int], counts: Sequence[int]) -> list[int]:
        """Flat cache positions (block * block_size + offset) of the next ``counts[i]`` tokens of each slot
        (host lists; they must be reserved)."""
        out = []
        bs = self.block_size
        for s, n in zip(slots, counts):
            start = self._host_lens[s]
            table = self._host_table[s]
            out.extend(table[p // bs] * bs + p % bs for p in range(start, start + n))
        return out

    def __repr__(self) -> str:
        return (f"ZayaCache(slots {len(self._active)}/{self.max_seqs} active, max_seq_len {self.max_seq_len}, "
                f"blocks {self.num_blocks - len(self._free_blocks)}/{self.num_blocks} x {self.block_size}, "
                f"{self.memory_bytes() / 2**20:.1f} MiB, {self.dtype}, {self.device})")
