"""uniembed: self-hosted universal embeddings (jina-embeddings-v4 and v3)."""
