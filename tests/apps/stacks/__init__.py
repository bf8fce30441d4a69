"""Real stacks for issue 14 (abandoned work stops), one small module per stack.

Framework code is used as its users write it; nothing here is Tether-specific except the marked
place for the CPU-loop opt-in in fastapi_cpu.py. Each app tags its PostgreSQL connections with
its own ``application_name`` so that ``pg_stat_activity`` tells whose query runs, and writes
what happened (``start``/``end`` of the work, warnings) to the events file that
tests/stacks.py reads (``_record.py``). Configuration comes from the environment:

    STACKS_PG_HOST, STACKS_PG_PORT   the PostgreSQL cluster (user postgres, trust auth)
    STACKS_EVENTS                    the events file (one line per event; unset: nothing written)
"""
