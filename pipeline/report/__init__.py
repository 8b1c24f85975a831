"""The report from saved runs: rows and words (the verdict), diagnostics, figures, and one list of
blocks rendered to Markdown and HTML. Never imports torch."""
