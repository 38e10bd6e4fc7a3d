"""Stage configuration and run metadata.

Every stage (data construction, sampling, SFT, GRPO, evaluation, ...) has a config dataclass that
subclasses :class:`StageConfig`. Its fields carry ``metadata={"help": ...}``. Values come, in increasing
precedence, from the dataclass defaults (the ``tiny`` preset), a params YAML
(``params/<preset>/NN_<notebook>.yaml``) and overrides (``{"key": value}`` or ``["key=value", ...]``).

* An unknown or mistyped key is an error that names the key and the file it came from (with close
  matches), never silently ignored.
* A value of the wrong type is an error that names the key, the file, the expected and the given type.
  Ints are accepted for float fields; YAML strings are not coerced to numbers. Params YAMLs and
  ``key=value`` overrides are read with :func:`yaml_load`, PyYAML's safe loader with YAML 1.2's float
  syntax, so that ``3e-5`` is the float 3e-05 (PyYAML alone reads it as the string ``'3e-5'``).

Each run writes ``run.json`` beside its outputs: params, seed, git sha, package versions, device,
start/end time (:func:`write_run_json`, :class:`RunRecord`).

Paths in params are relative to the project root. :func:`resolve_path` resolves them against
``$SPATIAL_MLLM_ROOT`` when it is set (``make lab`` and the notebook runner set it), else against the
current working directory.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import json
import os
import platform
import re
import subprocess
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = [
    "yaml_load",
    "parse_overrides",
    "ConfigError",
    "StageConfig",
    "load_params",
    "register_params",
    "params_schema",
    "resolve_path",
    "project_root",
    "run_metadata",
    "write_run_json",
    "RunRecord",
]

ROOT_ENV = "SPATIAL_MLLM_ROOT"


class ConfigError(ValueError):
    """A params file or override does not fit its stage's config dataclass."""


