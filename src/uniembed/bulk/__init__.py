"""Bulk embedding jobs: files in, JSONL / Parquet / NumPy out (``uniembed embed``).

A job streams *records* (an id and a raw input) from text files, JSONL files and folders of images
and PDFs, embeds them in chunks of ``batch_size`` records and appends every finished chunk to the
output before reading the next. Partial output is therefore always valid, and ``resume`` skips the
ids already written:

* JSONL is appended line by line and flushed after each chunk (a torn last line is dropped on
  resume);
* Parquet and NumPy outputs are written as one part file per chunk in ``<output>.parts/`` (each part
  appears atomically) and merged into ``<output>`` when the job finishes.

A bad item (empty text, corrupt image, too many tokens, duplicate id) never stops a job: it goes to
the errors file (``<output>.errors.jsonl``: ``{"id": …, "error": …}``) and the job goes on. Items
that failed are tried again on resume.

Modules: :mod:`~uniembed.bulk.records` (reading), :mod:`~uniembed.bulk.outputs` (writing and resume
state), :mod:`~uniembed.bulk.job` (the job); the command line is :mod:`uniembed.cli.embed`.
"""

from uniembed.bulk.job import (
    DEFAULT_BATCH_SIZE,
    DUPLICATE_ID,
    BulkOptions,
    BulkReport,
    ChunkEncoder,
    ChunkResult,
    Screened,
    check_embed_options,
    embed_files,
    process_chunk,
    screen,
)
from uniembed.bulk.outputs import infer_format
from uniembed.bulk.records import ReadOptions, Record, count_items, count_records, iter_records

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DUPLICATE_ID",
    "BulkOptions",
    "BulkReport",
    "ChunkEncoder",
    "ChunkResult",
    "ReadOptions",
    "Record",
    "Screened",
    "check_embed_options",
    "count_items",
    "count_records",
    "embed_files",
    "infer_format",
    "iter_records",
    "process_chunk",
    "screen",
]
