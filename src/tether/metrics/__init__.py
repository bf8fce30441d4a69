"""Prometheus metrics (--metrics): counted in each worker, summed over all workers, served on a
listener of their own (--metrics-address, --metrics-port) by prometheus_client.

How it is built, and why
------------------------
* Counting (``recorder.py``): one ``request_done()`` call per request and WebSocket session,
  where its access line is written (``Cycle.log_access``), adds to plain lists that the worker
  copies into a small block of integers and floats once a second and when it stops; the rarer
  events (``logs.Stats``: disconnects, abandoned and cancelled requests) go to the block at once.
* Surviving workers (``totals.py``): under the supervisor that block is an anonymous shared
  mapping made before each fork, one per worker. The supervisor reads it at each scrape, and
  when a worker exits adds what the worker published to a base kept in the supervisor, under
  the lock the scrape takes. Totals therefore never go down while the supervisor runs, however
  often workers crash, hit --limit-max-requests, reload or recycle; a worker that stops
  publishes everything, one that is killed (SIGKILL, a crash) loses at most its last second of
  request counts. (Snapshots sent over a pipe would do the same with a system call per worker
  and second, and a reader on the supervisor's side.)
* Serving (``exporter.py``): a collector renders the totals into prometheus_client metric
  families, and prometheus_client's own HTTP server (a thread) serves them: in the supervisor
  with --workers N or --reload, in the process itself otherwise. The supervisor forks its
  workers while that thread runs (Python 3.12+ warns about fork with threads, under -W
  default): the thread takes no lock a worker uses (it does not log, and only it touches the
  totals and the registry), and the worker closes its copy of the listening socket first.

Why not prometheus_client's multiprocess mode: it writes each increment to a per-process mmap
file through a lock, and a histogram observation writes two values. Measured on this 2-core
machine, a request's recording (one counter increment, one histogram observation) with
``python bench/metrics_record.py``: multiprocess mode 2.7 us, prometheus_client's in-process
metrics 1.4 us, Tether's recorder 0.19 us. In place (callgrind, user-space instructions per
keep-alive hello request): Tether's recording adds 3,300 to the real server's 88,000 (+3.7%);
prometheus_client's multiprocess counter and histogram, in the same call of a socket-less
harness driving HTTP1Protocol (93,000 per request), add 28,500 (+31%). The budget is 5%. Multiprocess mode also needs an environment variable set before the app
imports prometheus_client (which changes the app's own metrics), and leaves a file per worker
pid ever started, which recycling would pile up.
"""

from __future__ import annotations

from .recorder import ABANDONED, METRICS

__all__ = ["ABANDONED", "METRICS"]
