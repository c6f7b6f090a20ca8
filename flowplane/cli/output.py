"""Printing answers: `-o table` (rich, for people), `-o json` and `-o yaml` (for scripts)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

Column = tuple[str, Callable[[dict[str, Any]], Any]]


class Format(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def console(stderr: bool = False) -> Console:
    """A terminal gets rich's width and colours; a pipe or file gets plain text, never wrapped
    (a script reading a table must not see a cell split over two lines)."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(file=stream, stderr=stderr)
    return Console(file=stream, width=100_000, no_color=True, highlight=False, soft_wrap=True)


def dump_yaml(data: Any) -> str:
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False))


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def emit(data: Any, fmt: Format, columns: Sequence[Column] | None = None) -> None:
    """Print one record (a dict) or a list of records in `fmt`; a table needs `columns`."""
    if fmt is Format.json:
        sys.stdout.write(dump_json(data) + "\n")
    elif fmt is Format.yaml:
        sys.stdout.write(dump_yaml(data))
    else:
        rows = data if isinstance(data, list) else [data]
        table(rows, columns or [(k.upper(), _getter(k)) for k in _keys(rows)])


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> None:
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for header, _ in columns:
        t.add_column(header, overflow="fold")
    for row in rows:
        t.add_row(*(cell(get(row)) for _, get in columns))
    console().print(t)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def _getter(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: row.get(key)


def _keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(k for k, v in row.items() if not isinstance(v, dict | list)))
    return list(keys)
