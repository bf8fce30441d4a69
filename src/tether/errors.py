"""Exceptions that Tether raises into applications."""


class ClientDisconnected(OSError):
    """Raised by ``send()`` once the client has gone (ASGI spec 2.4 and later).

    It subclasses ``OSError`` as the spec asks, so frameworks that catch ``OSError`` around
    ``send()`` (Starlette, Django) treat it as the client leaving, not as a bug.
    """


class ConfigError(Exception):
    """A configuration problem, reported as one readable line and a non-zero exit."""


class DeadlineExceeded(ClientDisconnected):
    """Raised by ``send()`` once the request's deadline (``--timeout-request``) has passed: the
    client got 504 (or the connection was cut), and the app's work is being stopped.

    A subclass of ClientDisconnected, so that code that stops when its client leaves (frameworks
    included) stops here too: for the app, the answer is out of its hands either way.
    """


class RequestCancelled(BaseException):
    """Raised inside a ``tether.interruptible()`` block, in the thread running it, when the
    request's work is cancelled (its client left under ``--on-disconnect cancel``, or its
    deadline passed).

    A BaseException, like asyncio.CancelledError, so that ``except Exception`` in the
    interrupted code does not swallow it; if something swallows it anyway, it is raised again
    until the block ends.
    """
