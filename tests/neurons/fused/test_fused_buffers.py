"""The fused loops' buffer pool (snn/neurons/fused/buffers.py): a buffer is handed out again only
once nothing refers to it, and the pool keeps at most its budget of free memory."""

from __future__ import annotations

import pytest
import torch

from snn.neurons import LIFAdEx
from snn.neurons.fused import buffers, release_buffers
from snn.neurons.fused.buffers import BufferPool
from snn.neurons.fused.cpp import arguments as cpp_arguments
from tests.helpers import require_cpp_kernels

SHAPE = (8, 64, 1024)  # 2 MiB in float32: above MIN_POOLED_BYTES
NBYTES = 8 * 64 * 1024 * 4


def test_free_buffer_is_reused_and_comes_back_contiguous():
    pool = BufferPool()
    a = pool.empty(SHAPE, torch.float32, torch.device("cpu"))
    ptr = a.data_ptr()
    del a
    b = pool.empty((64, 8, 1024), torch.float32, torch.device("cpu"))  # same size, another shape
    assert b.data_ptr() == ptr
    assert b.shape == (64, 8, 1024) and b.is_contiguous() and not b._is_view()


def test_buffer_in_use_by_a_tensor_or_a_view_is_not_reused():
    pool = BufferPool()
    a = pool.empty(SHAPE, torch.float32, "cpu")
    b = pool.empty(SHAPE, torch.float32, "cpu")
    assert b.data_ptr() != a.data_ptr()
    row = a[3]  # a view keeps the storage
    del a
    c = pool.empty(SHAPE, torch.float32, "cpu")
    assert c.data_ptr() != row.data_ptr() - 3 * 64 * 1024 * 4
    del row, b, c
    assert pool.free_bytes() == 3 * NBYTES


def test_small_and_different_sized_requests_get_fresh_memory():
    pool = BufferPool()
    small = pool.empty((10, 10), torch.float32, "cpu")
    del small
    assert pool.free_bytes() == 0  # never pooled
    a = pool.empty(SHAPE, torch.float32, "cpu")
    ptr = a.data_ptr()
    del a
    bigger = pool.empty((9, 64, 1024), torch.float32, "cpu")
    assert bigger.data_ptr() != ptr


def test_free_memory_is_capped_and_released_on_clear():
    pool = BufferPool(max_free_bytes=2 * NBYTES)
    held = [pool.empty(SHAPE, torch.float32, "cpu") for _ in range(4)]
    del held
    new = pool.empty((4, 64, 1024), torch.float32, "cpu")  # a fresh allocation trims the free ones
    assert new.data_ptr()
    assert pool.free_bytes() <= 2 * NBYTES
    pool.clear()
    assert pool.free_bytes() == 0


def test_at_most_max_tracked_storages_are_kept(monkeypatch):
    monkeypatch.setattr(buffers, "MAX_TRACKED", 3)
    pool = BufferPool()
    held = [pool.empty(SHAPE, torch.float32, "cpu") for _ in range(5)]  # all in use
    assert len(pool._storages) == 3
    ptrs = {t.data_ptr() for t in held}
    del held
    again = [pool.empty(SHAPE, torch.float32, "cpu") for _ in range(3)]
    assert {t.data_ptr() for t in again} <= ptrs  # the tracked ones are reused


def test_new_buffers_are_passed_to_on_new_once():
    seen = []
    pool = BufferPool(on_new=lambda t: seen.append(t.data_ptr()))
    a = pool.empty(SHAPE, torch.float32, "cpu")
    ptr = a.data_ptr()
    del a
    pool.empty(SHAPE, torch.float32, "cpu")
    assert seen == [ptr]


def test_without_the_use_count_the_pool_allocates_fresh(monkeypatch):
    monkeypatch.setattr(buffers, "_use_count", None)
    pool = BufferPool()
    a = pool.empty(SHAPE, torch.float32, "cpu")
    assert a.shape == SHAPE
    del a
    assert not pool._storages  # nothing kept: without the count, reuse could not be made safe


@pytest.fixture
def cpp_layer():
    require_cpp_kernels()
    return LIFAdEx(backend="cpp")


def test_graphs_alive_together_keep_their_saved_voltages(cpp_layer):
    """Two forward passes whose graphs are both alive, then their backward passes in reverse
    order and a third call in between: reuse must never overwrite a saved tensor or an output."""
    eager = LIFAdEx(backend="eager")
    torch.manual_seed(0)
    xs = [(torch.rand(40, 16, 512) * 4).requires_grad_() for _ in range(2)]
    outs = [cpp_layer(x)[0] for x in xs]
    expected = [eager(x.detach())[0] for x in xs]
    with torch.no_grad():
        cpp_layer(torch.rand(40, 16, 512) * 4)  # would take a buffer if one looked free
    for out, ref in zip(outs, expected, strict=True):
        assert torch.equal(out, ref)
    weights = torch.randn(40, 16, 512)
    for out in reversed(outs):
        (out * weights).sum().backward()
    for x in xs:
        x_ref = x.detach().clone().requires_grad_()
        (eager(x_ref)[0] * weights).sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)


def test_release_buffers_empties_the_pool(cpp_layer):
    with torch.no_grad():
        cpp_layer(torch.rand(40, 16, 512))
    pool = cpp_arguments.BUFFERS
    assert pool.free_bytes() > 0
    release_buffers()
    assert pool.free_bytes() == 0


def test_threads_never_get_the_same_buffer(monkeypatch):
    import threading
    import time

    strides = buffers._contiguous_strides  # slowed down: a thread switch between picking a free
    monkeypatch.setattr(buffers, "_contiguous_strides", lambda shape: time.sleep(0.002) or strides(shape))
    pool = BufferPool()  # storage and making its tensor would hand it out twice
    for _ in range(4):  # four free buffers to compete for
        pool.empty(SHAPE, torch.float32, "cpu")
    got, start = [], threading.Barrier(8)

    def take():
        start.wait()
        for _ in range(5):
            t = pool.empty(SHAPE, torch.float32, "cpu")
            got.append(t)  # held: no other thread may get its storage

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({t.data_ptr() for t in got}) == len(got) == 40
