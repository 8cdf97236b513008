"""The fused detector for inspection (the Student–Teacher, or GCAD with ``method="gcad"``): fit on
good images, save, load, predict, export, evaluate.

::

    from ust.detector import Detector, DetectorConfig

    detector = Detector.fit("images/good", "results/teachers", DetectorConfig())  # paper settings
    detector.save("detector.pt")
    result = Detector.load("detector.pt").predict(["a.png", "b.png"])
    result.maps, result.scores, result.masks, result.anomalous

Modules: :mod:`.config` (the configuration), :mod:`.model` (the detector, its calibration and its
predictions), :mod:`.fit` (fitting, resumable), :mod:`.files` (the checksummed, versioned file),
:mod:`.images` (inputs), :mod:`.export` (TorchScript / ONNX graph), :mod:`.batch` (a batch of
files into an output folder, ``ust predict``), :mod:`.outputs` (output paths checked up front,
folders published whole), :mod:`.render` (overlays and figures), :mod:`.report` (the
self-contained ``report.html``), :mod:`.evaluation` (metrics and decisions on a labelled folder,
``ust evaluate --model``), :mod:`.demo` (data and teachers for notebook 50).
"""

from ust.detector.config import THRESHOLD_RULES, DetectorConfig
from ust.detector.files import DetectorFileError
from ust.detector.images import ImageReadError
from ust.detector.model import Calibration, Detector, Prediction

__all__ = [
    "THRESHOLD_RULES",
    "Calibration",
    "Detector",
    "DetectorConfig",
    "DetectorFileError",
    "ImageReadError",
    "Prediction",
]
