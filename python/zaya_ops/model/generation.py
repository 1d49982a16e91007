"""Batched generation for :class:`~zaya_ops.model.modeling.ZayaForCausalLM`: one packed prefill of all
prompts (different lengths, no padding), then static-shape decode steps, with greedy or
temperature/top-k/top-p sampling, stop tokens, ``max_new_tokens`` and a seed."""

from __future__ import annotations

import operator
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["GenerationOutput", "sample_next", "generate"]


@dataclass
class GenerationOutput:
    """What :func:`generate` returns.

    ``tokens[b]``: the ids generated for prompt b (a stop token that ended it included);
    ``finish_reasons[b]``: ``"stop"`` (a stop token) or ``"length"`` (``max_new_tokens``).
    Timings (seconds, device-synchronised): the prefill of all prompts (it also yields each prompt's
    first new token), and the decode steps (each processes one token of every sequence in the batch).
    """

    tokens: list[list[int]]
    finish_reasons: list[str]
    prompt_lens: list[int]
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    decode_steps: int = 0
    batch_size: int = 0
    first_logits: torch.Tensor | None = field(default=None, repr=False)

    @property
    def prefill_tokens(self) -> int:
        """Prompt tokens processed by the prefill."""
        return sum(self.prompt_lens)

    @property
    def decode_tokens(self) -> int:
        """Tokens processed by the decode steps (steps x batch size)."""
        return self.decode_steps * self.batch_size

    @property
    def prefill_tokens_per_s(self) -> float:
        """Prefill throughput."""
        return self.prefill_tokens / self.prefill_seconds if self.prefill_seconds > 0 else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        """Decode throughput (tokens of all sequences per second)."""
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else float("nan")


def sample_next(logits: torch.Tensor, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token of each row of ``logits`` [B, V] (computed in fp32, on the logits' device).

    ``temperature == 0``: greedy (argmax, the lowest id on ties). Otherwise sample from
    ``softmax(logits / temperature)`` restricted to the ``top_k`` most likely ids (0: all) and to the
    smallest set whose probability reaches ``top_p`` (1.0: all; the most likely id always stays), drawing
    with ``generator``. Returns int64 [B].

    The division runs in fp64 after subtracting each row's maximum, so any positive temperature works:
    a tiny one (down to the smallest subnormal, 5e-324) makes every id but the most likely ones
    impossible (``-inf``) instead of overflowing into NaN probabilities; in the limit it samples among
    the tied maxima, like greedy decoding up to tie-breaking.
    """
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    z = logits.double()
    logits = ((z - z.amax(dim=-1, keepdim=True)) / temperature).float()
    V = logits.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability mass of the strictly more likely ids
        drop = before >= top_p
        drop[:, 0] = False
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _stop_token_set(stop_tokens) -> set[int]:
    """``stop_tokens`` (an int or an iterable of ints) as a set; anything else is a TypeError naming it."""
    def as_id(t) -> int:
        if isinstance(t, bool) or (isinstance(t, torch.Tensor) and t.dtype == torch.bool):
            raise TypeError(f"stop_tokens must be an int or an iterable of ints, got the bool {t!r}")
        try:
            return operator.index(t)
        except TypeError:
            raise TypeError(f"stop_tokens must be an int or an iterable of ints, got {type(t).__name__} "
                            f"{t!r}") from None

    if isinstance(stop_tokens, (str, bytes, bytearray)):
        raise TypeError(f"stop_tokens must be an int or an iterable of ints, got {type(stop_tokens).__name__} "
                        f"{stop_tokens!r} (not split into characters: pass [int(...)])")
    if isinstance(stop_tokens, Iterable) and not (isinstance(stop_tokens, torch.Tensor) and stop_tokens.dim() == 0):
        return {as_id(t) for t in stop_tokens}
    return {as_id(stop_tokens)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generate(model, prompts, max_new_tokens: int = 32, *, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, stop_tokens: Sequence[int] | int | None = None, seed: int | None = None,
             block_size: int = 16) -> GenerationOutput:
    """Generate up to ``max_new_tokens`` tokens for each prompt of a batch.

    Args:
        model: a :class:`ZayaForCausalLM`.
        prompts: a list of prompts (lists of ints or 1-D integer tensors, different lengths allowed, none
            empty), a 2-D tensor [B, T], or one prompt (list of ints / 1-D tensor).
        max_new_tokens: tokens to generate per prompt at most (>= 0).
        temperature: 0 for greedy decoding, > 0 to sample (with ``top_k``, ``top_p``; see
            :func:`sample_next`).
        stop_tokens: an id or an iterable of ids (ints, or integer 0-d tensors) that end a sequence
            (included in its output); default the config's ``eos_token_id``; ``()`` for none. A str or
            bytes is refused (TypeError), not split into characters.
        seed: seeds the sampling generator (sampling is then reproducible); None uses torch's global RNG.
        block_size: KV-cache block size.
    Returns:
        :class:`GenerationOutput`. A sequence that stops keeps its place in the (static-shape) batch until
        every sequence has stopped; its extra tokens are dropped.
    Raises:
        ValueError: bad prompts (empty, ids outside the vocabulary) or arguments, or prompts too long for
        ``max_position_embeddings``.
        TypeError: ``stop_tokens`` that is not an int or an iterable of ints.
    """
    from .modeling import _as_sequences

    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if not 0 <= temperature < float("inf"):
        raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
    if not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be a non-negative integer, got {top_k!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    seqs = _as_sequences(prompts, model.config.vocab_size, model.device)
    stops = set(model.config.eos_token_ids) if stop_tokens is None else _stop_token_set(stop_tokens)
    lens = [int(s.numel()) for s in seqs]
    B = len(seqs)
    out = GenerationOutput(tokens=[[] for _ in range(B)], finish_reasons=["length"] * B, prompt_lens=lens,
                           batch_size=B)
    if max_new_tokens == 0:
        return out
    need = max(lens) + max_new_tokens - 1  # the last sampled token is never fed back
    if need > model.config.max_position_embeddings:
        raise ValueError(f"the longest prompt ({max(lens)} tokens) plus max_new_tokens ({max_new_tokens}) needs "
                         f"{need} positions, more than max_position_embeddings {model.config.max_position_embeddings}")
    cache = model.new_cache(B, need, block_size=block_size)
    slots = cache.admit(B)
    gen = None
    if seed is not None:
        gen = torch.Generator(device=model.device).manual_seed(seed)
    dev = model.device

    _sync(dev)
    t0 = time.perf_counter()
    logits = model.forward(seqs, cache, slots).logits
    _sync(dev)
    out.prefill_seconds = time.perf_counter() - t0
    out.first_logits = logits
    finished = [False] * B
    t0 = time.perf_counter()
    for step in range(max_new_tokens):
        nxt = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=gen)
        ids = nxt.tolist()  # the one host read per step: the tokens themselves
        for b, t in enumerate(ids):
            if finished[b]:
                continue
            out.tokens[b].append(t)
            if t in stops:
                finished[b] = True
                out.finish_reasons[b] = "stop"
        if all(finished) or step == max_new_tokens - 1:
            break
        logits = model.decode(nxt, cache, slots, check_ids=False)
        out.decode_steps += 1
    _sync(dev)
    out.decode_seconds = time.perf_counter() - t0 if out.decode_steps else 0.0
    return out
