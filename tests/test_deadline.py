"""Awaiting under a deadline: `within`, and `within_if_waiting`, which arms no timer for a
coroutine that finishes in its first step and relays every step of one that waits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from exporter.deadline import _Rest, within, within_if_waiting


def _counting_timers(loop: asyncio.AbstractEventLoop) -> list[float]:
    """The times of the timers armed on `loop` from now on (asyncio's timeout arms its one
    through call_at)."""
    armed: list[float] = []
    call_at = loop.call_at

    def counting(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        armed.append(when)
        return call_at(when, *args, **kwargs)

    loop.call_at = counting  # type: ignore[method-assign]
    return armed


async def _at_once() -> str:
    return "done"


async def _fails_at_once() -> None:
    raise ValueError("refused at once")


def test_a_coroutine_that_does_not_wait_arms_no_timer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        armed = _counting_timers(loop)
        assert await within_if_waiting(_at_once(), loop.time() + 5) == "done"
        with pytest.raises(ValueError, match="refused at once"):
            await within_if_waiting(_fails_at_once(), loop.time() + 5)
        assert armed == []
        # within arms one whatever the coroutine does: the difference is the point.
        assert await within(_at_once(), loop.time() + 5) == "done"
        assert len(armed) == 1

    asyncio.run(main())


def test_a_waiting_coroutine_gets_every_answer_and_finishes_under_the_deadline() -> None:
    async def answers(futures: list[asyncio.Future[int]]) -> list[int]:
        got = []
        for future in futures:
            got.append(await future)
        await asyncio.sleep(0)  # a bare yield between them
        return got

    async def main() -> None:
        loop = asyncio.get_running_loop()
        armed = _counting_timers(loop)
        futures = [loop.create_future() for _ in range(3)]
        for n, future in enumerate(futures):
            loop.call_soon(future.set_result, n * 10)
        deadline = loop.time() + 5
        assert await within_if_waiting(answers(futures), deadline) == [0, 10, 20]
        assert armed == [deadline]

    asyncio.run(main())


def test_an_error_after_waiting_reaches_the_caller() -> None:
    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise ConnectionResetError("reset later")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(ConnectionResetError, match="reset later"):
            await within_if_waiting(fails_later(), loop.time() + 5)

    asyncio.run(main())


def test_a_waiting_coroutine_past_its_deadline_is_cancelled_inside_and_times_out() -> None:
    seen: list[str] = []

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled inside")
            raise
        finally:
            seen.append("cleaned up")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            await within_if_waiting(stuck(), loop.time() + 0.01)

    asyncio.run(main())
    assert seen == ["cancelled inside", "cleaned up"]


def test_a_deadline_already_past_when_it_starts_waiting_times_out_at_once() -> None:
    async def waits() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            await within_if_waiting(waits(), loop.time() - 1)

    asyncio.run(main())


def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    seen: list[str] = []

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            seen.append("cleaned up")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(within_if_waiting(stuck(), loop.time() + 60))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(main())
    assert seen == ["cleaned up"]


class _Step:
    """An awaitable that yields once, as a future does to its task, and returns what it is
    sent: driven by hand, no loop is needed."""

    def __await__(self) -> Any:
        return (yield "waiting")


def test_every_step_of_a_waiting_coroutine_is_relayed_sends_throws_and_close() -> None:
    seen: list[Any] = []

    async def waits() -> str:
        try:
            seen.append(await _Step())
            try:
                await _Step()
            except KeyError:
                seen.append("KeyError inside")
            seen.append(await _Step())
            return "finished"
        finally:
            seen.append("finally")

    # What within_if_waiting awaits, driven by hand as a task drives it.
    inner = waits()
    rest = _Rest(inner, inner.send(None)).__await__()
    assert rest.send(None) == "waiting"  # what the coroutine waits on, handed to the task
    assert rest.send("first answer") == "waiting"
    assert rest.throw(KeyError("k")) == "waiting"
    with pytest.raises(StopIteration) as stop:
        rest.send("last answer")
    assert stop.value.value == "finished"
    assert seen == ["first answer", "KeyError inside", "last answer", "finally"]

    seen.clear()
    inner = waits()
    rest = _Rest(inner, inner.send(None)).__await__()
    rest.send(None)
    rest.close()
    assert seen == ["finally"]
