"""Search what you embed: scores, compression, Qdrant-backed stores and an index over them.

Nothing here is imported by the core (``models/``, ``embedder.py``, ``server/``' embeddings routes).
"""
