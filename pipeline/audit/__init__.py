"""Checking a dataset from its cached CNN codes alone (no backbone run): likely label errors,
near-duplicates within a split and leaks across splits, and outliers far from every class.

`neighbours` (bounded-memory cosine top-k), `labels` (confident learning on out-of-fold
probabilities), `duplicates` (pairs above a threshold read off the data), `outliers` (k-th
neighbour distance, robustly standardised), `findings` (the whole audit and its files), `scale`
(the 100,000-row check). The rules and their numbers: docs/audit.md. Floor 5: imports core,
images, codes, heads, runs; never report, finetune or stages.
"""
