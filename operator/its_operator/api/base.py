"""The base class of every CR model and the CEL rule helper.

Both are the runtime config's own (``its_runtime.config``): runtime models embedded in
the spec (``model``, ``cameras``, ``slo``) and operator-only models follow one set of
wire conventions (camelCase, unknown keys rejected, frozen), defined once.
"""

from __future__ import annotations

from its_runtime import config as rc

cel = rc.cel
CrModel = rc.WireModel
