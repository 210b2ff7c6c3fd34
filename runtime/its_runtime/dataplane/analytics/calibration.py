"""Image-to-ground homography from a camera's 4-point calibration.

Traffic engineers calibrate a camera by marking four points on the image whose
positions on the road they know (lane-marking corners, a surveyed rectangle). The
road is a plane, so one 3x3 homography maps every image point onto it; this module
solves it once per camera with the direct linear transform (an 8x8 linear solve in
numpy, no OpenCV) and maps bottom-centre points to metres. Image points are
normalised (0..1), like every other point in the config, so a calibration survives
a change of stream resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from its_runtime.config import CameraConfig
from its_runtime.dataplane.analytics.geometry import FloatArray, Point
from its_runtime.traffic_config import Calibration


class Homography:
    """Maps normalised image points to ground points in metres."""

    def __init__(self, matrix: FloatArray) -> None:
        self.matrix = matrix

    @classmethod
    def solve(cls, image: Sequence[Point], ground: Sequence[Point]) -> Homography:
        """The homography taking the 4 ``image`` points onto the 4 ``ground`` points."""
        if len(image) != 4 or len(ground) != 4:
            raise ValueError("a homography needs exactly 4 point pairs")
        a = np.zeros((8, 8), dtype=np.float64)
        b = np.zeros(8, dtype=np.float64)
        for k, ((x, y), (u, v)) in enumerate(zip(image, ground, strict=True)):
            a[2 * k] = (x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y)
            a[2 * k + 1] = (0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y)
            b[2 * k], b[2 * k + 1] = u, v
        h = np.linalg.solve(a, b)
        return cls(np.append(h, 1.0).reshape(3, 3))

    @classmethod
    def of(cls, calibration: Calibration) -> Homography:
        return cls.solve(
            [(p.x, p.y) for p in calibration.image_points],
            [(p.x, p.y) for p in calibration.ground_points],
        )

    def to_ground(self, p: Point) -> Point:
        """The ground position (metres) of the normalised image point ``p``."""
        m = self.matrix
        w = m[2, 0] * p[0] + m[2, 1] * p[1] + m[2, 2]
        return (
            float((m[0, 0] * p[0] + m[0, 1] * p[1] + m[0, 2]) / w),
            float((m[1, 0] * p[0] + m[1, 1] * p[1] + m[1, 2]) / w),
        )

    def to_image(self, g: Point) -> Point:
        """The inverse map (metres to normalised image), for tests and overlays."""
        m = np.linalg.inv(self.matrix)
        x, y, w = m @ np.array([g[0], g[1], 1.0])
        return (float(x / w), float(y / w))


def of_camera(camera: CameraConfig) -> Homography | None:
    """The camera's homography, or None when it has no calibration."""
    return None if camera.calibration is None else Homography.of(camera.calibration)


def distance_m(a: Point, b: Point) -> float:
    return float(((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5)
