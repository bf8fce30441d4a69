"""What the tests share, one module per kind of thing (tests/conftest.py holds the fixtures):

* ``waiting``: ``wait_until`` (the one bounded poll), ``free_port``, ``wait_for_port``;
* ``server``: a real Tether in a thread (``serve``) or as ``python -m tether`` (``cli_server``);
* ``process``: Tether as a subprocess in its own process group (``running``, ``run_cli``);
* ``http1``: the raw HTTP/1.1 client (``RawClient``, ``request``, ``chunked``, reads, ``curl``);
* ``h2``: the HTTP/2 frame vocabulary, the raw-frame client ``RawH2``, the h2-library ``H2Client``;
* ``ws``: the raw WebSocket client ``RawWebSocket`` and its frames;
* ``asgi``: app-side pieces (``read_body``, ``receive_body``, ``respond``, ``Gate``, ``START``);
* ``probe``: ``Probe``, what the app saw and when; ``disconnect``: a client that leaves
  (``hang_up``, ``close_kinds``) and ``assert_prompt``;
* ``sockets``: what the raw clients share (one socket, a buffer, bounded reads);
* ``logs``: Tether's log records in caplog;
* ``components`` (PostgreSQL, nginx) and ``netns`` (a peer that vanishes) for the acceptance tests.

No test module imports from another test module.
"""
