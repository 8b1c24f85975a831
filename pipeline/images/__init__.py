"""Image files to pixels: scanning folders and manifests, decoding safely, the eval transform,
datasets, the recipe's augmentation, extra views, and batched (nvJPEG) decode."""
