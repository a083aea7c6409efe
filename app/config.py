"""The building blocks of configuration, below every component.

Each component declares its own frozen config class next to the code it configures
(the quote parameters, the risk limits, the gateway, the sink, the simulated venue),
with fields made by ``documented``. app/settings.py composes them into one ``Settings``
and fills each from its ``CRYPTICS_<PREFIX>_<FIELD>`` variables with ``fields_from_env``.
Components import this module, never app/settings.py, so there is no import circle.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import field
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Optional

PREFIX = "CRYPTICS_"


class SettingError(ValueError):
    """A component's config refuses the value of one of its fields. ``field`` is the field's
    name; app/settings.py turns it into the variable (``CRYPTICS_<INFIX><FIELD>``), which the
    component does not know."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def documented(default: Any, doc: str) -> Any:
    """A dataclass field with its default and a one-line doc (``metadata["doc"]``): the
    parameter tables of docs/operations.md are made from these docs."""
    return field(default=default, metadata={"doc": doc})


def env_value(environ: Mapping[str, str], name: str) -> Optional[str]:
    """``CRYPTICS_<name>``, stripped; None when unset or blank."""
    value = environ.get(PREFIX + name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def parse_flag(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (1/0, true/false, yes/no, on/off), got {text!r}")


def pure_python(environ: Optional[Mapping[str, str]] = None) -> bool:
    """``CRYPTICS_PURE_PYTHON``: use the pure-Python twins of the compiled modules.

    Read here rather than from a Settings object because it picks which code is imported
    (app/trading/quote.py, ticks.py), before any settings exist; Settings.pure_python reads
    the same variable with the same parser."""
    raw = env_value(os.environ if environ is None else environ, "PURE_PYTHON")
    return False if raw is None else parse_flag(raw)


def compiled_or_twin(compiled: str, twin: str) -> tuple[ModuleType, str]:
    """The compiled module ``compiled`` (Cython, built at install time), or its pure-Python
    ``twin`` when it was not built or ``CRYPTICS_PURE_PYTHON`` asks for it; and which one
    (``"cython"`` or ``"python"``)."""
    if not pure_python():
        try:
            return importlib.import_module(compiled), "cython"
        except ImportError:  # not compiled (no compiler at install time)
            pass
    return importlib.import_module(twin), "python"


def without_password(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``: what may be printed or
    written where other people read (a terminal, up.json, a log line)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    user, _, host = rest.partition("@")
    if ":" not in user:
        return url
    return f"{scheme}://{user.split(':', 1)[0]}:***@{host}"


class SettingsErrors(ValueError):
    """Every refused variable of an environment, one line each (``lines``), so that a user
    fixes them all in one go; ``str()`` is the lines joined."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)


def fields_from_env(cls: type, environ: Optional[Mapping[str, str]], infix: str) -> dict[str, Any]:
    """Values for the dataclass ``cls`` from ``CRYPTICS_<infix><FIELD>`` variables, typed by
    the fields (a tuple field takes comma-separated numbers: ``0.2,0.4``). Values that do not
    parse raise SettingsErrors, a line for each, naming its variable."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    errors: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        name = f"{infix}{f.name.upper()}"
        raw = env_value(environ, name)
        if raw is None:
            continue
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        try:
            if "Tuple" in kind or "tuple" in kind:
                values[f.name] = tuple(float(part) for part in raw.split(",") if part.strip())
            elif "Path" in kind:
                values[f.name] = Path(raw).expanduser()
            elif "bool" in kind:
                values[f.name] = parse_flag(raw)
            elif "int" in kind:
                values[f.name] = int(raw)
            elif "float" in kind:
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        except (ValueError, RuntimeError) as exc:  # RuntimeError: ~user of a user that does not exist
            errors.append(f"{PREFIX}{name}={raw!r}: {exc}")
    if errors:
        raise SettingsErrors(errors)
    return values
