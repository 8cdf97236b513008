"""Data sources: patch triplets, one-class datasets, MVTec AD layout, synthetic sets."""
