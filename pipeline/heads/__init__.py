"""Classifiers on cached codes: the registry, the hand-written estimators, the CV path search,
the out-of-core head and the label curve. No torch unless a torch head runs."""
