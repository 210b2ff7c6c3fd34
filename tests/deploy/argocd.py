"""Run the Argo CD health check (Lua 5.1, as Argo CD's gopher-lua) on an object."""

from __future__ import annotations

import pathlib
from typing import Any

import lupa.lua51 as lua51

HEALTH_LUA = pathlib.Path(__file__).resolve().parents[2] / "manifests" / "argocd" / "health.lua"


def _to_lua(rt: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return rt.table_from({k: _to_lua(rt, v) for k, v in value.items()})
    if isinstance(value, list):
        return rt.table_from([_to_lua(rt, v) for v in value])
    return value


def health(obj: dict[str, Any]) -> tuple[str, str]:
    rt = lua51.LuaRuntime(unpack_returned_tuples=True)
    fn = rt.eval("function(obj) " + HEALTH_LUA.read_text() + "\nend")
    result = fn(_to_lua(rt, obj))
    return str(result["status"]), str(result["message"] or "")
