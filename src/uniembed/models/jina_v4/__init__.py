"""jina-embeddings-v4: Qwen2.5-VL backbone (from transformers) + task LoRA + multi-vector projector.

Facts (prompts, image template, pooling, key layout) follow the official model card and snapshot
files (``config.json``, ``preprocessor_config.json``, ``adapters/adapter_config.json``); the
README's "What the outputs are" section states them. One module per idea: :mod:`.config`
(config.json), :mod:`.layout` (the official weight and adapter layout, read and written),
:mod:`.processor` (tasks, tokenisation, image preprocessing), :mod:`.network` (backbone and
projector with resident adapters) and :mod:`.model` (the runtime model,
:class:`~uniembed.models.base.EmbeddingModel`).
"""
