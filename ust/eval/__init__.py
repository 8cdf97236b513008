"""Evaluation: AU-PRO and ROC-AUC exactly as the official MVTec AD evaluation computes them, and segmentation thresholds."""
