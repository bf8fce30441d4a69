"""What every ASGI connection scope shares, whatever the protocol: the client-gone signal, the
``tether.disconnect`` extension, the app task, the cancel policy, and the access log.

Theory of operation
-------------------
A scope (an HTTP request, an HTTP/2 stream, a WebSocket session) is the product of the app's
answer (its states are the subclass's: http.py, websocket.py), of the client, PRESENT -> GONE
(``client_left``), and of the application task, which runs until it returns, raises or is
cancelled (``app_done``).

The client leaving is one event, ``client_gone()``, raised by the protocol the moment the
kernel reports FIN or RST (or an HTTP/2 RST_STREAM, a WebSocket close frame, a missed ping). It

1. wakes every ``receive()`` waiter, which returns the disconnect message;
2. sets the extension's event (``scope["extensions"]["tether.disconnect"]``);
3. makes every later ``send()`` raise ``ClientDisconnected`` (an ``OSError``);
4. if the answer was not finished (``work_finished()``), marks the work *abandoned*: the phase
   is counted, the time the work runs on is measured, and under ``--on-disconnect cancel``
   the request's work (its tasks, the threads it waits on, their database queries: work.py)
   is stopped after the grace period, unless a ``shield()`` block is running, in which case
   the cancel lands when the outermost shield exits.

A finished answer is never abandoned work: code that runs after an HTTP response is complete
(Starlette background tasks), or after a WebSocket peer's close frame, is never cancelled.
docs/design.md explains the same machine in prose.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import weakref
from time import monotonic as _now  # loop.time() is 1 ms coarse under uvloop
from typing import Any, Callable

from ..errors import ClientDisconnected, RequestCancelled
from ..logs import STATS, access_logger, error_logger
from ..metrics import ABANDONED, METRICS
from .work import CURRENT, HAS_TASK_CONTEXT, SHIELDED, Stopper

try:  # Python 3.11+; on 3.10 the backport anyio brings, if it is there
    _EXCEPTION_GROUP: Any = builtins.BaseExceptionGroup  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - Python 3.10
    try:
        from exceptiongroup import BaseExceptionGroup as _EXCEPTION_GROUP
    except ImportError:
        _EXCEPTION_GROUP = ()

_debug = error_logger.isEnabledFor

# What a finished cycle keeps for late log lines, once it has let go of the app's scope.
_FINISHED_SCOPE = {"method": "-", "path": "-", "raw_path": b"-", "query_string": b"", "http_version": "1.1", "client": None}


class DisconnectSignal:
    """The ``tether.disconnect`` scope extension: the disconnect, without consuming receive().

    ``is_set()`` checks without blocking, ``await wait()`` returns once the client has gone,
    ``left_at`` says when, ``shield()`` protects a critical section from ``--on-disconnect cancel``.
    """

    __slots__ = ("_cycle",)

    def __init__(self, cycle: "Cycle") -> None:
        self._cycle = cycle

    def is_set(self) -> bool:
        return self._cycle.client_left

    @property
    def left_at(self) -> float | None:
        """``time.monotonic()`` when Tether saw the client leave, or None while it is there."""
        cycle = self._cycle
        return cycle.gone_at if cycle.client_left else None

    async def wait(self) -> None:
        cycle = self._cycle
        if cycle.client_left:
            return
        if cycle.gone_event is None:
            cycle.gone_event = asyncio.Event()
        await cycle.gone_event.wait()

    @property
    def event(self) -> asyncio.Event:
        """An ``asyncio.Event`` set when the client leaves (created on first use)."""
        cycle = self._cycle
        if cycle.gone_event is None:
            cycle.gone_event = asyncio.Event()
            if cycle.client_left:
                cycle.gone_event.set()
        return cycle.gone_event

    def shield(self) -> "Shield":
        return Shield(self._cycle)

    def set_deadline(self, seconds: float | None) -> None:
        """This request must be answered within ``seconds`` from now, instead of what
        ``--timeout-request`` says (None: no deadline). HTTP requests only; call it from the
        event loop's thread (the app's async code)."""
        set_deadline = getattr(self._cycle, "set_deadline", None)
        if set_deadline is None:
            raise RuntimeError("a WebSocket session has no deadline")
        set_deadline(seconds)


class Shield:
    """``with signal.shield():`` / ``async with signal.shield():`` delays a policy cancel.

    The cancellation is not lost: it is delivered when the outermost shield exits.
    """

    __slots__ = ("_cycle", "_token")

    def __init__(self, cycle: "Cycle") -> None:
        self._cycle = cycle
        self._token: Any = None

    def __enter__(self) -> "Shield":
        self._cycle.shield_depth += 1
        self._token = SHIELDED.set(True)  # (tasks, threads and queries started inside are not the cancel's)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        cycle = self._cycle
        cycle.shield_depth -= 1
        if self._token is not None:
            SHIELDED.reset(self._token)
            self._token = None
        if cycle.shield_depth == 0 and cycle.stopper is not None:
            cycle.stopper.tick()

    async def __aenter__(self) -> "Shield":
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)


class Cycle:
    """One ASGI scope's life, whatever the protocol.

    Subclasses (``RequestCycle``, ``WebSocketCycle``) say what "the answer is finished" means
    (``work_finished``), in which phase a departure abandons work (``abandon_phase``), how the
    scope is named in log lines (``describe``), how a failed or early-returning app is answered
    (``fail``, ``app_returned``), and what the access log says at the end (``log_end``).
    """

    __slots__ = (
        "scope",
        "conn",
        "worker",
        "loop",
        # client / disconnect
        "client_left",
        "gone_at",  # when the client left: set by client_gone, read only once client_left
        "left_at",  # when unfinished work was abandoned (0.0: none was)
        "waiters",
        "gone_event",
        # app task and cancellation
        "task",
        "app_done",
        "started_at",
        "shield_depth",
        "cancel_handle",
        "stopper",  # work.Stopper, once the work is being stopped
        "registry",  # work.Registry: queries and interruptible threads that registered
        "children",  # the tasks it created (Python 3.10/3.11, when work is tracked)
        "timed_out",  # its deadline passed (not a disconnect: counted apart)
        "listening",  # the app was waiting for the disconnect when it came
    )

    logs_every_end = True  # log_end() also when nothing was abandoned (a WebSocket session's line)

    def __init__(self, scope: dict, conn: Any) -> None:
        self.scope = scope
        self.conn = conn
        self.worker = conn.settings
        self.loop = conn.loop
        self.client_left = False
        self.left_at = 0.0
        self.waiters: list | None = None
        self.gone_event: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.app_done = False
        self.started_at = _now()
        self.shield_depth = 0
        self.cancel_handle: asyncio.TimerHandle | None = None
        self.stopper: Stopper | None = None
        self.registry: Any = None
        self.children: Any = None
        self.timed_out = False
        self.listening = False
        scope["extensions"]["tether.disconnect"] = DisconnectSignal(self)

    # ------------------------------------------------------------------ what subclasses define
    def work_finished(self) -> bool:
        """True once the app's answer is complete: nothing it does after that is abandoned."""
        raise NotImplementedError

    def abandon_phase(self) -> str:
        """The STATS phase a departure now falls in (only asked while the work is unfinished)."""
        raise NotImplementedError

    def describe(self) -> str:
        """The scope in a log line: ``GET /x HTTP/1.1``, ``WebSocket /chat``."""
        raise NotImplementedError

    def fail(self) -> None:
        """The app failed while the client was there: answer it (500, close 1011, ...)."""
        raise NotImplementedError

    def app_returned(self) -> None:
        """The app returned normally: end what it left unfinished."""
        raise NotImplementedError

    def log_end(self, abandoned: float | None) -> None:
        """The access line when the app has ended (``abandoned``: seconds it ran for nobody)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ protocol -> cycle
    def client_gone(self) -> None:
        """The client left (FIN/RST/stream reset/close frame/dead peer). Idempotent."""
        if self.client_left:
            return
        now = self._mark_gone()
        if self.app_done or self.task is None or self.work_finished():
            return  # a finished answer, or a queued request that never started
        # The answer is unfinished: the app's work is abandoned from now on.
        self.left_at = now
        STATS.disconnected(self.abandon_phase())
        worker = self.worker
        if worker.cancel_on_disconnect:
            grace = worker.disconnect_grace
            if grace > 0:
                self.cancel_handle = self.loop.call_later(grace, self.cancel_app)
            else:
                self.cancel_app()

    def _mark_gone(self) -> float:
        """From now on the app is told its request is over: receive() returns the disconnect,
        the extension's signal is set, send() raises."""
        self.client_left = True
        self.gone_at = now = _now()
        self.listening = bool(self.waiters) or (self.gone_event is not None and bool(self.gone_event._waiters))
        if self.waiters:
            self._wake()
        if self.gone_event is not None:
            self.gone_event.set()
        return now

    def cancel_app(self) -> None:
        """Apply the cancel policy: stop the request's work (work.Stopper; a running shield()
        block holds it until the outermost one exits)."""
        self.cancel_handle = None
        if self.app_done or self.task is None or self.work_finished():
            return
        self.stop_work("cancelled", self.listening)

    def stop_work(self, reason: str, listening: bool = False) -> None:
        """Stop the request's work (work.Stopper); ``listening``: the app was waiting for the
        disconnect when it came, and gets to end its work itself first."""
        if self.stopper is None:
            self.stopper = Stopper(self, reason, self._work_stopped, listening)
            self.stopper.tick()

    # ------------------------------------------------------------------ receive() waiting
    async def _wait(self) -> None:
        future = self.loop.create_future()
        if self.waiters is None:
            self.waiters = [future]
        else:
            self.waiters.append(future)
        await future

    def _wake(self) -> None:
        waiters, self.waiters = self.waiters, None
        for future in waiters:  # type: ignore[union-attr]
            if not future.done():
                future.set_result(None)

    # ------------------------------------------------------------------ the app task
    def start(self, app: Callable) -> None:
        """Run ``app`` for this scope in a task of its own, counted in flight until it ends.

        (Not an eager task on 3.12+: ``Task(..., eager_start=True)`` from data_received, after
        parsing, served hello 14% slower on 3.13 than this, measured side by side: README,
        "Python versions".)"""
        worker = self.worker
        worker.in_flight += 1
        if not HAS_TASK_CONTEXT and worker.tracks_work:
            self.children = weakref.WeakSet()  # (filled by work.recording_task_factory)
        task = self.loop.create_task(self.run_asgi(app))
        self.task = task
        worker.tasks.add(task)

    async def run_asgi(self, app: Callable) -> None:
        if self.worker.tracks_work:
            # In the task's own context: the tasks and threads it starts inherit it (work.py).
            # Only when a cancel or a deadline may stop the work: it costs ~4% of a hello.
            CURRENT.set(self)
        try:
            result = await app(self.scope, self.receive, self.send)  # type: ignore[attr-defined]
        except BaseException as exc:  # the app's failure is ours to report, whatever it is
            self._app_failed(exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if result is not None:
                error_logger.error("ASGI callable returned a value (%r); it should return None", result)
            if not self.client_left:
                self.app_returned()
        finally:
            self._app_finished()

    def _app_failed(self, exc: BaseException) -> None:
        if self.client_left:
            if _caused_by_disconnect(exc, self.stopper is not None):
                if _debug(logging.DEBUG):
                    error_logger.debug("%s ended with %s after the client left", self.describe(), type(exc).__name__)
            else:
                error_logger.error("Exception in ASGI application after the client left (%s)", self.describe(), exc_info=exc)
            return
        if isinstance(exc, asyncio.CancelledError):
            error_logger.warning("%s was cancelled before it finished its response", self.describe())
        else:
            error_logger.error("Exception in ASGI application (%s)", self.describe(), exc_info=exc)
        self.fail()

    def _app_finished(self) -> None:
        self.app_done = True
        worker = self.worker
        worker.in_flight -= 1
        worker.tasks.discard(self.task)
        if self.cancel_handle is not None:
            self.cancel_handle.cancel()
            self.cancel_handle = None
        self.conn.app_finished(self)
        stopper = self.stopper
        if stopper is not None:
            if not stopper.finished:
                stopper.root_ended()  # (it settles now, or once the rest of the work has ended)
        else:
            if self.left_at:
                self._settle(_now())
            else:  # (the common case: nothing to count or log)
                if self.logs_every_end:
                    self.log_end(None)
                self.scope = _FINISHED_SCOPE
            # task -> its context -> CURRENT -> this cycle -> task is a reference cycle too.
            self.task = None

    def _work_stopped(self, stopper: Stopper) -> None:
        if self.app_done:
            self._settle(max(stopper.last_end, stopper.started))

    def _settle(self, ended: float) -> None:
        """The work has ended (the app, and what it started that Tether could see): count it,
        log it, let go of the scope."""
        abandoned = None
        if self.left_at:
            abandoned = max(0.0, ended - self.left_at)
            if not self.timed_out:
                STATS.abandoned(abandoned, bool(self.stopper is not None and self.stopper.what_stopped()))
        self.log_end(abandoned)
        # scope -> extensions -> DisconnectSignal -> cycle -> scope is a reference cycle; break
        # it so that a finished request is freed at once instead of by the cyclic GC.
        self.scope = _FINISHED_SCOPE

    # ------------------------------------------------------------------ the access log
    def log_access(self, status: int, sent: int, note: str = "") -> None:
        if METRICS.enabled:  # (a scope's one access line is its end: --metrics counts it here)
            METRICS.request_done(self.conn, ABANDONED if status == 499 and self.client_left else status,
                                 _now() - self.started_at)
        if not access_logger.isEnabledFor(logging.INFO):
            return
        scope = self.scope
        client = scope.get("client")
        access_logger.info(
            self.worker.access_log_format.format(
                client=f"{client[0]}:{client[1]}" if client else "-",
                request_line=self.describe(),
                method=scope.get("method", "GET"),
                path=scope["path"],
                query_string=scope["query_string"].decode("latin-1"),
                http_version=scope["http_version"],
                status=status,
                bytes=sent,
                duration_ms=(_now() - self.started_at) * 1000,
                note=note,
            )
        )

    def abandoned_note(self, seconds: float) -> str:
        """`` abandoned 12.3ms``, then what the cancel stopped: `` cancelled`` (the task alone),
        `` cancelled (task, 2 tasks, 1 query)``."""
        note = f" abandoned {seconds * 1000:.1f}ms"
        stopped = self.stopper.what_stopped() if self.stopper is not None else []
        if stopped == ["task"]:
            return note + " cancelled"
        return note + f" cancelled ({', '.join(stopped)})" if stopped else note

    def target(self) -> str:
        """The request target as the client sent it (path and query)."""
        scope = self.scope
        query = scope["query_string"]
        path = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        return f"{path}?{query.decode('latin-1')}" if query else path


def _caused_by_disconnect(exc: BaseException | None, stopped: bool = False, depth: int = 0) -> bool:
    """True if ClientDisconnected (or a cancel) is this exception, inside its group, or in its
    chain; with ``stopped`` (Tether stopped the work), also what stopping it raises: an
    interrupted thread's RequestCancelled, a cancelled query's error."""
    if depth > 20 or exc is None:
        return False
    if isinstance(exc, (ClientDisconnected, asyncio.CancelledError)):
        return True
    if stopped and (isinstance(exc, RequestCancelled) or _query_cancelled(exc)):
        return True
    if _EXCEPTION_GROUP and isinstance(exc, _EXCEPTION_GROUP):
        return all(_caused_by_disconnect(inner, stopped, depth + 1) for inner in exc.exceptions)
    return _caused_by_disconnect(exc.__cause__ or exc.__context__, stopped, depth + 1)


def _query_cancelled(exc: BaseException) -> bool:
    """A database driver's "query cancelled" (PostgreSQL SQLSTATE 57014 from psycopg 3, psycopg2
    or asyncpg; sqlite3's interrupt()); Django and SQLAlchemy wrap it, their chain leads to it."""
    if getattr(exc, "sqlstate", None) == "57014" or getattr(exc, "pgcode", None) == "57014":
        return True
    return type(exc).__name__ == "OperationalError" and str(exc) == "interrupted"
