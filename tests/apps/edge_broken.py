"""Raises at import: for the "app fails to import" tests."""

raise RuntimeError("broken on purpose (edge test)")
