"""Training the backbone, by job: job (the Recipe and Job the stage hands over), train (build the
model, its SGD/StepLR, pick the loop's phases, run, record), loop (the shared epoch loop `fit`),
fast (decode once, augment on the device), cached (--loop codes: the head on cached views),
reference (the tutorial's loop), checkpoint (the resumable state), record (model.json,
metrics.json, the method's names and hyperparameters)."""
