"""Wire protocols: each translates bytes to calls on the shared request cycle (tether/cycle/), as cycle/contract.py declares."""
