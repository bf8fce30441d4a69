"""The request's work, and the cancel that stops all of it.

What "the request's work" is
----------------------------
Everything that runs on behalf of one request:

* its **task** (the app call) and the **tasks it created** in its context (Quart's and Django's
  handler tasks, Starlette's task groups, BaseHTTPMiddleware's route task, the app's own),
  except those created inside ``shield()``;
* the **threads** it waits on (``def`` endpoints through anyio, ``asyncio.to_thread``, asgiref's
  ``sync_to_async``, ``run_in_executor``): contextvars follow the request into them, so code
  there can ask ``tether.is_disconnected()``, and a pure-Python loop inside
  ``tether.interruptible()`` can be interrupted;
* the **database queries** those run (integrations/: SQLAlchemy, psycopg 3, psycopg2, the Django
  ORM, sqlite3; asyncpg cancels its own query when its task is cancelled).

``CURRENT`` (a ContextVar set by the request task) is how all of these know their request:
tasks and threads inherit a copy of the context, so the value reaches them without any call.

How the cancel reaches each part
--------------------------------
``Stopper`` is started when the work must stop (the client left under ``--on-disconnect
cancel``, or the deadline passed) and ticks until nothing of the work is left:

1. at once, queries in flight are cancelled on the database server (``conn.cancel()``,
   sqlite3's ``interrupt()``, in a small thread pool of Tether's own: those calls block
   briefly), and threads inside ``interruptible()`` get RequestCancelled raised in them: no
   framework can stop these itself;
2. the request's task is cancelled, and first the tasks it waits for where cancelling the
   waiter does not cancel them: with ``asyncio.wait`` (orphaned otherwise), or in an anyio task
   group (which waits for its children: BaseHTTPMiddleware's route task ran on to its end).
   Those go first, and the request's task once they have ended (or after ROOT_WAIT): a
   cancelled host makes anyio cancel its scope, level-triggered, and that would cancel the
   route's ``session.close()`` too (SQLAlchemy's "non-checked-in connection"). ``gather`` and
   ``asyncio.TaskGroup`` cancel their own. Other tasks started
   in the request's context are not touched: libraries start background and shielded tasks
   there (asyncpg's pool releases its connection in one). If the app was listening for the
   disconnect when it came (a task waiting in ``receive()`` or on the extension), it is left
   REACT seconds to end its work itself first: frameworks that listen end their child tasks
   themselves and must get to finish doing so (Django then fires ``request_finished``, which
   closes its database connections; Quart's handler task is not orphaned; Starlette's
   streaming responses return cleanly);
3. a task waiting for a thread is not cancelled while anyio (FastAPI/Starlette ``def``
   endpoints, Litestar) or asgiref (Django) waits: cancelling that wait does not stop the
   thread, it only makes the task forget it, frees anyio's thread-limiter slot for the next
   request's thread (anyio shields that wait for this reason), and leaves Django's
   thread-sensitive executor busy under its cleanup. The thread is stopped through 1 instead,
   and the task is cancelled once the thread has returned. A wait in ``asyncio.to_thread`` or
   ``run_in_executor`` is cancelled as any other (the executor bounds its threads itself, and
   the app may stop its thread from ``except CancelledError``), and the thread is watched:
   until it returns, the work is not over (the access log's abandoned time includes it).

Why it is level-triggered
-------------------------
An asyncio cancel is delivered once; a library that swallows it (psycopg 3, when the cancel
lands just as a query is sent, waits for the query instead) runs on. So every tick looks again:
a task still running RECANCEL seconds after its cancel is cancelled again, a query still in
flight RESEND seconds after its cancel is cancelled again, an interrupted thread still in its
block is interrupted again, until the work has ended, as a Trio/anyio cancel scope would. A
``shield()`` block holds all of it until it exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import itertools
import sys
import threading
from contextvars import ContextVar
from time import monotonic as _now
from typing import Any, Callable

from ..errors import ClientDisconnected, DeadlineExceeded, RequestCancelled
from ..logs import error_logger

CURRENT: ContextVar = ContextVar("tether.request", default=None)  # the Cycle this code works for
SHIELDED: ContextVar = ContextVar("tether.shielded", default=False)  # started inside shield()

TICKS = (0.005, 0.01, 0.01, 0.02, 0.02, 0.05)  # then every 0.1 s
REACT = 0.25  # how long an app that listens for the disconnect gets to end its work itself
ROOT_WAIT = 1.0  # the longest the request's task waits for the tasks it waits for to end
RECANCEL = 0.25  # a task still running this long after its cancel swallowed it
RESEND = 0.1  # a query still running this long after its cancel escaped it
HAS_TASK_CONTEXT = sys.version_info >= (3, 12)  # Task.get_context()


# ---------------------------------------------------------------------- what registers itself
class Entry:
    """A query in flight, or a thread inside interruptible(), of one request."""

    __slots__ = ("registry", "key", "kind", "stop", "depth", "sent", "lock", "active")

    def __init__(self, registry: "Registry", key: Any, kind: str, stop: Callable[[], Any] | None) -> None:
        self.registry = registry
        self.key = key
        self.kind = kind  # "query" or "thread"
        self.stop = stop
        self.depth = 1  # (the same connection registered twice: Django's wrapper around the driver's)
        self.sent = 0.0  # when the stop was last sent
        self.lock = threading.Lock()
        self.active = True

    def close(self) -> None:
        self.depth -= 1
        if self.depth:
            return
        with self.lock:
            self.active = False
            if self.kind == "thread" and self.sent:
                _async_exc(self.key, None)  # (a RequestCancelled not yet raised must never escape the block)
        self.registry.entries.pop(self.key, None)
        self.registry.ended_at = _now()


class Registry:
    """What of one request's work registers itself: queries and interruptible threads. Added
    and removed from any thread (single dict operations: atomic under the GIL)."""

    __slots__ = ("entries", "ended_at", "stopped")

    def __init__(self) -> None:
        self.entries: dict = {}
        self.ended_at = 0.0
        self.stopped = {"query": 0, "thread": 0}

    def add(self, key: Any, kind: str, stop: Callable[[], Any] | None) -> Entry:
        entry = self.entries.get(key)
        if entry is not None and entry.active:
            entry.depth += 1
            return entry
        entry = self.entries[key] = Entry(self, key, kind, stop)
        return entry


def registry_of(cycle: Any) -> Registry:
    registry = cycle.registry
    if registry is None:
        registry = cycle.registry = Registry()
    return registry


def query_started(connection: Any, stop: Callable[[], Any] | None) -> Entry | None:
    """A database query starts on ``connection`` for the current request (None: no request, or
    a shielded one). ``stop`` cancels it from another thread; None: the task cancel does (asyncpg)."""
    cycle = CURRENT.get()
    if cycle is None or SHIELDED.get():
        return None
    entry = registry_of(cycle).add(id(connection), "query", stop)
    if cycle.stopper is not None:
        cycle.stopper.soon()  # (a query started after the cancel is cancelled too)
    return entry


def is_disconnected() -> bool:
    """From any thread (or task) of a request: has its client gone, or its deadline passed?
    Thread-safe: it reads one attribute. It knows the request when Tether tracks request work
    (``--on-disconnect cancel`` or ``--timeout-request``); otherwise, and outside a request, it
    says False (the scope's ``tether.disconnect`` extension works under any policy)."""
    cycle = CURRENT.get()
    return cycle is not None and cycle.client_left


def raise_if_disconnected() -> None:
    """The same as a checkpoint: raises ClientDisconnected (DeadlineExceeded after the deadline)."""
    cycle = CURRENT.get()
    if cycle is not None and cycle.client_left:
        if cycle.timed_out:
            raise DeadlineExceeded("the request's deadline has passed")
        raise ClientDisconnected("the client has disconnected")


# ---------------------------------------------------------------------- interrupting a thread
_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)


