"""Input parsing, safe fetching, image decoding and PDF rendering."""
