"""The model's cache and batching semantics, generation options, bad input (clear ValueErrors, nothing
corrupted), and the static decode step (traced whole by torch.compile: no graph breaks, no host syncs).
Random models built by zaya_ops alone (no transformers needed)."""

from __future__ import annotations

import pytest
import torch

from zaya_ops import ZayaConfig, ZayaForCausalLM, samples
from zaya_ops.model import ZayaCache
from zaya_ops.model.testing import max_scaled_error, tolerance

V = 50
SMALL = dict(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=16, num_experts=3, moe_intermediate_size=32, router_hidden_size=16, max_position_embeddings=96,
             eos_token_id=None, bos_token_id=None)


# Tiny matrices: one thread is faster, and immune to a busy machine's oversubscription.
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


_MODELS: dict = {}


def model(dtype=torch.float32, **changes) -> ZayaForCausalLM:
    key = (dtype, tuple(sorted(changes.items())))
    if key not in _MODELS:
        _MODELS[key] = ZayaForCausalLM.random(ZayaConfig(**{**SMALL, **changes}), seed=1, dtype=dtype)
    return _MODELS[key]


def seqs_of(lens, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (n,), generator=g) for n in lens]


def close(got, want, dtype=torch.float32, what=""):
    err = max_scaled_error(got, want)
    assert err <= tolerance(dtype), f"{what}: {err:.3g}"


def snapshot(cache: ZayaCache):
    ts = cache.k + cache.v + cache.conv_state + cache.value_state + [cache.block_table, cache.seq_lens]
    return [t.clone() for t in ts], [cache.seq_len(s) for s in cache.active_slots], cache.free_blocks


def assert_unchanged(cache: ZayaCache, snap):
    ts, lens, free = snapshot(cache)
    assert lens == snap[1] and free == snap[2]
    for a, b in zip(ts, snap[0]):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------------
# Batching and caching give the same logits as one plain prefill
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_chunked_prefill_decode_and_packing_agree(dtype):
    m = model(dtype, attention_bias=True)  # a nonzero delayed-value bias: new slots must start from it
    seqs = seqs_of([13, 5, 9], seed=1)
    alone = [m([s], all_logits=True).logits for s in seqs]
    # packed, in chunks of different sizes, then decode steps, with a small block size so blocks interleave
    got = [[], [], []]
    cache = m.new_cache(3, 13, block_size=2)
    # step 1: 4, 2, 3 tokens; step 2: 6, 2, 3 tokens; then single-token decodes to the ends
    plan = [[4, 2, 3], [6, 2, 3]]
    done = [0, 0, 0]
    for counts in plan:
        out = m([s[d:d + n] for s, d, n in zip(seqs, done, counts)], cache, all_logits=True)
        for b, n in enumerate(counts):
            got[b].append(out.logits[out.cu_seqlens[b]:out.cu_seqlens[b + 1]])
            done[b] += n
    while any(d < len(s) for d, s in zip(done, seqs)):
        active = [b for b in range(3) if done[b] < len(seqs[b])]
        slots = [cache.active_slots[b] for b in active]
        logits = m.decode(torch.stack([seqs[b][done[b]] for b in active]), cache, slots)
        for i, b in enumerate(active):
            got[b].append(logits[i:i + 1])
            done[b] += 1
    for b in range(3):
        close(torch.cat(got[b]), alone[b], dtype, f"seq {b}")
        assert cache.seq_len(cache.active_slots[b]) == len(seqs[b])
    assert cache.seq_lens.tolist() == [len(s) for s in seqs]  # device lengths follow the host's


def test_released_slot_is_reset_for_a_new_sequence():
    m = model(attention_bias=True)
    a, b = seqs_of([7, 6], seed=2)
    cache = m.new_cache(2, 8, block_size=4, num_blocks=4)
    m([a, b], cache)
    first, second = cache.active_slots
    cache.release([first])
    (slot,) = cache.admit(1)
    assert slot == first and cache.seq_len(slot) == 0
    got = m([b], cache, [slot], all_logits=True).logits
    close(got, m([b], all_logits=True).logits, what="re-admitted slot")
    # the other sequence carried on untouched
    nxt = m.decode(torch.tensor([3]), cache, [second])
    close(nxt, m([torch.cat([b, torch.tensor([3])])]).logits, what="other slot")


