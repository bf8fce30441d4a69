"""The ASGI cycle: ONE request cycle shared by every wire protocol.

* ``base.Cycle``: what every scope shares (the client-gone signal, the ``tether.disconnect``
  extension, the app task, the cancel policy, the access log);
* ``http.RequestCycle``: an HTTP request, on HTTP/1.1 or an HTTP/2 stream;
* ``websocket.WebSocketCycle``: a WebSocket session;
* ``contract``: what the protocols and the cycle may call on each other, declared.
"""

from .base import Cycle, DisconnectSignal, Shield
from .http import RequestCycle
from .websocket import WebSocketCycle

__all__ = ["Cycle", "DisconnectSignal", "RequestCycle", "Shield", "WebSocketCycle"]
