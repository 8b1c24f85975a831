"""The report from saved runs, never importing torch: rows (the table, CSV, cells), verdict (paired
tests, the recommendation, the plain words), diagnostics (per class, top losses, always wrong,
labels, views), figures (drawing) and gallery (which figures, with captions), render (one list of
blocks to Markdown and HTML), build (assembles and writes it all; the report stage calls it)."""
