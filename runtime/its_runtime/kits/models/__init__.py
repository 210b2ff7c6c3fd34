"""Detectors built in code, for tests and benchmarks: no downloaded weights.

``yolo`` is a small anchor-free YOLO-style network (raw candidates, NMS outside the
model); ``ssdlite`` wraps torchvision's SSDlite320-MobileNetV3 either as torchvision
ships it (NMS inside, list-of-dicts output, eager only) or as its dense part with raw
YOLO-style output, which exports and compiles. ``export`` writes any of them as the
three file formats the runtime loads.
"""
