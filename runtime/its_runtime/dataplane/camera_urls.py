"""Camera URLs from the environment: a ``urlEnv`` camera gets its URL at start.

The operator renders a ``urlSecretRef`` camera as ``urlEnv`` (an environment variable
the pod fills from the Secret, see :mod:`its_runtime.camera_url`); the data plane
resolves it here, once, from the same environment it reads the DSN from. Every URL a
camera opens is handed to :func:`its_runtime.redaction.remember`, so its password is
masked in logs and answers even where a message quotes it without the URL around it.
A variable that is unset leaves the camera without a URL: its reader reports that (by
the variable's name) as the camera's error, and the other cameras run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from its_runtime import camera_url, redaction
from its_runtime.config import CameraConfig


def resolve(cameras: Sequence[CameraConfig], env: Mapping[str, str]) -> list[CameraConfig]:
    out: list[CameraConfig] = []
    for cam in cameras:
        url = camera_url.resolve(cam.url, cam.url_env, env)
        if url is not None:
            redaction.remember(url)
            if cam.url is None:
                cam = cam.model_copy(update={"url": url})
        out.append(cam)
    return out
