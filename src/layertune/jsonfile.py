"""Reading the JSON files users write (options, targets, configs) with one-line errors, and
writing result files atomically (a crash never leaves a half-written file for a resume to read)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_json(path: str | Path, what: str, error: type[Exception] = ValueError) -> Any:
    """The parsed file; `error` naming the file and what it should be when it is missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def write_text_atomic(path: str | Path, text: str) -> None:
    """Writes `text` beside `path`, then renames it into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: str | Path, data: Any) -> None:
    """Atomically, indented; numpy scalars are written as floats."""
    write_text_atomic(path, json.dumps(data, indent=1, default=float))
