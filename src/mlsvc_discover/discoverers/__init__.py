"""Discoverers: one module per platform, registered through entry points."""
