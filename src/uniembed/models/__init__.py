"""Model families behind one contract (see ``base``)."""

DEFAULT_MODEL = "jinaai/jina-embeddings-v4"  # what every command loads unless told
