"""Training loops only: teacher pretraining and student training, with checkpoint/resume, device choice, data parallelism and optional dvclive logging (live.py)."""
