"""Providers: where services are written (OpenMetadata)."""
