"""Carrier dialects: each carrier's media-stream protocol behind one interface (pure)."""
