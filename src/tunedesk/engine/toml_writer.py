"""A tiny TOML writer for configuration files (the standard library reads TOML but cannot write it).

It covers what a RunConfig holds: top-level values, one level of tables, inline tables and lists.
TOML has no null, so ``None`` values are left out (the reader then uses the field's default).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any


def dumps(data: dict[str, Any], tables: Collection[str]) -> str:
    """``data`` as TOML text; the keys in ``tables`` whose values are dicts become ``[table]`` sections."""
    lines: list[str] = []
    sections: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict) and key in tables:
            sections.append((key, value))
        elif value is not None:
            lines.append(f"{key} = {_value(value)}")
    for name, table in sections:
        lines.append(f"\n[{name}]")
        lines.extend(f"{key} = {_value(value)}" for key, value in table.items() if value is not None)
    return "\n".join(lines) + "\n"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_value(x)}" for k, x in v.items() if x is not None) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(type(v))
