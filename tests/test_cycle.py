"""The request cycle alone: a RequestCycle on a bare event loop, a fake wire in place of the
protocol (tether/cycle/contract.py's HTTPWire), no socket. The table of docs/design.md ("The
transitions after GONE") is walked row by row, in every response state, with both policies;
then the response state machine, the body, 499/cut/abandoned logging, cancel, grace and
shield. The same machine is tested over real sockets in tests/test_disconnect_*.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import pytest

from tether.cycle import RequestCycle
from tether.cycle.http import DONE, IDLE, START_PENDING, STREAMING, TRAILERS
from tether.errors import ClientDisconnected
from tether.logs import STATS
from tests.support.fakes import FakeWorker
from tests.support.logs import access_lines, warning_records

pytestmark = pytest.mark.timeout(10)


class FakeWire:
    """contract.HTTPWire, recording every call; ``write_paused`` and the drain are the test's."""

    def __init__(self, worker: FakeWorker) -> None:
        self.settings = worker
        self.loop = worker.loop
        self.calls: list[tuple] = []
        self.paused = False
        self.drain_result: asyncio.Future | None = None
        self.refuse: str | None = None  # a call name that raises RuntimeError (bad headers, ...)

    @property
    def write_paused(self) -> bool:
        return self.paused

    async def drain(self) -> None:
        self.calls.append(("drain",))
        self.drain_result = self.loop.create_future()
        await self.drain_result

    def _record(self, name: str, *args: Any) -> None:
        if self.refuse == name:
            raise RuntimeError(f"{name} refused")
        self.calls.append((name, *args))

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]

    def supports_trailers(self, cycle: Any) -> bool:
        return True

    def send_continue(self) -> None:
        self._record("send_continue")

    def send_head(self, cycle: Any, status: int, headers: Any, body: bytes, more: bool) -> None:
        self._record("send_head", status, body, more)

    def send_body(self, cycle: Any, body: bytes, more: bool) -> None:
        self._record("send_body", body, more)

    def send_trailers(self, cycle: Any, headers: Any, more: bool) -> None:
        self._record("send_trailers", list(headers), more)

    async def send_file(self, cycle: Any, status: int, headers: Any, path: str) -> None:
        self._record("send_file", status, path)

    def send_error(self, cycle: Any, status: int) -> None:
        self._record("send_error", status)

    def abort_response(self, cycle: Any) -> None:
        self._record("abort_response")

    def body_consumed(self) -> None:
        self._record("body_consumed")

    def response_complete(self, cycle: Any) -> None:
        self._record("response_complete")

    def app_finished(self, cycle: Any) -> None:
        self._record("app_finished")


def scope() -> dict:
    return {"type": "http", "method": "GET", "path": "/x", "raw_path": b"/x", "query_string": b"",
            "http_version": "1.1", "client": ("127.0.0.1", 5000), "extensions": {}}


class Harness:
    """One request: the cycle, its fake wire, the loop; ``run`` drives the loop until ``until``."""

    def __init__(self, cancel: bool = False, grace: float = 0.0, body_complete: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.worker = FakeWorker(self.loop, cancel, grace)
        self.wire = FakeWire(self.worker)
        self.cycle = RequestCycle(scope(), self.wire)
        if body_complete:
            self.cycle.end_body()
        self.events: list[str] = []

    def start(self, app: Callable) -> None:
        self.cycle.start(app)

    def spin(self, seconds: float = 0.0) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))
        for _ in range(5):  # (a few passes: wake-ups chain through futures)
            self.loop.run_until_complete(asyncio.sleep(0))

    def finish(self, timeout: float = 2.0) -> None:
        task = self.cycle.task
        assert task is not None
        self.loop.run_until_complete(asyncio.wait_for(asyncio.shield(task), timeout))

    def close(self) -> None:
        self.loop.close()


START = {"type": "http.response.start", "status": 200, "headers": []}
START_TRAILERS = {"type": "http.response.start", "status": 200, "headers": [], "trailers": True}


async def reach(state: int, send: Callable) -> None:
    """Drive the response to ``state`` with real ASGI messages."""
    if state == IDLE:
        return
    await send(START_TRAILERS if state == TRAILERS else START)
    if state == START_PENDING:
        return
    if state == STREAMING:
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
    elif state == TRAILERS:
        await send({"type": "http.response.body", "body": b"all"})
    elif state == DONE:
        await send({"type": "http.response.body", "body": b"all"})


STATES = {"IDLE": IDLE, "START_PENDING": START_PENDING, "STREAMING": STREAMING, "TRAILERS": TRAILERS, "DONE": DONE}