def test_decode_step_is_static_and_sync_free():
    """torch.compile(fullgraph=True) captures the whole device decode step (any graph break or host
    read of a device value would fail it), with every op of every layer in the graph."""
    m = ZayaForCausalLM.random(ZayaConfig(**{**SMALL, "head_dim": 64, "hidden_size": 64}), dtype=torch.float32,
                               backend="ops")  # compiled ops: fake kernels trace them; head dim within limits
    cache = m.new_cache(2, 32)
    slots = cache.admit(2)
    cache.reserve(slots, [1, 1])
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    step = torch.compile(m.decode_step, fullgraph=True, backend=capture)
    try:
        step(torch.tensor([1, 2]), torch.tensor(slots, dtype=torch.int32), cache)
    except NotImplementedError:
        pass  # traced; a kernel missing on this CPU raised at run time
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 1
    targets = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    for op, per_layer in (("cca_qkv", 1), ("cca_attention", 1), ("router", 1), ("moe_top1", 1),
                          ("residual_scale_rmsnorm", 2)):
        assert sum(f"zaya.{op}" in t for t in targets) == per_layer * 2, op
    assert sum("zaya.rms_norm" in t for t in targets) == 1
    methods = {str(n.target) for n in graphs[0].graph.nodes if n.op == "call_method"}
    assert not methods & {"item", "tolist", "nonzero", "cpu", "numpy"}, methods


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def test_generate_options():
    m = model()
    prompts = seqs_of([3, 8, 1], seed=3)
    greedy = m.generate(prompts, max_new_tokens=6)
    assert [len(t) for t in greedy.tokens] == [6, 6, 6] and greedy.finish_reasons == ["length"] * 3
    assert greedy.prefill_tokens == 12 and greedy.decode_steps == 5 and greedy.decode_tokens == 15
    # greedy == per prompt alone; top_k=1 and a tiny top_p are greedy too
    for b, p in enumerate(prompts):
        assert m.generate([p], max_new_tokens=6).tokens[0] == greedy.tokens[b]
    assert m.generate(prompts, max_new_tokens=6, temperature=0.7, top_k=1, seed=0).tokens == greedy.tokens
    assert m.generate(prompts, max_new_tokens=6, temperature=0.7, top_p=1e-6, seed=0).tokens == greedy.tokens
    # seeded sampling is reproducible, and differs between seeds at a high temperature
    s1 = m.generate(prompts, max_new_tokens=6, temperature=5.0, top_p=0.95, top_k=20, seed=11).tokens
    assert m.generate(prompts, max_new_tokens=6, temperature=5.0, top_p=0.95, top_k=20, seed=11).tokens == s1
    assert m.generate(prompts, max_new_tokens=6, temperature=5.0, top_p=0.95, top_k=20, seed=12).tokens != s1
    # stop tokens end a sequence (included); the others go on
    stop = greedy.tokens[1][2]
    out = m.generate(prompts, max_new_tokens=6, stop_tokens=[stop])
    for b in range(3):
        want = greedy.tokens[b]
        if stop in want:
            assert out.tokens[b] == want[:want.index(stop) + 1] and out.finish_reasons[b] == "stop"
        else:
            assert out.tokens[b] == want and out.finish_reasons[b] == "length"
    assert m.generate(prompts, max_new_tokens=0).tokens == [[], [], []]
    # the config's eos is the default stop token
    m2 = ZayaForCausalLM.random(ZayaConfig(**{**SMALL, "eos_token_id": greedy.tokens[0][0]}), seed=1,
                                dtype=torch.float32)
    assert m2.generate([prompts[0]], max_new_tokens=6).tokens == [greedy.tokens[0][:1]]


