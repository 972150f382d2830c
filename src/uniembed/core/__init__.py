"""The floor: concepts every feature package shares, defined once (scores, vectors, token pooling,
wire encodings, files, ranking, BEIR, checks, iteration). It imports nothing of uniembed but
``errors``, ``_optional`` and itself."""
