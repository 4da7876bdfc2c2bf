"""Inference over the analysed images: per-unit summaries recorded by hooks, stored in zarr."""
