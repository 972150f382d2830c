"""Bridges to other tools (MTEB: :mod:`uniembed.integrations.mteb`); each imports its tool lazily.
The core never imports this package."""
