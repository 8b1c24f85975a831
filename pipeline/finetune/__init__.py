"""Training the backbone: the fast loop (decode once, augment on the device), the tutorial's
reference loop, and the resumable checkpoint."""