# ====================================================================== design.md: after GONE, row by row
def gone_in(state: int, then: Callable, cancel: bool = False, grace: float = 0.0) -> tuple[Harness, dict]:
    """An app that reaches ``state``, waits to be told the client left, then does ``then``."""
    h = Harness(cancel=cancel, grace=grace)
    seen: dict = {}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "http.request"
        await reach(state, send)
        seen["reached"] = True
        try:
            await scope["extensions"]["tether.disconnect"].wait()
            seen["told"] = True
            await then(receive, send, seen)
        except asyncio.CancelledError:
            seen["cancelled"] = True
            raise

    h.start(app)
    h.spin()
    assert seen.get("reached"), "the app did not reach its state"
    assert h.cycle.state == state
    h.cycle.client_gone()
    return h, seen


@pytest.mark.parametrize("state", STATES.values(), ids=STATES.keys())
def test_row_receive_returns_disconnect_at_once(state: int) -> None:
    async def then(receive: Any, send: Any, seen: dict) -> None:
        seen["message"] = await asyncio.wait_for(receive(), 0.5)

    h, seen = gone_in(state, then)
    h.finish()
    assert seen["message"] == {"type": "http.disconnect"}
    h.close()


@pytest.mark.parametrize("message", [START, {"type": "http.response.body", "body": b"x"},
                                     {"type": "http.response.trailers", "headers": []}], ids=["start", "body", "trailers"])
@pytest.mark.parametrize("state", STATES.values(), ids=STATES.keys())
def test_row_send_raises_client_disconnected(state: int, message: dict) -> None:
    async def then(receive: Any, send: Any, seen: dict) -> None:
        for _ in range(3):  # every time
            try:
                await send(message)
            except ClientDisconnected as exc:
                seen.setdefault("raised", []).append(exc)

    h, seen = gone_in(state, then)
    calls_before = list(h.wire.calls)
    h.finish()
    assert len(seen["raised"]) == 3 and all(isinstance(exc, OSError) for exc in seen["raised"])
    assert h.wire.calls[:len(calls_before)] == calls_before and "send_head" not in h.wire.names()[len(calls_before):]
    h.close()


@pytest.mark.parametrize("exc", [ClientDisconnected("gone"), asyncio.CancelledError()], ids=["ClientDisconnected", "CancelledError"])
@pytest.mark.parametrize("state", STATES.values(), ids=STATES.keys())
def test_row_raising_the_disconnect_is_one_debug_line(state: int, exc: BaseException, tether_logs: Any) -> None:
    async def then(receive: Any, send: Any, seen: dict) -> None:
        raise exc

    h, seen = gone_in(state, then)
    h.finish()  # (the cycle reports the app's exception: the task itself ends normally)
    assert h.cycle.app_done
    assert not warning_records(tether_logs), [r.getMessage() for r in warning_records(tether_logs)]
    debug = [r for r in tether_logs.records if r.name == "tether.error" and "after the client left" in r.getMessage()]
    assert len(debug) == 1 and debug[0].levelno == logging.DEBUG and debug[0].exc_info is None
    h.close()


@pytest.mark.parametrize("state", STATES.values(), ids=STATES.keys())
def test_row_raising_something_else_is_an_error_with_traceback(state: int, tether_logs: Any) -> None:
    async def then(receive: Any, send: Any, seen: dict) -> None:
        raise ValueError("a real bug")

    h, seen = gone_in(state, then)
    h.finish()
    found = warning_records(tether_logs)
    assert len(found) == 1 and found[0].levelno == logging.ERROR and found[0].exc_info is not None
    assert "after the client left" in found[0].getMessage()
    h.close()


@pytest.mark.parametrize("state", STATES.values(), ids=STATES.keys())
def test_row_returning_logs_499_with_the_abandoned_time_unless_done(state: int, tether_logs: Any) -> None:
    async def then(receive: Any, send: Any, seen: dict) -> None:
        await asyncio.sleep(0.05)  # abandoned work (unless the response was done)

    before = STATS.snapshot()
    h, seen = gone_in(state, then)
    h.finish()
    lines = access_lines(tether_logs)
    after = STATS.snapshot()
    if state == DONE:
        assert lines == ["GET /x HTTP/1.1 200 3"]  # (the complete response, logged when it was delivered)
        assert after["abandoned_requests"] == before["abandoned_requests"]
    else:
        assert len(lines) == 1 and lines[0].startswith("GET /x HTTP/1.1 499 ") and " abandoned " in lines[0], lines
        assert float(lines[0].split(" abandoned ")[1].rstrip("ms")) >= 40
        assert after["abandoned_requests"] == before["abandoned_requests"] + 1
        phase = "before_response" if state < STREAMING else "mid_stream"
        assert after["disconnects"][phase] == before["disconnects"][phase] + 1
    assert not warning_records(tether_logs)
    h.close()


