"""The method of the paper, one module per concept: networks, dense transformation, losses, distillation target, teacher, student ensembles, scores."""
