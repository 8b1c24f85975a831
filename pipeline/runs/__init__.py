"""A run folder: written atomically by classify and finetune, read back and cross-checked by
predict and report, with every statistic computed in one place (metrics)."""
