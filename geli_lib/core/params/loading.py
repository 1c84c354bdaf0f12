"""Loading a profile: YAML files, overrides, papermill's injected parameters and the ad-hoc results key."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from geli_lib.core.io import content_key
from geli_lib.core.params.base import (
    PARAMS_DIR,
    PROFILES,
    RUNNER_PARAMETERS,
    ParamError,
    _build,
    _coerce,
    _FieldError,
    to_dict,
)
from geli_lib.core.params.compute import COMPUTE_ENV
from geli_lib.core.params.study import StudyParams


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base`` section by section; ``None`` leaves a value as it is
    (a notebook parameter left at ``None`` means "the profile's")."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            continue
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} given twice (lines {seen[key]} and "
                    f"{key_node.start_mark.line + 1}); the first would be silently dropped",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _read_profile(path: Path) -> dict[str, Any]:
    """The mapping of a parameter file; an unreadable, empty or duplicated one is a :class:`ParamError`."""
    if not path.exists():
        raise ParamError(f"{path}: parameter file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise ParamError(
            f"{path}: not UTF-8 text (line {line}, byte {e.start}: "
            f"{e.object[e.start : e.start + 1]!r}); save the file as UTF-8"
        ) from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ParamError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        raise ParamError(
            f"{path}: empty parameter file (a profile must set its parameters; copy params/smoke.yaml to start)"
        )
    if not isinstance(raw, dict):
        raise ParamError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"reward": {"lam": 0.1}}`` -> ``{"reward.lam": 0.1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def key_value(text: str, option: str) -> tuple[str, Any]:
    """``"batch_size=12"`` -> ``("batch_size", 12)``: a command line's ``option KEY=VALUE``, the value read as
    YAML as in a parameter file (the field's type is checked by :func:`load_params`)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ParamError(f"{option} expects KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def adhoc_name(profile: dict[str, Any], run: dict[str, Any]) -> str:
    """The folder name of a run whose parameters (``run``, :func:`to_dict`) differ from the
    profile's: ``field=value`` of each difference, joined by ``_``; empty when none differ.

    A long or unusual name is cut and given a hash, so it stays one safe folder name. The
    ``compute`` section never counts: where the work runs changes no result.
    """
    a, b = _flatten(profile), _flatten(run)
    diffs = [f"{k}={b[k]}" for k in sorted(b) if a.get(k) != b[k] and not k.startswith("compute.")]
    name = re.sub(r"[^A-Za-z0-9._=,+-]+", "", "_".join(diffs).replace(" ", ""))
    if len(name) > 80:
        name = f"{name[:63]}-{content_key(diffs)}"
    return name


def _lookup(tree: dict[str, Any], dotted: str) -> bool:
    """Whether the dotted field (``reward.lam``, ``seeds[0]``) is set in ``tree``."""
    node: Any = tree
    for part in re.sub(r"\[\d+\]", "", dotted).split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return False
        node = node[part]
    return True


def _assignments(source: str) -> dict[str, Any]:
    """``name = value`` lines at the top level of a code cell -> the value (a Python literal, else
    its source text); empty when the cell does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = ast.unparse(node.value)
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(t, ast.Name):
                    out[t.id] = value
    return out


def injected_parameters(history: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the notebook's own cells set before papermill's cell, what papermill's cell sets).

    ``history`` is the kernel's executed cells in order. Papermill injects a cell
    starting with ``# Parameters`` right after the notebook's parameters cell; a
    name it sets that no earlier cell set is not a parameter of the notebook.
    Both are empty when the notebook was not run by papermill.
    """
    cells = [i for i, src in enumerate(history) if src.startswith("# Parameters\n")]
    if not cells:
        return {}, {}
    declared: dict[str, Any] = {}
    for src in history[: cells[-1]]:
        declared.update(_assignments(src))
    return declared, _assignments(history[cells[-1]])


def _field_types(cls: type | None = None) -> dict[str, set[Any]]:
    """Every field name of :class:`StudyParams` and its sections -> the types it has there."""
    out: dict[str, set[Any]] = {}
    for name, tp in typing.get_type_hints(cls or StudyParams).items():
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            for k, v in _field_types(tp).items():
                out.setdefault(k, set()).update(v)
        else:
            out.setdefault(name, set()).add(tp)
    return out


def check_injected_types(injected: dict[str, Any]) -> None:
    """A ``-p`` value of a notebook parameter named like a study parameter must have its type.

    ``-p seed 1.7`` would otherwise run as seed 1 in a notebook that does
    ``int(seed)``; ``None`` (the notebook's "the profile's") is always allowed.
    """
    types = _field_types()
    for name, value in injected.items():
        kinds = types.get(name, set())
        if name in RUNNER_PARAMETERS or value is None or len(kinds) != 1:
            continue
        try:
            _coerce(value, next(iter(kinds)), name)
        except _FieldError as e:
            raise ParamError(f"papermill -p {e} (the study parameter {name} is of that type)") from None


def _kernel_history() -> list[str]:
    """The cells executed so far when running inside an IPython kernel, else nothing."""
    try:
        # lazy: inside a kernel only
        from IPython import get_ipython
    except ImportError:
        return []
    shell = get_ipython()
    return [str(c) for c in shell.user_ns.get("In", [])] if shell is not None else []


def _param_error(e: _FieldError, path: Path, from_override: bool) -> ParamError:
    """The error naming where the bad value came from: the file, or an override of it."""
    if from_override:
        return ParamError(
            f"override {e} (given as a notebook parameter, papermill -p, a command-line "
            f"option or ${' / $'.join(COMPUTE_ENV.values())}, not read from {path})"
        )
    return ParamError(f"{path}: {e}")


def compute_from_env() -> dict[str, Any]:
    """``compute`` settings from :data:`COMPUTE_ENV` (unset or empty variables left out).

    ``GELI_WORKERS`` must be an integer; anything else is a :class:`ParamError` naming it.
    """
    out: dict[str, Any] = {}
    for name, var in COMPUTE_ENV.items():
        value = os.environ.get(var, "")
        if not value:
            continue
        if name == "workers":
            if not value.strip().isdigit():
                raise ParamError(f"${var}={value!r}: compute.workers must be a whole number")
            out[name] = int(value)
            continue
        out[name] = value
    return out


def load_params(profile: str = "smoke", params_dir: str | Path | None = None, **overrides: Any) -> StudyParams:
    """Load ``params/<profile>.yaml`` into validated :class:`StudyParams`.

    Keyword overrides replace top-level fields (``corpus="esconv"``) or, given
    as dicts, merge into sections (``simulation={"n_conversations": 5}``).
    ``None`` overrides are ignored, so notebooks can pass their parameters as-is.
    ``$GELI_SCHEDULER`` and ``$GELI_WORKERS`` set ``compute`` under the overrides
    (:func:`compute_from_env`).
    """
    params_dir = Path(params_dir) if params_dir else PARAMS_DIR
    path = params_dir / f"{profile}.yaml"
    declared, injected = injected_parameters(_kernel_history())
    unknown = sorted(set(injected) - set(declared))
    if unknown:
        raise ParamError(
            f"papermill -p {', '.join(unknown)}: not a parameter of this notebook "
            f"(its parameters: {', '.join(sorted(declared))}); the run is stopped rather "
            "than run on the defaults"
        )
    check_injected_types(injected)
    overrides = _merge({"compute": compute_from_env()}, overrides)
    if profile not in PROFILES:
        raise ParamError(f"profile {profile!r} unknown: choose one of {PROFILES}")
    file_raw = _read_profile(path)
    if "adhoc" in file_raw or "adhoc" in overrides:
        where = str(path) if "adhoc" in file_raw else "override"
        raise ParamError(f"{where}: adhoc is set by load_params from the overrides, not a parameter")
    file_raw.setdefault("profile", profile)
    # What the study itself runs: the file with the runner's own choices (corpus, data path).
    study_raw = _merge(file_raw, {k: overrides.get(k) for k in ("corpus", "data_path")})
    try:
        study = _build(StudyParams, study_raw)
    except _FieldError as e:
        raise _param_error(e, path, from_override=_lookup(overrides, e.field_name)) from None
    try:
        params = _build(StudyParams, _merge(study_raw, overrides))
    except _FieldError as e:  # the study's parameters were valid: an override is to blame
        raise _param_error(e, path, from_override=True) from None
    if injected:  # run by papermill: named by what was typed, including parameters of the notebook alone
        changed = {k: v for k, v in injected.items() if k not in RUNNER_PARAMETERS and v != declared[k]}
        params.adhoc = adhoc_name({k: declared[k] for k in changed}, changed)
    else:
        params.adhoc = adhoc_name(to_dict(study), to_dict(params))
    return params
