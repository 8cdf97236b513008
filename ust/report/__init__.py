"""Reporting: the published numbers (one place), paper-vs-measured tables, figures, and the README sync."""
