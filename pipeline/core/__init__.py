"""The floor every other package stands on: files (atomic writes, JSON, locks), the CLI built from
frozen dataclasses, devices and precision, and ranks under torchrun. Imports nothing above it."""