# --------------------------------------------------------------------------------------------------
# type checking of values
# --------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to ``tp`` where lossless (int→float, list→tuple, dict→dataclass),
    else raise :class:`ConfigError` naming ``where``."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_value(value, a, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")

    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")

    if origin in (list, tuple, Iterable, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_check_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_check_value(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items

    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        kt, vt = args if args else (Any, Any)
        return {
            _check_value(k, kt, f"{where} key"): _check_value(v, vt, f"{where}[{k!r}]")
            for k, v in value.items()
        }

    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, where)

    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected bool (true/false), got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected str, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    return value


def _unknown_key_error(key: str, known: Iterable[str], cls: type, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return ConfigError(
        f"{source}: unknown key {key!r} for {cls.__name__}{hint}; known keys: {', '.join(sorted(known))}"
    )


def _build(cls: type, data: Mapping[str, Any], source: str):
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key_error(key, fields, cls, source)
        kwargs[key] = _check_value(value, hints[key], f"{source}: key {key!r}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # __post_init__ rejections keep their message
        raise ConfigError(f"{source}: {e}") from e


# --------------------------------------------------------------------------------------------------
# the base class
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class StageConfig:
    """Base class of every stage config: validated construction from dicts, YAML and namespaces."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>"):
        """Build from a mapping; unknown keys and wrong types raise :class:`ConfigError`."""
        return _build(cls, dict(data), source)

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any], source: str = "notebook parameters"):
        """Pick this config's fields out of a namespace (a notebook's ``globals()``); missing fields keep
        their defaults."""
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        return cls.from_dict({n: namespace[n] for n in names if n in namespace}, source)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    def replace(self, **changes):
        return self.from_dict({**dataclasses.asdict(self), **changes}, source="replace()")


# --------------------------------------------------------------------------------------------------
# params files
# --------------------------------------------------------------------------------------------------

_REGISTRY: dict[str, str] = {}


def register_params(stem: str):
    """Class decorator: ``params/<preset>/<stem>.yaml`` fills this config (``load_params`` without an
    explicit schema finds it by the file's stem)."""

    def deco(cls):
        _REGISTRY[stem] = f"{cls.__module__}:{cls.__qualname__}"
        return cls

    return deco


# Notebook stem → "module:Class" of its config, so that ``load_params`` finds a schema before its
# module was imported (``register_params`` adds to this at import time).
_KNOWN_SCHEMAS: dict[str, str] = {
    "01_data_construction": "spatial_mllm.data.build:DataConfig",
    "02_sampling_analysis": "spatial_mllm.sampling.analysis:SamplingAnalysisConfig",
    "03_sft": "spatial_mllm.train.sft:SFTConfig",
    "04_grpo": "spatial_mllm.train.grpo:GRPOConfig",
    "05_ablations": "spatial_mllm.experiments.ablations:AblationConfig",
    "06_results": "spatial_mllm.eval.results:ResultsConfig",
}


def params_schema(stem: str) -> type | None:
    """The config dataclass registered for a params stem, or None."""
    ref = _REGISTRY.get(stem) or _KNOWN_SCHEMAS.get(stem)
    if ref is None:
        return None
    import importlib

    mod, _, qual = ref.partition(":")
    obj = importlib.import_module(mod)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float syntax: ``1e-5`` and ``3E+2`` are floats (YAML 1.1 needs a
    dot, ``1.0e-5``, else a string)."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """Parse YAML text (a params file or the value of a ``key=value`` override) safely, with YAML 1.2's
    floats: ``lr: 3e-5`` is a float, as every YAML 1.2 reader and a user expect."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def parse_overrides(overrides, source: str) -> dict[str, Any]:
    """Overrides as a dict: a mapping as it is, or ``["key=value", ...]`` with each value read by
    :func:`yaml_load`; an item without ``=`` is an error naming ``source`` and the item."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} is not of the form key=value")
        k, _, v = item.partition("=")
        out[k.strip()] = yaml_load(v)
    return out


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a params YAML into a dict; an empty file is ``{}``; anything but a mapping is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    try:
        data = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
    return data


def load_params(yaml_path: str | os.PathLike, overrides=None, schema: type | None = None):
    """Load a params YAML into its stage's config dataclass.

    Args:
        yaml_path: ``params/<preset>/<stem>.yaml``.
        overrides: ``{"key": value}`` or ``["key=value", ...]`` (values parsed as YAML); they win over
            the file, which wins over the dataclass defaults.
        schema: the config dataclass; by default the one registered for the file's stem.

    Raises:
        ConfigError: unknown key (named, with the file), wrong type, or no schema for the stem.
    """
    path = Path(yaml_path)
    data = read_yaml(path)
    schema = schema or params_schema(path.stem)
    if schema is None:
        raise ConfigError(f"{path}: no config dataclass registered for {path.stem!r}; pass schema=")
    merged = dict(data)
    over = parse_overrides(overrides, f"{path} (overrides)")
    fields = {f.name for f in dataclasses.fields(schema) if f.init}
    for k in over:
        if k not in fields:
            raise _unknown_key_error(k, fields, schema, f"{path} (overrides)")
    merged.update(over)
    return schema.from_dict(merged, source=str(path))


# --------------------------------------------------------------------------------------------------
# paths and run metadata
# --------------------------------------------------------------------------------------------------


def project_root() -> Path:
    """``$SPATIAL_MLLM_ROOT`` if set, else the current working directory."""
    env = os.environ.get(ROOT_ENV)
    return Path(env) if env else Path.cwd()


def resolve_path(p: str | os.PathLike | None) -> Path | None:
    """Resolve a params path: absolute stays, relative is taken from :func:`project_root`; ``~`` expands."""
    if p is None:
        return None
    p = Path(os.path.expanduser(str(p)))
    return p if p.is_absolute() else project_root() / p


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


_VERSION_PACKAGES = (
    "torch", "torchvision", "transformers", "accelerate", "peft", "datasets", "numpy", "open3d", "av",
    "papermill",
)


def _git_sha(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    sha = out.stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd or Path(__file__).resolve().parent,
        capture_output=True, text=True, timeout=10,
    )
    return sha + ("-dirty" if dirty.stdout.strip() else "")


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version(), "spatial_mllm": None}
    for name in ("spatial_mllm", *_VERSION_PACKAGES):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _device() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        import torch
    except ImportError:  # torch is a dependency; keep run.json writable without it
        info["cuda"] = None
        return info
    info["torch_threads"] = torch.get_num_threads()
    info["cuda"] = torch.cuda.is_available()
    if info["cuda"]:
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def run_metadata(params: Any = None, seed: int | None = None, **extra) -> dict[str, Any]:
    """The shared run metadata: params, seed, git sha, package versions, device, start time."""
    return {
        "params": _jsonable(params),
        "seed": seed,
        "git_sha": _git_sha(),
        "versions": _versions(),
        "device": _device(),
        "argv": list(sys.argv),
        "start_time": _now(),
        "end_time": None,
        **_jsonable(extra),
    }


def write_run_json(out_dir: str | os.PathLike, meta: Mapping[str, Any], name: str = "run.json") -> Path:
    """Write ``meta`` as ``<out_dir>/<name>`` (atomically: a temp file then rename)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(meta), indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


class RunRecord:
    """Context manager that writes ``run.json`` at the start (end_time null) and again at the end, with
    ``status`` "ok" or "failed: <error>"; extra results can be attached with ``record["key"] = value``.

        with RunRecord(out_dir, params=cfg, seed=cfg.seed) as rec:
            ...
            rec["metrics"] = scores
    """

    def __init__(self, out_dir, params=None, seed=None, name: str = "run.json", **extra):
        self.out_dir = Path(out_dir)
        self.name = name
        self.meta = run_metadata(params, seed, **extra)
        self.meta["status"] = "running"

    def __setitem__(self, key, value):
        self.meta[key] = _jsonable(value)

    def __enter__(self):
        self.path = write_run_json(self.out_dir, self.meta, self.name)
        return self

    def __exit__(self, exc_type, exc, tb):
        self.meta["end_time"] = _now()
        self.meta["status"] = "ok" if exc is None else f"failed: {exc_type.__name__}: {exc}"
        write_run_json(self.out_dir, self.meta, self.name)
        return False