def _async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in that thread at its next bytecode (None: take back one not yet raised)."""
    if exc is None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
    else:
        _set_async_exc(thread_id, exc)


class Interruptible(contextlib.ContextDecorator):
    """What ``tether.interruptible()`` returns: see there."""

    __slots__ = ("entry",)

    def __init__(self) -> None:
        self.entry: Entry | None = None

    def _recreate_cm(self) -> "Interruptible":
        return Interruptible()  # (as a decorator: one per call, calls may run in several threads)

    def __enter__(self) -> "Interruptible":
        cycle = CURRENT.get()
        if cycle is not None and not SHIELDED.get() and threading.current_thread() is not threading.main_thread():
            self.entry = registry_of(cycle).add(threading.get_ident(), "thread", None)
            if cycle.stopper is not None:
                cycle.stopper.soon()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        entry, self.entry = self.entry, None
        if entry is not None:
            entry.close()


def interruptible(func: Callable | None = None) -> Any:
    """``with tether.interruptible():``, ``@tether.interruptible`` or ``@tether.interruptible()``:
    while the block (or the function) runs in a thread of a request, the request's cancel
    interrupts it by raising RequestCancelled in it, at the next Python bytecode. C code and
    blocking system calls (``time.sleep``, a socket read, one long ``re`` or ``hashlib`` call)
    are not interrupted: the exception comes when they return. Outside a request, or on the
    event loop's thread, it does nothing. The exception never lands after the block: leaving it
    takes back one not yet raised."""
    if func is None:
        return Interruptible()
    return Interruptible()(func)


# ---------------------------------------------------------------------- which tasks, waiting on what
def _deferring_code(code: Any) -> bool:
    """Code of a coroutine whose wait for a thread must not be cancelled: anyio's run_sync
    (FastAPI/Starlette ``def`` endpoints, Litestar's sync_to_thread), asgiref's SyncToAsync."""
    name = code.co_name
    if name == "run_sync_in_worker_thread":
        return "anyio" in code.co_filename
    return name == "__call__" and code.co_filename.endswith(("asgiref/sync.py", "asgiref\\sync.py"))


def thread_wait(task: asyncio.Task) -> tuple[bool, Any]:
    """``(defer, thread)`` for a task: ``defer`` if it waits for a thread through anyio or
    asgiref (see the module docstring); ``thread``, the concurrent.futures.Future of the
    executor thread it waits for (run_in_executor, asyncio.to_thread), or None. Read-only: the
    task's await chain, and the future it is blocked on, which run_in_executor chains to the
    executor's future (asyncio's _chain_future callback holds it)."""
    thread = None
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is not None:
        for callback, _ in getattr(waiter, "_callbacks", None) or ():
            if getattr(callback, "__qualname__", "").endswith("_chain_future.<locals>._call_check_cancel"):
                for cell in callback.__closure__ or ():
                    contents = cell.cell_contents
                    if isinstance(contents, concurrent.futures.Future):
                        thread = contents
    awaited: Any = task.get_coro()
    for _ in range(200):
        code = getattr(awaited, "cr_code", None) or getattr(awaited, "gi_code", None)
        if code is None:
            break
        if _deferring_code(code):
            return True, thread
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return False, thread


# Python 3.10 and 3.11 have no Task.get_context(): the tasks a request creates are recorded when
# they are created, by a task factory that only looks (server/worker.py installs it).
_CHILDREN: ContextVar = ContextVar("tether.children", default=None)


def recording_task_factory(previous: Callable | None) -> Callable:
    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task:
        task = previous(loop, coro, **kwargs) if previous is not None else asyncio.Task(coro, loop=loop, **kwargs)
        context = kwargs.get("context")
        cycle = context.get(CURRENT) if context is not None else CURRENT.get()
        if cycle is not None and cycle.children is not None and not (
                context.get(SHIELDED, False) if context is not None else SHIELDED.get()):
            cycle.children.add(task)
        return task
    return factory


# The done callbacks by which a waiter learns that a task it waits for ended, where cancelling
# the waiter does not cancel the task: asyncio.wait, and anyio's task groups when their host
# task is cancelled from outside anyio (they wait for their children instead).
_WAITED_BY = ("_wait.<locals>._on_completion", "TaskGroup._spawn.<locals>.task_done")


def _waited_for(task: asyncio.Task) -> bool:
    return any(getattr(callback, "__qualname__", "") in _WAITED_BY for callback, _ in getattr(task, "_callbacks", None) or ())


def other_tasks(cycle: Any) -> list[asyncio.Task]:
    """The request's tasks other than its own that are still running (not created in shield())."""
    root = cycle.task
    if HAS_TASK_CONTEXT:
        found = []
        for task in asyncio.all_tasks(cycle.loop):
            if task is root:
                continue
            context = task.get_context()
            if context.get(CURRENT) is cycle and not context.get(SHIELDED, False):
                found.append(task)
        return found
    children = cycle.children
    return [task for task in children if not task.done()] if children else []


