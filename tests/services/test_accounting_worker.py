"""The ledger's threads (accounting/worker.py): writes run one at a time in the order submitted,
reads go on while the writer is busy, and the event loop never waits for either."""

from __future__ import annotations

import asyncio
import threading

from apex_hub.services.accounting.worker import LedgerWorker


async def test_writes_in_order_reads_beside_a_busy_writer_loop_free(tmp_path):
    worker = LedgerWorker(f"sqlite:///{tmp_path}/ledger.sqlite")
    release, started, order = threading.Event(), threading.Event(), []
    main = threading.get_ident()

    def blocked_write():
        started.set()
        release.wait()
        order.append("blocked")
        return threading.get_ident()

    try:
        first = asyncio.ensure_future(worker.write(blocked_write))
        queued = [asyncio.ensure_future(worker.write(order.append, i)) for i in range(20)]
        await asyncio.to_thread(started.wait)
        # the writer is held: the loop still runs, and a read is answered meanwhile
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0)
            ticks += 1
        reader = await worker.read(threading.get_ident)
        assert ticks == 10 and not first.done() and order == []
        release.set()
        writer = await first
        await asyncio.gather(*queued)
        assert order == ["blocked", *range(20)]  # one writer, in submission order
        assert len({writer, reader, main}) == 3  # neither on the event loop's thread
        assert await worker.write(threading.get_ident) == writer  # always the same writer thread
        report = await worker.report(threading.get_ident)
        assert report not in (writer, main)
    finally:
        release.set()
        worker.close()


async def test_in_memory_sqlite_uses_one_thread_and_inline_runs_on_the_loop():
    worker = LedgerWorker("sqlite://")  # one database per connection: every call on the writer
    try:
        writer = await worker.write(threading.get_ident)
        assert await worker.read(threading.get_ident) == writer
        assert await worker.report(threading.get_ident) == writer
    finally:
        worker.close()
    inline = LedgerWorker("sqlite://", inline=True)
    assert await inline.write(threading.get_ident) == threading.get_ident()


async def test_the_threads_shorten_the_switch_interval_never_lengthen_it():
    import sys

    from apex_hub.services.accounting.worker import SWITCH_INTERVAL

    before = sys.getswitchinterval()
    worker = LedgerWorker("sqlite://")
    try:
        sys.setswitchinterval(0.005)
        await worker.write(int)
        assert sys.getswitchinterval() == SWITCH_INTERVAL
        worker.close()
        sys.setswitchinterval(0.0001)
        shorter = sys.getswitchinterval()  # as the interpreter stores it (microseconds)
        await worker.write(int)  # new threads, a shorter interval already: left alone
        assert sys.getswitchinterval() == shorter < SWITCH_INTERVAL
    finally:
        worker.close()
        sys.setswitchinterval(before)
