"""YAML configs validated into typed dataclasses.

``load_config(path, Schema)`` reads a YAML mapping and builds ``Schema`` (a dataclass, possibly nested).
Every problem raises :class:`ConfigError` naming the file, the line and column, the dotted key, and what
was expected: unknown or duplicate keys, missing required keys, values of the wrong type, and whatever a
schema's ``__post_init__`` rejects. A schema reports a bad field by raising :class:`FieldError` with that
field's name (or a path into its value, e.g. ``("names", 2)``); the loader turns it into the position of
that key or list item. :func:`check_name` and :func:`check_kwargs` are the checks schemas use for values
that name something in a registry (a task, a suite, an architecture and its arguments).
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import types
import typing
from typing import Any, Collection, Iterable, Literal, TypeVar, Union

import yaml

T = TypeVar("T")
Path = tuple[Union[str, int], ...]          # keys and list indices from the top of the config
Pos = tuple[int, int]                       # 1-based line and column


class ConfigError(ValueError):
    """``file:line:col: dotted.key: message``."""

    def __init__(self, file: str, line: int | None, key: str, message: str, col: int | None = None):
        where = file if line is None else f"{file}:{line}" if col is None else f"{file}:{line}:{col}"
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")
        self.file, self.line, self.col, self.key, self.message = file, line, col, key, message


class FieldError(ValueError):
    """Raised by a schema for one field (``path``: a field name, or a tuple of names and list indices
    into it); the loader reports it at that field's position. ``at="key"`` points at the key itself."""

    def __init__(self, path: str | int | Iterable[str | int], message: str, at: Literal["key", "value"] = "value"):
        self.path: Path = (path,) if isinstance(path, (str, int)) else tuple(path)
        super().__init__(f"{dotted(self.path)}: {message}" if self.path else message)
        self.message, self.at = message, at


def dotted(path: Path) -> str:
    """``("tasks", "names", 1)`` -> ``"tasks.names[1]"``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def close_names(name: Any, known: Iterable[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(str(name), list(known), n=n, cutoff=0.6)


def unknown(message: str, value: Any, known: Collection[str], hint: str = "") -> str:
    """``message`` plus close names and, for short registries, all of them (else ``hint``)."""
    close = close_names(value, known)
    if close:
        message += f" (did you mean {', '.join(close)}?)"
    if len(known) <= 20:
        return message + f"; expected one of: {', '.join(known)}"
    return message + (f"; {len(known)} known, {hint}" if hint else "")


def check_name(path: str | Iterable[str | int], value: Any, known: Collection[str], what: str,
               hint: str = "") -> None:
    """``FieldError`` at ``path`` unless ``value`` is one of ``known`` (see :func:`unknown`)."""
    if value not in known:
        raise FieldError(path, unknown(f"unknown {what} {value!r}", value, sorted(known), hint))


def at_least(path: str | Iterable[str | int], value: float | None, low: float) -> None:
    """``FieldError`` at ``path`` when ``value`` (None: unset, allowed) is below ``low``."""
    if value is not None and not value >= low:
        raise FieldError(path, f"must be >= {low:g}, got {value!r}")


def check_kwargs(path: str | Iterable[str | int], kwargs: dict[str, Any], target: Any, what: str) -> None:
    """``FieldError`` at ``path.NAME`` for a keyword ``target`` (a class or function) does not take, or a
    value that does not match the parameter's annotation (int, float, bool, str, lists)."""
    base = (path,) if isinstance(path, str) else tuple(path)
    params = {n: p for n, p in inspect.signature(target).parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    try:
        hints = typing.get_type_hints(target)
    except (NameError, TypeError):
        hints = {}
    for name, value in kwargs.items():
        if name not in params:
            raise FieldError(base + (name,), unknown(f"{what} takes no argument {name!r}", name, list(params)),
                             at="key")
        try:
            _convert(value, hints[name], base + (name,)) if name in hints else None
        except TypeError:
            pass    # an annotation the loader has no check for (e.g. jax.Array): the constructor decides


# --- YAML with positions --------------------------------------------------------------------------------


def _pos(mark) -> Pos:
    return mark.line + 1, mark.column + 1


class _Mapping(dict):
    """A YAML mapping that remembers where it, each key and each value start."""

    def __init__(self, data: dict, pos: Pos, key_pos: dict, value_pos: dict, flow: bool):
        super().__init__(data)
        self.pos, self.key_pos, self.value_pos, self.flow = pos, key_pos, value_pos, flow


class _Sequence(list):
    """A YAML sequence that remembers where it and each item start."""

    def __init__(self, data: list, pos: Pos, item_pos: list[Pos], flow: bool):
        super().__init__(data)
        self.pos, self.item_pos, self.flow = pos, item_pos, flow


class _LineLoader(yaml.SafeLoader):
    """Builds :class:`_Mapping` / :class:`_Sequence` so errors can point at keys and values."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)      # YAML merge keys (<<: *anchor)
    data, key_pos, value_pos = {}, {}, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError("while reading a mapping", node.start_mark,
                                                    "a key must be a plain value", key_node.start_mark) from None
        if key in data:
            raise yaml.constructor.ConstructorError("while reading a mapping", node.start_mark,
                                                    f"duplicate key {key!r}", key_node.start_mark)
        data[key] = loader.construct_object(value_node, deep=True)
        key_pos[key], value_pos[key] = _pos(key_node.start_mark), _pos(value_node.start_mark)
    return _Mapping(data, _pos(node.start_mark), key_pos, value_pos, bool(node.flow_style))


def _construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> _Sequence:
    items = [loader.construct_object(n, deep=True) for n in node.value]
    return _Sequence(items, _pos(node.start_mark), [_pos(n.start_mark) for n in node.value], bool(node.flow_style))


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _locate(data: Any, path: Path, at: str) -> Pos | None:
    """The position of ``path`` in the loaded YAML: the value's (or, for ``at="key"`` and for block
    collections, which start on the next line, the key's), else the nearest enclosing one known."""
    node, best = data, getattr(data, "pos", None)
    for i, step in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, _Mapping) and step in node:
            key, value = node.key_pos.get(step, best), node.value_pos.get(step, best)
            child = node[step]
            block = isinstance(child, (_Mapping, _Sequence)) and not child.flow
            best = key if (last and (at == "key" or block)) else value
            node = child
        elif isinstance(node, _Sequence) and isinstance(step, int) and 0 <= step < len(node):
            best, node = node.item_pos[step], node[step]
        else:
            break
    return best


