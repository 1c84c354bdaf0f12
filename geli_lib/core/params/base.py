"""What every parameter section shares: the repository's places, the error, the checks and YAML coercion."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import re
import typing
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parents[3]
PARAMS_DIR = REPO_ROOT / "params"
PROFILES = ("smoke", "cpu", "gpu")
CORPORA = ("simulated", "candor", "esconv", "soda")
#: Folder, inside a results key, of runs whose parameters differ from the profile's.
ADHOC_DIR = "adhoc"
#: Notebook parameters the runner passes; they choose the results key themselves (profile, corpus).
RUNNER_PARAMETERS = ("profile", "corpus", "data_path")
#: Largest integer any parameter takes (a larger one is a typo, not a setting).
MAX_INT = 2**31 - 1
#: A number in exponent notation without a dot (``1e-3``), which YAML 1.1 reads as a string.
_EXPONENT = re.compile(r"[+-]?\d+[eE][+-]?\d+")


class ParamError(ValueError):
    """A parameter file or override is invalid; the message names file and field."""


class _FieldError(Exception):
    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field_name, self.message = field_name, message


def _check(ok: bool, field_name: str, rule: str, value: Any) -> None:
    if not ok:
        raise _FieldError(field_name, f"{rule}, got {value!r}")


def _check_choices(obj: Any) -> None:
    """Every ``Literal[...]``-typed field of the dataclass ``obj`` (or list of them) holds choices its type names."""
    for name, tp in typing.get_type_hints(type(obj)).items():
        value = getattr(obj, name)
        if typing.get_origin(tp) is list and typing.get_origin(typing.get_args(tp)[0]) is Literal:
            tp, values = typing.get_args(tp)[0], list(value)
        elif typing.get_origin(tp) is Literal:
            values = [value]
        else:
            continue
        choices = typing.get_args(tp)
        bad = [v for v in values if v not in choices]
        _check(not bad, name, f"must be one of {', '.join(map(repr, choices))}", bad[0] if bad else value)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, or raise naming ``where``."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _FieldError(where, f"expected a mapping, got {value!r}")
        return _build(tp, value, where + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _FieldError(where, f"expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and len(value) != len(args):
            raise _FieldError(where, f"expected a list of {len(args)} values, got {list(value)!r}")
        items = [_coerce(v, args[0] if origin is list else args[i], f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is Literal:  # a choice: a string among the type's
        choice = _coerce(value, str, where)
        if choice not in typing.get_args(tp):
            raise _FieldError(where, f"must be one of {', '.join(map(repr, typing.get_args(tp)))}, got {choice!r}")
        return choice
    if tp is bool:
        if not isinstance(value, bool):
            raise _FieldError(where, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _FieldError(where, f"expected an integer, got {value!r}")
        if abs(value) > MAX_INT:
            raise _FieldError(where, f"expected an integer of at most {MAX_INT}, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; learning rates are written so
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _FieldError(where, f"expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML reads .inf and .nan as numbers
            raise _FieldError(where, f"expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise _FieldError(where, f"expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise _FieldError(prefix + unknown[0], f"unknown parameter (known: {sorted(names)})")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    obj = cls(**kwargs)
    try:
        obj.validate()
    except _FieldError as e:
        raise _FieldError(prefix + e.field_name, e.message) from None
    return obj


def to_dict(params: Any) -> dict[str, Any]:
    """Plain-dict form of a parameter dataclass (for manifests and cache keys)."""
    return dataclasses.asdict(params)


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> docstring, read from the source (for the book's parameter tables)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(nxt, ast.Expr)
            and isinstance(getattr(nxt, "value", None), ast.Constant)
        ):
            docs[node.target.id] = str(nxt.value.value)  # type: ignore[union-attr, attr-defined]
    return docs
