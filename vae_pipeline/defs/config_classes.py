"""Dagster Config classes made from the core's frozen dataclasses, so a field is declared once.

The core dataclasses (core/model/config.py) hold every field, default and value check. The launchpad
schema is generated from them here, and `to_core` turns a launched config back into the core
dataclass, which validates it: adding a field touches the dataclass alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import dagster as dg
import pydantic

T = TypeVar("T")


def _dagster_field(annotation: Any, default: Any) -> tuple[Any, Any]:
    """Dagster config has lists, not tuples: (type, default) as the launchpad shows them."""
    if get_origin(annotation) is tuple:
        return list[get_args(annotation)[0]], list(default)
    return annotation, default


def dagster_config(
    name: str,
    doc: str,
    *cores: type,
    module: str,
    exclude: Collection[str] = (),
    extra: dict[str, tuple[Any, Any]] | None = None,
) -> type[dg.Config]:
    """A dg.Config subclass with the fields (and defaults) of the given core dataclasses, less `exclude`, plus `extra`."""
    fields: dict[str, tuple[Any, Any]] = {}
    for core in cores:
        hints = get_type_hints(core)
        for field in dataclasses.fields(core):
            if field.name in exclude:
                continue
            if field.name in fields:
                raise TypeError(f"{name}: field {field.name!r} appears in more than one core config.")
            fields[field.name] = _dagster_field(hints[field.name], field.default)
    fields.update(extra or {})
    return pydantic.create_model(name, __base__=dg.Config, __doc__=doc, __module__=module, **fields)


def to_core(config: dg.Config, core: type[T], **overrides: Any) -> T:
    """The core dataclass a launched config describes (its own checks run here: ConfigError names the field)."""
    names = {field.name for field in dataclasses.fields(core)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model_dump().items() if k in names}
    return core(**{**values, **overrides})
