"""Data shipped with the package: feature params and the default model."""
