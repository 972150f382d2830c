"""jina-embeddings-v3: XLM-RoBERTa with rotary positions and five task LoRA adapters, text only.

One module per idea: :mod:`.config` (config.json), :mod:`.layout` (the official weight layout,
read and written), :mod:`.processor` (tasks and tokenisation), :mod:`.network` (the transformers
backbone with resident adapters) and :mod:`.model` (the runtime model,
:class:`~uniembed.models.base.EmbeddingModel`).
"""
