"""Pixels to CNN codes: which weights, the backbone and its trunk, the Encoder, extraction in
resumable shards, and the HDF5 store that caches the codes."""
