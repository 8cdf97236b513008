"""The paper's baselines and compared methods."""
