"""Experiment protocols: typed configuration, run folders, MVTec AD (single scale, multiscale, baselines), one-class, preflight checks."""
