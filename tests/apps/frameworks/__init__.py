"""Real-framework apps (Starlette, FastAPI, Django) served unmodified by tests/test_frameworks.py."""
