"""Datasets, Tri- text sidecars, SynthTri, samplers and transforms."""