def test_generate_tiny_temperatures_and_stop_token_forms():
    """A positive temperature however small samples (it used to overflow logits / temperature into NaN
    probabilities and crash in torch.multinomial): the most likely id, as greedy; stop_tokens is an int
    or an iterable of ints in any form, and a str is refused, not split into digit characters."""
    from zaya_ops.model import sample_next

    m = model()
    prompts = seqs_of([3, 8, 1], seed=3)
    greedy = m.generate(prompts, max_new_tokens=5, stop_tokens=()).tokens
    for t in (1e-45, 5e-324, 1e-300, 1e-30):
        assert m.generate(prompts, max_new_tokens=5, temperature=t, stop_tokens=(), seed=0).tokens == greedy, t
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [-1e30, 1e30, 0.0, float("-inf")]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, temperature=5e-324, generator=g) for _ in range(64)])
    assert set(draws[:, 0].tolist()) == {1, 2} and set(draws[:, 1].tolist()) == {1}  # ties stay ties
    for bad in (float("inf"), float("nan"), -1e-45):
        with pytest.raises(ValueError, match="temperature must be finite and >= 0"):
            m.generate(prompts, max_new_tokens=2, temperature=bad)

    stop = greedy[1][2]
    want = m.generate(prompts, max_new_tokens=5, stop_tokens=[stop]).tokens
    assert want != greedy
    for form in (stop, (stop,), {stop, V + 7}, range(stop, stop + 1), torch.tensor([stop]), torch.tensor(stop),
                 torch.tensor([[stop]])[0], iter([stop])):
        assert m.generate(prompts, max_new_tokens=5, stop_tokens=form).tokens == want, form
    for bad, what in (("80", "str '80'"), (str(stop), f"str '{stop}'"), (b"P", "bytes"), ([str(stop)], "str"),
                      ([stop, 1.0], "float 1.0"), (True, "bool"), ([stop, True], "bool"), (80.0, "float"),
                      (torch.tensor([1.0]), "Tensor")):
        with pytest.raises(TypeError, match=f"stop_tokens must be an int or an iterable of ints, got .*{what}"):
            m.generate(prompts, max_new_tokens=2, stop_tokens=bad)


def test_sample_next_filters():
    from zaya_ops.model import sample_next

    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 0.0, 0.0, 2.9]])
    assert sample_next(logits).tolist() == [3, 0]
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, temperature=1.0, top_k=2, generator=g) for _ in range(200)])
    assert set(draws[:, 0].tolist()) == {2, 3} and set(draws[:, 1].tolist()) == {0, 3}
    draws = torch.stack([sample_next(logits, temperature=1.0, top_p=0.5, generator=g) for _ in range(50)])
    assert set(draws[:, 0].tolist()) == {3}  # p(3) = 0.64 >= 0.5 alone


# --------------------------------------------------------------------------------------------------
# Bad input: ValueError naming the problem, the cache untouched
# --------------------------------------------------------------------------------------------------