@pytest.mark.parametrize("grace", [0.0, 0.1])
@pytest.mark.parametrize("state", STATES.values(), ids=STATES.keys())
def test_row_cancel_policy_cancels_unless_done(state: int, grace: float, tether_logs: Any) -> None:
    async def then(receive: Any, send: Any, seen: dict) -> None:
        await asyncio.sleep(0.5)
        seen["ran_on"] = True

    h, seen = gone_in(state, then, cancel=True, grace=grace)
    if grace:
        h.spin(grace / 2)
        assert "cancelled" not in seen, "cancelled before the grace period ran out"
    h.loop.run_until_complete(asyncio.wait([h.cycle.task], timeout=2))
    if state == DONE:
        assert seen.get("ran_on") and "cancelled" not in seen  # work after a complete response is never cancelled
    else:
        assert seen.get("cancelled") and "ran_on" not in seen
        assert access_lines(tether_logs)[-1].endswith(" cancelled")
    assert not warning_records(tether_logs)
    h.close()


def test_row_cancel_is_deferred_by_shield_and_not_lost() -> None:
    h = Harness(cancel=True)
    seen: list[str] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        signal = scope["extensions"]["tether.disconnect"]
        try:
            async with signal.shield():
                with signal.shield():  # nested: the outermost exit delivers
                    seen.append("in")
                    await asyncio.sleep(0.05)
                    seen.append("inner done")
                seen.append("outer still")
                await asyncio.sleep(0.05)
                seen.append("outer done")
            await asyncio.sleep(1)
            seen.append("ran past")
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    h.start(app)
    h.spin()
    h.cycle.client_gone()
    h.loop.run_until_complete(asyncio.wait([h.cycle.task], timeout=2))
    assert seen == ["in", "inner done", "outer still", "outer done", "cancelled"]
    h.close()


# ====================================================================== before GONE: the response machine
def run_app(app: Callable, **options: Any) -> Harness:
    h = Harness(**options)
    h.start(app)
    h.finish()
    return h


def test_start_is_held_until_the_first_body_and_a_whole_response_is_one_head() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(START)
        assert scope["extensions"]["tether.disconnect"]._cycle.state == START_PENDING
        await send({"type": "http.response.body", "body": b"hello"})

    h = run_app(app)
    assert h.wire.calls == [("send_head", 200, b"hello", False), ("response_complete",), ("app_finished",)]
    assert h.worker.counted == 1
    h.close()


def test_streaming_then_trailers() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(START_TRAILERS)
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})
        await send({"type": "http.response.trailers", "headers": [(b"x-sum", b"1")]})

    h = run_app(app)
    assert h.wire.calls == [("send_head", 200, b"a", True), ("send_body", b"b", True),
                            ("send_trailers", [(b"x-sum", b"1")], False), ("response_complete",), ("app_finished",)]
    h.close()


@pytest.mark.parametrize("messages, where", [
    ([{"type": "http.response.body", "body": b"x"}], "before 'http.response.start'"),
    ([START, START], "after 'http.response.start'"),
    ([START, {"type": "http.response.body", "body": b"x"}, {"type": "http.response.body", "body": b"y"}],
     "after the response was complete"),
    ([START, {"type": "http.response.trailers", "headers": []}], "after 'http.response.start'"),
    ([{"type": "http.response.nonsense"}], "before"),
])
def test_messages_out_of_order_raise(messages: list, where: str) -> None:
    raised: list[Exception] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        try:
            for message in messages:
                await send(message)
        except RuntimeError as exc:
            raised.append(exc)

    h = run_app(app)
    assert raised and where in str(raised[0])
    h.close()


def test_app_failing_before_any_body_gets_500(tether_logs: Any) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(START)
        raise ValueError("boom")

    h = run_app(app)
    assert ("send_error", 500) in h.wire.calls and "send_head" not in h.wire.names()
    assert access_lines(tether_logs) == ["GET /x HTTP/1.1 500 0"]
    assert len(warning_records(tether_logs)) == 1
    h.close()


def test_a_message_the_wire_refuses_still_gets_500(tether_logs: Any) -> None:
    """The protocol refused the head (bad headers): the state did not move, so a 500 goes out."""
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(START)
        await send({"type": "http.response.body", "body": b"x"})

    h = Harness()
    h.wire.refuse = "send_head"
    h.start(app)
    h.finish()
    assert ("send_error", 500) in h.wire.calls
    h.close()


def test_app_failing_mid_stream_aborts_and_says_so(tether_logs: Any) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(START)
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise ValueError("boom")

    h = run_app(app)
    assert h.wire.names()[-2:] == ["abort_response", "app_finished"]
    assert access_lines(tether_logs) == ["GET /x HTTP/1.1 200 4 response aborted"]
    h.close()


