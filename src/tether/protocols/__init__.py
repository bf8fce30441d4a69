"""Wire protocols: each translates bytes to calls on the shared request cycle (cycle.py)."""