def test_bad_input_is_rejected_cleanly():
    m = model()
    a, b = seqs_of([5, 3], seed=4)
    cache = m.new_cache(2, 8)
    m([a, b], cache)
    snap = snapshot(cache)
    cases = [
        (lambda: m([torch.tensor([1, V]), b], cache), f"token id {V}, outside the vocabulary"),
        (lambda: m([torch.tensor([1, -1]), b], cache), "token id -1"),
        (lambda: m([torch.tensor([], dtype=torch.long), b], cache), "sequence 0 is empty"),
        (lambda: m([], cache), "input_ids is empty"),
        (lambda: m([[1.5, 2.0]], cache), "must hold Python ints"),
        (lambda: m(torch.zeros(2, 3), cache), "integer token ids"),
        (lambda: m([a], cache), "cache holds 2"),
        (lambda: m([a, b, a], cache), "cache holds 2"),
        (lambda: m([a, b], m.new_cache(2, 8).__class__(m.config, 2, 8, dtype=m.dtype)), "another model"),
        (lambda: model(torch.bfloat16)([a, b], cache), "another model"),
        (lambda: m([torch.arange(4), b], cache), "would hold 9 tokens"),
        (lambda: m([a, b], cache, slots=[0, 0]), "distinct"),
        (lambda: m([a, b], cache, slots=[0, 5]), "out of range"),
        (lambda: m.decode(torch.tensor([1, V + 3]), cache), "outside the vocabulary"),
        (lambda: m.decode(torch.tensor([1]), cache), "cache holds 2"),
        (lambda: m.decode(torch.tensor([[1, 2]]), cache), "1-D"),
        (lambda: m.generate([[1, 2], []], max_new_tokens=3), "sequence 1 is empty"),
        (lambda: m.generate([[1, 2, 99]], max_new_tokens=3), "outside the vocabulary"),
        (lambda: m.generate([[1, 2]], max_new_tokens=96), "needs 97 positions"),
        (lambda: m.generate([[1, 2]], max_new_tokens=3, top_p=0), "top_p"),
        (lambda: m.new_cache(1, 97), "max_position_embeddings"),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            fn()
        assert_unchanged(cache, snap)
    # after all that, the cache still continues correctly to its end, then refuses more
    for t in range(3):
        m.decode(torch.tensor([7, 8]), cache)
    with pytest.raises(ValueError, match="more than the cache's max_seq_len 8"):
        m.decode(torch.tensor([7, 8]), cache)
    # ... and the sequences' logits equal a fresh run
    last = m([torch.cat([a, torch.tensor([7, 7])]), torch.cat([b, torch.tensor([8, 8, 8])])]).logits
    cache2 = m.new_cache(2, 8)
    m([a, b], cache2)
    for t in range(2):
        m.decode(torch.tensor([7, 8]), cache2)
    close(m.decode(torch.tensor([7, 8]), cache2)[1:], last[1:], what="after errors")
    # an exhausted block pool is an error before anything changes
    small = m.new_cache(2, 16, block_size=4, num_blocks=3)
    m([torch.arange(8)], small)
    snap = snapshot(small)
    with pytest.raises(ValueError, match="block pool is exhausted"):
        m([torch.arange(5)], small)  # continues the sequence: 13 tokens need 2 more blocks, 1 is free
    assert_unchanged(small, snap)
    with pytest.raises(ValueError, match="free slot"):
        small.admit(2)


def test_ops_backend_rejects_unsupported_head_dim():
    with pytest.raises(ValueError, match="backend='ops' needs head_dim in"):
        ZayaForCausalLM(ZayaConfig(**SMALL), backend="ops")
    with pytest.raises(ValueError, match="backend must be one of"):
        ZayaForCausalLM(ZayaConfig(**SMALL), backend="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA (or ROCm) device")
def test_model_on_gpu_matches_cpu():
    """The same random model on the GPU (kernels where they exist, else the reference ops) and on the CPU:
    packed prefill, decode steps and greedy tokens. Loose tolerance: cuDNN convolutions may use TF32."""
    cfg = ZayaConfig(**{**SMALL, "head_dim": 64})
    cpu = ZayaForCausalLM.random(cfg, seed=2, dtype=torch.float32)
    gpu = ZayaForCausalLM.random(cfg, seed=2, dtype=torch.float32, device="cuda")
    prompts = seqs_of([5, 9], seed=8)
    a, b = cpu.new_cache(2, 16), gpu.new_cache(2, 16)
    assert max_scaled_error(gpu(prompts, b).logits.cpu(), cpu(prompts, a).logits) < 1e-2
    for t in range(3):
        tok = torch.tensor([t + 1, t + 2])
        assert max_scaled_error(gpu.decode(tok.cuda(), b).cpu(), cpu.decode(tok, a)) < 1e-2
    assert gpu.generate(prompts, max_new_tokens=4, temperature=1.0, seed=0).tokens  # a CUDA generator


def test_auto_backend_head_dim_rule_survives_other_models():
    """A model whose head dim the cca kernels do not take runs them on the reference, even after a model
    with a supported head dim found the kernels for the same device and dtype."""
    from zaya_ops.model.backend import OpBackend

    wide = OpBackend("auto", torch.device("cpu"), torch.bfloat16, head_dim=64)
    kwargs = samples.cca_attention_args(samples.SampleShape(head_dim=64, rot_dim=16))
    wide("cca_attention", **kwargs)
    assert wide.report()["cca_attention"].startswith("kernel")
    narrow = OpBackend("auto", torch.device("cpu"), torch.bfloat16, head_dim=16)
    narrow("cca_attention", **samples.cca_attention_args(samples.SampleShape(head_dim=16, rot_dim=8)))
    assert narrow.report()["cca_attention"].startswith("reference (head_dim 16")