@pytest.mark.parametrize("state", [IDLE, START_PENDING, STREAMING], ids=["IDLE", "START_PENDING", "STREAMING"])
def test_app_returning_early_is_an_error_and_answered(state: int, tether_logs: Any) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await reach(state, send)

    h = run_app(app)
    assert "returned without" in warning_records(tether_logs)[0].getMessage()
    assert h.wire.names()[-2] == ("abort_response" if state == STREAMING else "response_complete")
    h.close()


def test_cancelled_while_the_client_is_there_is_a_warning(tether_logs: Any) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await asyncio.sleep(5)

    h = Harness()
    h.start(app)
    h.spin()
    h.cycle.task.cancel()  # (e.g. shutdown)
    h.loop.run_until_complete(asyncio.wait([h.cycle.task], timeout=2))
    assert [r.levelno for r in warning_records(tether_logs)] == [logging.WARNING]
    h.close()


# ====================================================================== delivery: logged when the kernel has it
def test_a_complete_response_is_logged_when_delivered_not_before(tether_logs: Any) -> None:
    h = Harness()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(START)
        h.wire.paused = True  # the kernel does not take it all at once
        await send({"type": "http.response.body", "body": b"x" * 100})

    h.start(app)
    h.spin()
    assert h.wire.names()[-1] == "drain" and access_lines(tether_logs) == []  # not yet
    h.wire.paused = False
    h.wire.drain_result.set_result(None)  # type: ignore[union-attr]
    h.finish()
    assert access_lines(tether_logs) == ["GET /x HTTP/1.1 200 100"]
    h.close()


def test_a_complete_response_cut_on_its_way_is_logged_499_cut(tether_logs: Any) -> None:
    h = Harness(cancel=True)
    raised: list[BaseException] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(START)
        h.wire.paused = True
        try:
            await send({"type": "http.response.body", "body": b"x" * 100})
        except ClientDisconnected as exc:
            raised.append(exc)
        await asyncio.sleep(0.05)  # work after a complete response: not abandoned, not cancelled
        raised.append("after")

    before = STATS.snapshot()["disconnects"]["mid_stream"]
    h.start(app)
    h.spin()
    h.wire.drain_result.set_exception(ClientDisconnected("write timeout"))  # type: ignore[union-attr]
    h.finish()
    assert isinstance(raised[0], ClientDisconnected) and raised[1] == "after"
    assert access_lines(tether_logs) == ["GET /x HTTP/1.1 499 100 response cut"]
    assert STATS.snapshot()["disconnects"]["mid_stream"] == before + 1
    assert not warning_records(tether_logs)
    h.close()


# ====================================================================== the request body
def test_body_is_delivered_in_order_and_the_wire_told_when_consumed() -> None:
    h = Harness(body_complete=False)
    got: list[dict] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            got.append(message)
            if not message.get("more_body"):
                break
        await send(START)
        await send({"type": "http.response.body", "body": b"ok"})

    h.start(app)
    h.spin()
    assert h.cycle.feed_body(b"ab") == 2
    h.spin()
    h.cycle.feed_body(b"c")
    assert h.cycle.feed_body(b"d") == 2  # (buffered until the app reads: the protocol pauses past its mark)
    h.cycle.end_body()
    h.finish()
    assert [m["body"] for m in got] == [b"ab", b"cd"] and got[-1]["more_body"] is False
    assert h.wire.names().count("body_consumed") == 2
    h.close()


def test_a_discarded_body_is_never_handed_out() -> None:
    h = Harness(body_complete=False)
    h.cycle.feed_body(b"refused")
    h.cycle.end_body()
    h.cycle.discard_body()
    got: list[dict] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        got.append(await receive())

    h.start(app)
    h.spin()
    h.cycle.client_gone()
    h.finish()
    assert got == [{"type": "http.disconnect"}]
    h.close()


def test_expect_100_is_answered_when_the_app_first_reads() -> None:
    loop_h = Harness(body_complete=False)
    loop_h.cycle.expect_100 = True

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await receive()

    loop_h.start(app)
    loop_h.spin()
    assert loop_h.wire.names() == ["send_continue"]
    loop_h.cycle.end_body()
    loop_h.finish()
    loop_h.close()


def test_receive_after_a_complete_response_returns_disconnect_at_once() -> None:
    got: list[dict] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        await send(START)
        await send({"type": "http.response.body", "body": b"x"})
        got.append(await asyncio.wait_for(receive(), 0.5))

    h = run_app(app)
    assert got == [{"type": "http.disconnect"}]
    h.close()


def test_limit_concurrency_answers_503_without_the_app() -> None:
    h = Harness()
    h.worker.limit_concurrency = 0

    async def app(scope: dict, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not run past the limit")

    h.worker.app = app
    h.cycle.start_request()
    h.finish()
    assert h.wire.calls[0] == ("send_head", 503, b"Service Unavailable", False)
    h.close()