# ---------------------------------------------------------------------- the cancel
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _stop_pool() -> concurrent.futures.ThreadPoolExecutor:
    """Where queries are cancelled: conn.cancel() opens a connection to the database server; the
    loop must not wait for that, and the default executor may be full of the very work being
    stopped."""
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="tether-cancel")
    return _pool


def _run_stop(stop: Callable[[], Any]) -> None:
    try:
        stop()
    except Exception as exc:  # (the connection closed meanwhile: nothing left to cancel)
        error_logger.debug("cancelling a query: %s", exc)


class Stopper:
    """Stops one request's work, and keeps at it until all of it has ended (see the module
    docstring). ``reason``: "cancelled" (the client left) or "deadline"."""

    __slots__ = ("cycle", "reason", "started", "handle", "ticks", "sent", "seen", "finished", "stopped_root",
                 "stopped_tasks", "last_end", "on_finish", "root_done", "tasks_from", "adopted", "threads")

    def __init__(self, cycle: Any, reason: str, on_finish: Callable[["Stopper"], None], listening: bool) -> None:
        self.cycle = cycle
        self.reason = reason
        self.started = _now()
        self.tasks_from = self.started + (REACT if listening else 0.0)  # when tasks may be cancelled
        self.handle: asyncio.Handle | None = None
        self.ticks = itertools.count()
        self.sent: dict = {}  # task -> when our cancel was last sent to it
        self.seen: set = set()
        self.finished = False
        self.stopped_root = False
        self.stopped_tasks = 0
        self.last_end = 0.0
        self.on_finish = on_finish
        self.root_done = False  # (the request's task is in its last step, not yet done())
        self.adopted: set = set()  # tasks it waited for (_WAITED_BY), cancelled with it
        # Executor threads the work is not over without: those whose wait was cancelled, and the
        # query cancels sent from the stop pool (a query whose task ended is not stopped until
        # its cancel request is out: asyncpg's connection may be gone by then).
        self.threads: set = set()

    def soon(self) -> None:
        """Tick at the next loop pass (from any thread)."""
        if not self.finished:
            self.cycle.loop.call_soon_threadsafe(self.tick)

    def tick(self) -> None:
        if self.finished:
            return
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        cycle = self.cycle
        now = _now()
        busy = False
        if not cycle.shield_depth:  # (the outermost shield's exit ticks at once)
            busy = self._stop_registered(now) | self._stop_tasks(now) | bool(self.threads)
        else:
            busy = True
        if busy:
            tick = next(self.ticks)
            self.handle = cycle.loop.call_later(TICKS[tick] if tick < len(TICKS) else 0.1, self.tick)
        else:
            self._finish()

    def _stop_registered(self, now: float) -> bool:
        registry = self.cycle.registry
        if registry is None:
            return False
        entries = list(registry.entries.values())
        for entry in entries:
            if entry.sent and now - entry.sent < RESEND:
                continue
            first = not entry.sent
            entry.sent = now
            if entry.kind == "thread":
                with entry.lock:
                    if entry.active:
                        _async_exc(entry.key, RequestCancelled)
            elif entry.stop is not None:
                self._watch_thread(_stop_pool().submit(_run_stop, entry.stop))
            if first:
                registry.stopped[entry.kind] += 1
        if registry.ended_at > self.last_end:
            self.last_end = registry.ended_at
        return bool(entries)

    def _stop_tasks(self, now: float) -> bool:
        cycle = self.cycle
        root = cycle.task
        root_running = root is not None and not self.root_done and not root.done()
        if now < self.tasks_from:  # (the app is ending the work itself: see the module docstring)
            return root_running
        if root_running:
            self.adopted.update(task for task in other_tasks(cycle) if _waited_for(task))
        self.adopted = {task for task in self.adopted if not task.done()}
        targets = list(self.adopted)
        if root_running and (not targets or now - self.started >= ROOT_WAIT):
            targets.append(root)  # (last: see 2 in the module docstring)
        for task in targets:
            self._watch(task)
            if not self._due(task, now):
                continue
            defer, thread = thread_wait(task)
            if thread is not None:
                self._watch_thread(thread)
            if not defer:
                if task not in self.sent:
                    if task is root:
                        self.stopped_root = True
                    else:
                        self.stopped_tasks += 1
                self.sent[task] = now
                task.cancel()
        return root_running or bool(targets)

    def _watch_thread(self, future: Any) -> None:
        """The work is not over until this executor future has returned."""
        if future not in self.threads:
            self.threads.add(future)
            future.add_done_callback(self._thread_returned)

    def _thread_returned(self, future: Any) -> None:  # (in the thread that ran it)
        self.cycle.loop.call_soon_threadsafe(self._thread_ended, future)

    def _thread_ended(self, future: Any) -> None:
        self.threads.discard(future)
        self.last_end = max(self.last_end, _now())
        if not self.threads:
            self.tick()

    def _due(self, task: asyncio.Task, now: float) -> bool:
        sent = self.sent.get(task)
        return sent is None or now - sent >= RECANCEL

    def _watch(self, task: asyncio.Task) -> None:
        if task not in self.seen:
            self.seen.add(task)
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task) -> None:
        self.last_end = max(self.last_end, _now())

    def root_ended(self) -> None:
        """The request's own task ended: the rest may have too."""
        self.root_done = True
        self.last_end = max(self.last_end, _now())
        self.tick()

    def _finish(self) -> None:
        self.finished = True
        self.sent.clear()
        self.seen.clear()
        self.on_finish(self)

    def what_stopped(self) -> list[str]:
        """What this cancel had to stop, for the access line: task, tasks, queries, threads."""
        parts = ["task"] if self.stopped_root else []
        if self.stopped_tasks:
            parts.append(f"{self.stopped_tasks} task{'s' if self.stopped_tasks > 1 else ''}")
        registry = self.cycle.registry
        if registry is not None:
            for kind, (one, many) in (("query", ("query", "queries")), ("thread", ("thread", "threads"))):
                count = registry.stopped[kind]
                if count:
                    parts.append(f"{count} {one if count == 1 else many}")
        return parts
