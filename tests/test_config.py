import dataclasses
import os

import pytest

from metaopt.config import ConfigError, FieldError, load_config
from metaopt.evaluate.config import EvalConfig
from metaopt.io import atomic_write_json
from metaopt.meta.config import MetaConfig
from search.config import SearchConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Inner:
    width: int
    rate: float = 1e-3


@dataclasses.dataclass
class Outer:
    name: str
    inner: Inner
    tasks: list[str] = dataclasses.field(default_factory=list)


def test_load_nested(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ninner:\n  width: 3\n  rate: 1e-2\ntasks: [a, b]\n")
    cfg = load_config(p, Outer)
    assert cfg == Outer("x", Inner(3, 0.01), ["a", "b"])


def test_unknown_key_names_file_line_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ninner:\n  width: 3\n  widht: 4\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, Outer)
    msg = str(e.value)
    assert f"{p}:4" in msg and "inner.widht" in msg and "width" in msg


def test_wrong_type_and_missing(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ninner:\n  width: three\n")
    with pytest.raises(ConfigError, match=r":3:10: inner.width: expected an integer"):
        load_config(p, Outer)
    p.write_text("inner:\n  width: 3\n")
    with pytest.raises(ConfigError, match="name: required key is missing"):
        load_config(p, Outer)


@dataclasses.dataclass
class Checked:
    names: list[str]
    limit: int = 1

    def __post_init__(self):
        if self.limit < 1:
            raise FieldError("limit", f"must be >= 1, got {self.limit}")
        for i, n in enumerate(self.names):
            if n != n.lower():
                raise FieldError(("names", i), f"names are lower case, got {n!r}")


def test_field_errors_point_at_the_key_or_item(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("names:\n  - a\n  - B\nlimit: 1\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3:5: names\[1\]: names are lower case, got 'B'"):
        load_config(p, Checked)
    p.write_text("names: [a, b]\n\nlimit: 0\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3:8: limit: must be >= 1, got 0"):
        load_config(p, Checked)
    with pytest.raises(ConfigError, match=r"c.yaml: limit: must be >= 1, got -2 \(set on the command line\)"):
        load_config(p, Checked, {"limit": -2})


def test_duplicate_key_and_bad_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("names: [a]\nlimit: 2\nlimit: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3:1: invalid YAML: duplicate key 'limit'"):
        load_config(p, Checked)
    p.write_text("names: [a\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2:1: invalid YAML"):
        load_config(p, Checked)


def _edit(tmp_path, shipped: str, old: str, new: str) -> str:
    """A copy of a shipped config with one edit; returns its path."""
    text = open(os.path.join(ROOT, "configs", shipped)).read()
    assert text.count(old) == 1, old
    path = tmp_path / os.path.basename(shipped)
    path.write_text(text.replace(old, new))
    return str(path)


def _line_col(path: str, line_text: str, needle: str) -> tuple[int, int]:
    """Line and column of ``needle`` on the line that contains ``line_text``."""
    for i, line in enumerate(open(path).read().splitlines(), 1):
        if line_text in line:
            return i, line.index(needle) + 1
    raise AssertionError(line_text)


# Each value that names something is checked at load, at the value's own line and column, with close names.
NAME_CASES = [
    (SearchConfig, "search/full.yaml", "  suite: train", "  suite: trian", "trian", "tasks.suite",
     "unknown suite 'trian' (did you mean train?)"),
    (SearchConfig, "search/smoke.yaml", "init: minimal", "init: adamww", "adamww", "init",
     "unknown initial program 'adamww' (did you mean adamw"),
    (SearchConfig, "search/smoke.yaml", "names: [smoke_quadratic]", "names: [smoke_quadratic, smoke_quadratc]",
     "smoke_quadratc", "tasks.names[1]", "unknown task 'smoke_quadratc' (did you mean smoke_quadratic"),
    (SearchConfig, "search/full.yaml", "  top_k: 2", "  top_k: 2\n  baselines: [sgd, lionn]", "lionn",
     "heldout.baselines[1]", "unknown optimizer spec 'lionn'; did you mean: lion"),
    (MetaConfig, "meta/smoke.yaml", "architecture: mlp", "architecture: mpl", "mpl", "lopt.architecture",
     "unknown learned-optimizer architecture 'mpl' (did you mean mlp?)"),
    (MetaConfig, "meta/smoke.yaml", "{hidden_size: 8}", "{hiden_size: 8}", "hiden_size", "lopt.kwargs.hiden_size",
     "architecture mlp takes no argument 'hiden_size' (did you mean hidden_size"),
    (MetaConfig, "meta/hyper.yaml", "lstm_size: 16", "lstm_size: 1.5", "1.5", "lopt.kwargs.lstm_size",
     "expected an integer, got 1.5"),
    (MetaConfig, "meta/quick.yaml", "families: [quadratic, regression, digits_mlp, rosenbrock]",
     "families: [quadratic, regresion]", "regresion",
     "families[1]", "unknown task family 'regresion' (did you mean regression?)"),
    (EvalConfig, "eval/smoke.yaml", "[adamw, lion, sgd]", "[adamw, lion, 'sgd(momentum=0.9)']", "'sgd(", "optimizers[2]",
     "unknown hyperparameter(s) momentum"),
    (EvalConfig, "eval/smoke.yaml", "reference: adamw", "reference: adamx", "adamx", "reference",
     "unknown optimizer spec 'adamx'"),
    (EvalConfig, "eval/smoke.yaml", "tasks: [smoke_quadratic,", "tasks: [smoke_quadratik,", "smoke_quadratik",
     "tasks[0]", "unknown task 'smoke_quadratik'"),
    # Suites have roles: fitness never reads validation or held-out tasks, the funnel never held-out ones.
    (SearchConfig, "search/full.yaml", "  suite: train", "  suite: heldout", "heldout", "tasks.suite",
     "suite 'heldout' is not allowed here"),
    (SearchConfig, "search/smoke.yaml", "names: [smoke_quadratic]", "names: [smoke_quadratic, digits_cnn]",
     "digits_cnn", "tasks.names[1]", "task 'digits_cnn' belongs to the 'validation' suite"),
    (SearchConfig, "search/quick.yaml", "  suite: validation", "  suite: heldout-quick", "heldout-quick",
     "funnel.suite", "suite 'heldout-quick' is not allowed here"),
]


@pytest.mark.parametrize("schema, shipped, old, new, at, key, fragment", NAME_CASES)
def test_names_are_checked_at_load(tmp_path, schema, shipped, old, new, at, key, fragment):
    path = _edit(tmp_path, shipped, old, new)
    with pytest.raises(ConfigError) as e:
        load_config(path, schema)
    line, col = _line_col(path, new.splitlines()[-1], at)
    assert (e.value.file, e.value.line, e.value.col, e.value.key) == (path, line, col, key), str(e.value)
    assert fragment in str(e.value) and str(e.value).startswith(f"{path}:{line}:{col}: {key}: ")


def test_post_init_error_is_reported_at_the_offending_key(tmp_path):
    path = _edit(tmp_path, "meta/smoke.yaml", "reset_every: 5", "reset_every: 0")
    with pytest.raises(ConfigError) as e:
        load_config(path, MetaConfig)
    line, col = _line_col(path, "reset_every: 0", "0")
    assert line == 21   # the key's own line, not the enclosing `estimator:` mapping's (17)
    assert str(e.value) == f"{path}:{line}:{col}: estimator.reset_every: must be >= 1, got 0"


def test_every_shipped_config_loads():
    schemas = {"search": SearchConfig, "eval": EvalConfig, "meta": MetaConfig}
    for kind, schema in schemas.items():
        folder = os.path.join(ROOT, "configs", kind)
        for name in sorted(os.listdir(folder)):
            assert isinstance(load_config(os.path.join(folder, name), schema), schema)


def test_atomic_write_json(tmp_path):
    atomic_write_json(tmp_path / "a" / "x.json", {"b": 1})
    assert (tmp_path / "a" / "x.json").read_text().strip() == '{\n  "b": 1\n}'
    assert [f.name for f in (tmp_path / "a").iterdir()] == ["x.json"]
