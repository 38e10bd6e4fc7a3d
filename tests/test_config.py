"""load_params: unknown keys, wrong types, override precedence; run.json; path resolution."""

import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from spatial_mllm.config import ConfigError, RunRecord, StageConfig, load_params, resolve_path, yaml_load


@dataclass
class Inner(StageConfig):
    width: int = field(default=64, metadata={"help": "pixels"})


@dataclass
class Demo(StageConfig):
    seed: int = field(default=0, metadata={"help": "random seed"})
    lr: float = field(default=1e-4, metadata={"help": "learning rate"})
    name: str = "tiny"
    sampler: Literal["uniform", "space_aware"] = "uniform"
    frames: list[int] = field(default_factory=lambda: [8, 16])
    path: str | None = None
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def _write(tmp_path, text, name="03_demo.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_file_and_overrides_precedence(tmp_path):
    p = _write(tmp_path, "seed: 3\nlr: 0.5\nname: from_file\n")
    cfg = load_params(p, schema=Demo)
    assert (cfg.seed, cfg.lr, cfg.name, cfg.frames) == (3, 0.5, "from_file", [8, 16])  # file > defaults
    cfg = load_params(p, overrides={"seed": 7}, schema=Demo)
    assert cfg.seed == 7 and cfg.lr == 0.5  # overrides > file
    cfg = load_params(p, overrides=["lr=0.25", "frames=[4, 8]", "inner={width: 32}"], schema=Demo)
    assert cfg.lr == 0.25 and cfg.frames == [4, 8] and cfg.inner == Inner(width=32)


def test_unknown_key_names_key_and_file(tmp_path):
    p = _write(tmp_path, "seed: 1\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_params(p, schema=Demo)
    msg = str(e.value)
    assert "'learning_rate'" in msg and str(p) in msg

    p2 = _write(tmp_path, "sed: 1\n", "04_demo.yaml")
    with pytest.raises(ConfigError, match=r"did you mean 'seed'"):
        load_params(p2, schema=Demo)


def test_unknown_override_and_nested_key(tmp_path):
    p = _write(tmp_path, "inner: {widht: 3}\n")
    with pytest.raises(ConfigError, match="'widht'"):
        load_params(p, schema=Demo)
    p = _write(tmp_path, "seed: 1\n", "05_demo.yaml")
    with pytest.raises(ConfigError, match=r"'bogus'.*|.*'bogus'"):
        load_params(p, overrides={"bogus": 1}, schema=Demo)


@pytest.mark.parametrize(
    "text, key",
    [
        ("seed: '3'\n", "seed"),  # a string is not an int
        ("seed: 1.5\n", "seed"),  # a float is not an int
        ("lr: abc\n", "lr"),
        ("lr: true\n", "lr"),  # bool is not a number
        ("sampler: random\n", "sampler"),  # not one of the Literal values
        ("frames: 8\n", "frames"),  # not a list
        ("frames: [8, x]\n", "frames"),
        ("inner: 5\n", "inner"),
    ],
)
def test_wrong_type_names_key_and_file(tmp_path, text, key):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_params(p, schema=Demo)
    assert f"'{key}'" in str(e.value) and str(p) in str(e.value)


def test_int_accepted_for_float_and_none_for_optional(tmp_path):
    cfg = load_params(_write(tmp_path, "lr: 1\npath: null\n"), schema=Demo)
    assert isinstance(cfg.lr, float) and cfg.lr == 1.0 and cfg.path is None


def test_exponent_floats_without_a_dot_are_floats_in_files_and_overrides(tmp_path):
    """PyYAML alone reads ``3e-5`` as a string (YAML 1.1); a user writing ``lr: 3e-5`` or ``--set lr=3e-5`` means
    the float. Strings, ints and dates keep their types; an exponent on an int field is still an error."""
    assert yaml_load("3e-5") == 3e-5 and yaml_load("-2E+3") == -2000.0 and yaml_load("[1e-3, 2]") == [1e-3, 2]
    assert yaml_load("1e") == "1e" and yaml_load("'3e-5'") == "3e-5" and yaml_load("12") == 12
    cfg = load_params(_write(tmp_path, "lr: 3e-5\n"), schema=Demo)
    assert cfg.lr == 3e-5
    assert load_params(_write(tmp_path, "lr: 0.5\n", "04_demo.yaml"), overrides=["lr=1e-5"], schema=Demo).lr == 1e-5
    with pytest.raises(ConfigError, match="'seed'"):
        load_params(_write(tmp_path, "seed: 1e3\n", "05_demo.yaml"), schema=Demo)


def test_post_init_rejection_keeps_reason(tmp_path):
    with pytest.raises(ConfigError, match="lr must be > 0"):
        load_params(_write(tmp_path, "lr: -1\n"), schema=Demo)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_params(_write(tmp_path, "- a\n- b\n"), schema=Demo)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_params(tmp_path / "nope.yaml", schema=Demo)
    with pytest.raises(ConfigError, match="no config dataclass registered"):
        load_params(_write(tmp_path, "seed: 1\n", "99_unregistered.yaml"))


def test_from_namespace_picks_fields():
    ns = {"seed": 5, "name": "x", "unrelated": object(), "__name__": "nb"}
    cfg = Demo.from_namespace(ns)
    assert cfg.seed == 5 and cfg.name == "x"
    assert cfg.to_dict()["inner"] == {"width": 64}
    assert "random seed" in Demo.field_help()["seed"]


def test_run_record_writes_run_json(tmp_path):
    cfg = Demo(seed=11)
    with RunRecord(tmp_path / "run", params=cfg, seed=cfg.seed) as rec:
        first = json.loads((tmp_path / "run" / "run.json").read_text())
        assert first["status"] == "running" and first["end_time"] is None
        rec["metrics"] = {"acc": 0.5}
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["status"] == "ok" and meta["seed"] == 11 and meta["params"]["seed"] == 11
    assert meta["metrics"] == {"acc": 0.5}
    assert meta["versions"]["torch"] and meta["versions"]["python"]
    assert meta["start_time"] <= meta["end_time"]
    assert "cuda" in meta["device"]
    assert "git_sha" in meta


def test_run_record_marks_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with RunRecord(tmp_path, params={"a": 1}):
            raise RuntimeError("boom")
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["status"].startswith("failed: RuntimeError: boom")


def test_resolve_path(monkeypatch, tmp_path):
    monkeypatch.setenv("SPATIAL_MLLM_ROOT", str(tmp_path))
    assert resolve_path("outputs/tiny") == tmp_path / "outputs" / "tiny"
    assert resolve_path("/abs/x") == resolve_path("/abs/x").absolute()
    assert resolve_path(None) is None
    monkeypatch.delenv("SPATIAL_MLLM_ROOT")
    monkeypatch.chdir(tmp_path)
    assert resolve_path("a") == tmp_path / "a"
