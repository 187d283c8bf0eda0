"""Hostile: fails while being imported."""
raise RuntimeError("bad import")
