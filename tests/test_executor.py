"""The executor: chunking, out-of-memory retry, combination, options, and the folded layout."""

import pytest
import torch

import funcattr as fa
from funcattr import _executor
from funcattr import _fold
from funcattr._inputs import broadcast_baseline


def test_oom_halves_the_chunk_and_keeps_finished_work():
    calls = []

    def step(lo, hi):
        calls.append((lo, hi))
        if hi - lo > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return torch.arange(lo, hi, dtype=torch.float32)

    opts = _executor.Options(batch_size=8 * 2)  # 8 items of B=2 rows per call at first
    out = _executor.run(step, 11, 2, opts=opts, device=torch.device("cuda"), combine="cat")
    assert out.tolist() == list(range(11))
    done = [c for c in calls if c[1] - c[0] <= 3]
    # every item evaluated exactly once among the successful calls
    assert sorted(i for lo, hi in done for i in range(lo, hi)) == list(range(11))
    assert calls[0] == (0, 6) and calls[1] == (0, 3)  # balanced chunks of at most 8, then halved


def test_oom_on_a_single_item_says_what_to_do():
    def step(lo, hi):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="smaller batch"):
        _executor.run(step, 3, 4, opts=_executor.Options(batch_size=4), device=torch.device("cuda"))


def test_oom_on_cpu_is_not_swallowed():
    def step(lo, hi):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        _executor.run(step, 3, 1, opts=_executor.Options(batch_size=2), device=torch.device("cpu"))


def test_sum_combination_matches_one_big_chunk():
    def step(lo, hi):
        return (torch.arange(lo, hi).sum().float(), torch.tensor(float(hi - lo)))

    a = _executor.run(step, 10, 1, opts=_executor.Options(batch_size=3), device=torch.device("cpu"))
    b = _executor.run(step, 10, 1, opts=_executor.Options(batch_size=100), device=torch.device("cpu"))
    assert a[0].item() == b[0].item() == 45 and a[1].item() == 10


def test_the_plan_is_the_same_on_the_first_call_and_later_ones():
    calls = []

    def step(lo, hi):
        calls.append((lo, hi))
        x = torch.ones(hi - lo, 1000)  # ~8 kB per item (the ones and the product)
        return (x * 2).sum()

    key = ("test-measure",)
    with fa.options(memory_budget=40_000):
        _executor.run(step, 20, 1, opts=_executor._current.get(), device=torch.device("cpu"), key=key, owner=step)
        first = list(calls)
        calls.clear()
        _executor.run(step, 20, 1, opts=_executor._current.get(), device=torch.device("cpu"), key=key, owner=step)
    assert first[0] == (0, 1)  # the probe, whose result is discarded
    assert first[1:] == calls  # then exactly the chunks of every later call
    assert all(1 < hi - lo < 20 for lo, hi in calls)  # sized by the budget
    sizes = {hi - lo for lo, hi in calls}
    assert max(sizes) - min(sizes) <= 1  # balanced: no tiny last chunk


def test_measured_costs_go_with_their_function():
    """Costs are held per function, weakly: a function collected takes its costs with it, so a
    new one that reuses its id is measured afresh, never planned with another's cost."""
    import gc

    def make():
        m = torch.nn.Linear(4, 2)
        return fa.target(m, 0)

    f = make()
    fa.integrated_gradients(f, steps=8)(torch.randn(2, 4))
    assert f in _executor._cost_cache and len(_executor._cost_cache[f]) == 1
    n = len(_executor._cost_cache)
    del f
    gc.collect()
    assert len(_executor._cost_cache) == n - 1


def test_options_nest_and_restore():
    assert _executor._current.get().batch_size is None
    with fa.options(batch_size=8, precision="bf16"):
        with fa.options(batch_size=2):
            o = _executor._current.get()
            assert o.batch_size == 2 and o.precision == "bf16"
        assert _executor._current.get().batch_size == 8
    assert _executor._current.get() == _executor.Options()
    with pytest.raises(ValueError, match="precision"):
        with fa.options(precision="half"):
            pass


def test_method_options_win_over_block_options():
    current = _executor.resolve(batch_size=5)
    with fa.options(batch_size=50, progress=True):
        o = current()
    assert o.batch_size == 5 and o.progress is True


def test_fold_layout_is_work_major():
    x = torch.arange(3).view(3, 1)
    assert _fold.tile(x, 2).flatten().tolist() == [0, 1, 2, 0, 1, 2]
    with _fold.examples((x,)):
        a, kw = _fold.tile_args((torch.arange(3), 7, [1, 2, 3]), {"target": torch.tensor([5, 6, 7]), "s": "x"}, 6)
    assert a[0].tolist() == [0, 1, 2, 0, 1, 2] and a[1] == 7 and a[2] == [1, 2, 3, 1, 2, 3]
    assert kw["target"].tolist() == [5, 6, 7, 5, 6, 7] and kw["s"] == "x"
    assert _fold.unfold(_fold.fold(torch.arange(12).view(2, 3, 2)), 2).tolist() == torch.arange(12).view(2, 3, 2).tolist()


def test_baseline_forms():
    x = torch.zeros(4, 3, 2)
    for b in [0.5, torch.ones(3, 2), torch.ones(1, 3, 2), torch.ones(4, 3, 2), torch.ones(1, 1, 2)]:
        (bb,) = broadcast_baseline(b, (x,))
        assert torch.broadcast_shapes(bb.shape, x.shape) == x.shape
    with pytest.raises(ValueError, match="baseline has 2 entries but the batch has 4 examples"):
        broadcast_baseline(torch.ones(2, 3, 2), (x,))
    with pytest.raises(ValueError, match="does not broadcast"):
        broadcast_baseline(torch.ones(4, 2, 2), (x,))
    with pytest.raises(ValueError, match="tuple of 2"):
        broadcast_baseline((0.0, 1.0), (x,))
    with pytest.raises(TypeError, match="number or a tensor"):
        broadcast_baseline("zero", (x,))
