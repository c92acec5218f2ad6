"""Patch-kNN baseline (CLIP flavour)."""