# --- conversion -------------------------------------------------------------------------------------------


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, path: Path) -> Any:
    """``value`` checked against (and, for numbers, lists and nested dataclasses, converted to) ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return _plain(value)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except FieldError:
                if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                    raise     # a mapping for an optional section: its own error says which key is wrong
        raise FieldError(path, f"expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise FieldError(path, unknown(f"unexpected value {value!r}", value, [str(a) for a in args]))
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise FieldError(path, f"expected a mapping ({tp.__name__}), got {value!r}")
        return _build(value, tp, path)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise FieldError(path, f"expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_convert(v, inner, path + (i,)) for i, v in enumerate(value)]
        return tuple(items) if tuple in (origin, tp) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise FieldError(path, f"expected a mapping, got {value!r}")
        kt, vt = args if len(args) == 2 else (Any, Any)
        return {_convert(k, kt, path + (k,)): _convert(v, vt, path + (k,)) for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)   # YAML 1.1 reads 1e-3 (no dot) as a string
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(path, f"expected a number, got {value!r}")
        return float(value)
    if tp in (int, bool, str):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise FieldError(path, f"expected {_describe(tp)}, got {value!r}")
        return value
    raise TypeError(f"config schema field {dotted(path)} has a type the loader cannot check: {tp!r}")


def _plain(value: Any) -> Any:
    """``value`` with the loader's position-keeping collections turned into plain dicts and lists (an
    ``Any`` field, e.g. an architecture's kwargs, must not leak them: ``dataclasses.asdict`` cannot copy them)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _build(data: dict, schema: type[T], path: Path = ()) -> T:
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise FieldError(path + (key,), unknown("unknown key", key, sorted(fields)), at="key")
        kwargs[key] = _convert(value, hints[key], path + (key,))
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise FieldError(path + (name,), f"required key is missing (in {schema.__name__})")
    try:
        return schema(**kwargs)
    except FieldError as e:      # __post_init__ blamed one field: report it there
        raise FieldError(path + e.path, e.message, e.at) from e
    except (TypeError, ValueError, KeyError) as e:   # any other __post_init__ check: the mapping's position
        raise FieldError(path, str(e).strip("'\""), "key") from e


def load_config(path: str | os.PathLike, schema: type[T], overrides: dict | None = None) -> T:
    """Read ``path`` (YAML) into an instance of the dataclass ``schema``; ``overrides`` (top-level keys,
    e.g. from command-line flags) replace the file's values and are reported as such."""
    path = os.fspath(path)
    try:
        with open(path) as fh:
            data = yaml.load(fh, Loader=_LineLoader)
    except FileNotFoundError:
        raise ConfigError(path, None, "", "no such config file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line, col = _pos(mark) if mark else (None, None)
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        raise ConfigError(path, line, "", f"invalid YAML: {problem}" + (f" ({context})" if context else ""),
                          col) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, None, "", f"cannot read the config file: {e}") from None
    if data is None:
        data = _Mapping({}, (1, 1), {}, {}, False)
    if not isinstance(data, dict):
        raise ConfigError(path, 1, "", f"expected a mapping at top level, got {type(data).__name__}", 1)
    overrides = dict(overrides or {})
    if overrides:
        merged = _Mapping({**data, **overrides}, data.pos, dict(data.key_pos), dict(data.value_pos), False)
        for k in overrides:   # an override has no place in the file
            merged.key_pos.pop(k, None)
            merged.value_pos.pop(k, None)
        data = merged
    try:
        return _build(data, schema)
    except FieldError as e:
        key = dotted(e.path)
        if e.path and e.path[0] in overrides:
            raise ConfigError(path, None, key, f"{e.message} (set on the command line)") from None
        line, col = _locate(data, e.path, e.at) or (None, None)
        raise ConfigError(path, line, key, e.message, col) from None


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
