"""Where a camera's URL comes from: inline, or a Secret (``urlSecretRef``), never both.

Camera URLs usually carry credentials (``rtsp://user:password@camera/stream``). A
plain ``url`` sits in the CR and in the rendered ConfigMap, readable by anyone who may
read those, so a URL with a password is refused there (by the pydantic validator and by
the CRD's CEL rule, both with a message that points to ``urlSecretRef``). With
``urlSecretRef`` the URL stays in the Secret: the operator gives the pod an environment
variable from it (``valueFrom.secretKeyRef``, named by :func:`env_name`) and renders
``urlEnv`` with that name into the runtime file, which the runtime resolves at start.

A runtime file written by hand (no operator) may use ``urlEnv`` directly; the CR does
not offer it (it would be a second way to the same thing, with no Secret check).
Part of the shared config format: standard library and pydantic only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import Field

from its_runtime.wire import WireModel

#: ``scheme://something:password@``: a URL whose userinfo has a password. A user name
#: alone (``rtsp://viewer@camera/``) is not a secret and is allowed inline.
PASSWORD_PATTERN = r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*:[^/?#]*@"
_PASSWORD = re.compile(PASSWORD_PATTERN)
#: The CEL form of the same rule (RE2 accepts the same pattern).
NO_PASSWORD_CEL = f"!has(self.url) || !self.url.matches('{PASSWORD_PATTERN}')"
NO_PASSWORD_MESSAGE = (
    "cameras[].url must not carry a password (user:password@): put the URL in a Secret "
    "and reference it with cameras[].urlSecretRef"
)
ONE_SOURCE_CEL = "has(self.url) != has(self.urlSecretRef)"
ONE_SOURCE_MESSAGE = "set exactly one of cameras[].url and cameras[].urlSecretRef"

#: Prefix of the environment variable that carries a ``urlSecretRef`` camera's URL.
ENV_PREFIX = "ITS_CAMERA_URL_"


class CameraSecretRef(WireModel):
    """A key of a Secret in the pipeline's namespace holding the camera's full URL."""

    name: str = Field(
        ...,
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="Name of the Secret (same namespace).",
    )
    key: str = Field(
        ...,
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key inside the Secret's data whose value is the stream URL.",
    )


def has_password(url: str) -> bool:
    return _PASSWORD.match(url) is not None


def env_name(camera: str) -> str:
    """The environment variable of camera ``camera``'s URL: ``ITS_CAMERA_URL_<NAME>``.

    One to one: camera names are DNS labels (no underscore), so ``-`` -> ``_`` and
    upper-casing never make two names collide."""
    return ENV_PREFIX + camera.upper().replace("-", "_")


def resolve(url: str | None, url_env: str | None, env: Mapping[str, str]) -> str | None:
    """The URL to open: inline, or read from ``url_env``; None when that is unset."""
    if url is not None:
        return url
    if url_env is None:
        return None
    return env.get(url_env) or None
