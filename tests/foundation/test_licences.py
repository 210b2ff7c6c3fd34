"""No AGPL dependency: every distribution installed in the project's environment is checked.

The project ships as images that operators run next to their own code; an AGPL
dependency (ultralytics, BoxMOT and friends are the usual suspects in this field)
would put network-use obligations on every user. The check reads each installed
distribution's own metadata (``License-Expression``, trove classifiers, and the
``License`` field when it is a short name rather than a bundled licence text, which
for scipy quotes the AGPL among the licences it lists for vendored code).
"""

from __future__ import annotations

import email.message
import importlib.metadata
import re

import pytest

_AGPL = re.compile(r"\bAGPL|Affero", re.IGNORECASE)
#: A ``License`` field longer than this is a licence text, not a licence name.
_NAME_LIMIT = 120


def agpl_reason(meta: email.message.Message) -> str | None:
    """Why this distribution's metadata says AGPL, or None."""
    expression = meta.get("License-Expression") or ""
    if _AGPL.search(expression):
        return f"License-Expression: {expression}"
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License ::") and _AGPL.search(classifier):
            return f"classifier: {classifier}"
    name = (meta.get("License") or "").strip()
    if name and len(name) <= _NAME_LIMIT and "\n" not in name and _AGPL.search(name):
        return f"License: {name}"
    return None


def _meta(**fields: str | list[str]) -> email.message.Message:
    msg = email.message.Message()
    for key, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            msg[key.replace("_", "-")] = item
    return msg


@pytest.mark.parametrize(
    "meta",
    [
        _meta(Name="ultralytics", License="AGPL-3.0"),
        _meta(Name="boxmot", License_Expression="AGPL-3.0-only"),
        _meta(
            Name="x",
            Classifier=[
                "Programming Language :: Python :: 3",
                "License :: OSI Approved :: GNU Affero General Public License v3",
            ],
        ),
    ],
    ids=["license-field", "license-expression", "classifier"],
)
def test_agpl_metadata_is_recognised(meta: email.message.Message) -> None:
    assert agpl_reason(meta) is not None


@pytest.mark.parametrize(
    "meta",
    [
        _meta(Name="trackers", License_Expression="Apache-2.0"),
        _meta(Name="supervision", License="MIT"),
        _meta(Name="scipy", License="Copyright ...\n" + "x" * 300 + "\nGNU Affero General ..."),
        _meta(Name="y", Classifier="License :: OSI Approved :: GNU General Public License v2"),
    ],
    ids=["apache", "mit", "bundled-licence-text", "gpl-not-agpl"],
)
def test_other_licences_pass(meta: email.message.Message) -> None:
    assert agpl_reason(meta) is None


def test_no_installed_distribution_is_agpl() -> None:
    offenders: dict[str, str] = {}
    count = 0
    for dist in importlib.metadata.distributions():
        count += 1
        reason = agpl_reason(dist.metadata)  # type: ignore[arg-type]
        if reason:
            offenders[dist.metadata["Name"]] = reason
    assert count > 50, f"only {count} distributions found: not the project's environment?"
    assert not offenders, f"AGPL dependencies installed: {offenders}"
