"""Exceptions that Tether raises into applications."""


class ClientDisconnected(OSError):
    """Raised by ``send()`` once the client has gone (ASGI spec 2.4 and later).

    It subclasses ``OSError`` as the spec asks, so frameworks that catch ``OSError`` around
    ``send()`` (Starlette, Django) treat it as the client leaving, not as a bug.
    """


class ConfigError(Exception):
    """A configuration problem, reported as one readable line and a non-zero exit."""
