"""Golden vectors (see generate.py)."""
