"""Configuration files (YAML, format 1) → the installation they describe, checked against the published schema.

A configuration is a set of files: YAML files (``*.yaml`` / ``*.yml``) each holding ``turnout: 1`` and any of
the sections ``environments``, ``workloads``, ``cohorts``, ``flags``, and the CSV files cohorts name for their
member lists. Every problem is reported with the file, the line and the field (``flags.yaml:12:
flags[0].environments.production.percentage: 150 is greater than the maximum of 100``); unknown keys, duplicate
keys in a mapping and an object defined twice are errors, never ignored. The JSON Schema is
``actions/config/schema.json`` (served at ``/api/v1/config/schema``).
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from common.errors import ValidationFailed

SCHEMA_PATH = Path(__file__).with_name("schema.json")
FORMAT = 1
SECTIONS = ("environments", "workloads", "cohorts", "flags")
MAX_FILES = 2000
MAX_BYTES = 20 * 1024 * 1024
MAX_REPORTED = 50
YAML_SUFFIXES = (".yaml", ".yml")


@cache
def schema() -> dict[str, Any]:
    """The published JSON Schema of one configuration file."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field or '(file)'}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}


class ConfigInvalid(ValidationFailed):
    """Files that do not describe an installation: every problem named by file, line and field."""

    code = "config_invalid"

    def __init__(self, problems: list[Problem]):
        shown = problems[:MAX_REPORTED]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{shown[0]}{more}; nothing was changed",
                         fields={f"{p.file}:{p.line}:{p.field}": [p.message] for p in shown},
                         problems=[p.as_json() for p in shown])
        self.problems = problems


@dataclass(frozen=True)
class Where:
    file: str
    line: int


@dataclass
class Desired:
    """What the files say the installation holds, by kind and key (fields as the file gives them)."""

    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    workloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    cohorts: dict[str, dict[str, Any]] = field(default_factory=dict)
    flags: dict[str, dict[str, Any]] = field(default_factory=dict)
    where: dict[tuple[str, str], Where] = field(default_factory=dict)
    nodes: dict[tuple[str, str], tuple[yaml.Node, str]] = field(default_factory=dict)  # (object's node, "flags[0]")

    def section(self, name: str) -> dict[str, dict[str, Any]]:
        section: dict[str, dict[str, Any]] = getattr(self, name)
        return section

    def located(self, kind: str, key: str) -> Where:
        return self.where.get((kind, key), Where("", 0))

    def locate(self, kind: str, key: str, *path: str | int) -> tuple[Where, str]:
        """Where a field inside an object is written — the file, the line of the deepest part of ``path``
        the file holds (a key's own line) — and the field's path in the file (``flags[0].environments.
        production.plan[1].include_cohorts``)."""
        where = self.located(kind, key)
        found = self.nodes.get((kind, key))
        if found is None:
            return where, _field_name([f"{kind}s", *path])
        node, prefix = found
        return Where(where.file, _line_along(node, list(path))), _field_name([prefix, *path])


# --- YAML with line numbers ------------------------------------------------------------------------


def _field_name(path: Iterator[Any] | list[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _node_at(node: yaml.Node, path: list[Any]) -> yaml.Node:
    """The YAML node at a JSON path (as deep as it goes)."""
    for part in path:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None)
            if found is None:
                return node
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _line_along(node: yaml.Node, path: list[Any]) -> int:
    """The line of the deepest part of ``path`` found under ``node`` (for a mapping's key: the key's line)."""
    line = _line(node)
    for part in path:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)),
                        None)
            if pair is None:
                return line
            line, node = _line(pair[0]), pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = _line(node)
        else:
            return line
    return line


def _key_node(node: yaml.Node, name: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, _value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == name:
                return key
    return None


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _duplicates(node: yaml.Node, path: list[Any], file: str) -> Iterator[Problem]:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
            if name in seen:
                yield Problem(file, _line(key), _field_name([*path, name]),
                              "duplicate key (a mapping names a key once)")
            seen.add(name)
            yield from _duplicates(value, [*path, name], file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicates(item, [*path, index], file)


def _schema_problems(data: Any, root: yaml.Node, file: str) -> Iterator[Problem]:
    errors = sorted(_validator().iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    for error in errors:
        yield from _explain(error, root, file)


def _explain(error: SchemaError, root: yaml.Node, file: str) -> Iterator[Problem]:
    path = list(error.absolute_path)
    node = _node_at(root, path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = set(error.schema.get("properties", {})) if isinstance(error.schema, Mapping) else set()
        takes = ", ".join(sorted(allowed))
        for name in sorted(set(error.instance) - allowed):
            key = _key_node(node, str(name))
            yield Problem(file, _line(key or node), _field_name([*path, name]),
                          f"unknown key; this takes {takes}" if takes else "unknown key")
        return
    if error.validator == "oneOf" and error.context:
        # A value that is neither of the forms: say what the first form wanted.
        best = min(error.context, key=lambda e: len(list(e.absolute_path)))
        yield Problem(file, _line(node), _field_name(path), best.message)
        return
    message = error.message
    if error.validator == "pattern":
        message = f"{error.instance!r} is not a valid key: {schema()['$defs']['key']['description']}"
    yield Problem(file, _line(node), _field_name(path), message)


def _load_yaml(file: str, text: str) -> tuple[Any, yaml.Node | None, list[Problem]]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None, [Problem(file, 1, "", "the file is empty; it needs at least `turnout: 1`")]
        problems = list(_duplicates(node, [], file))
        data = loader.construct_document(node)
        return data, node, problems
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        return None, None, [Problem(file, (mark.line + 1) if mark else 1, "", f"not valid YAML: {exc.problem}")]
    except yaml.YAMLError as exc:
        return None, None, [Problem(file, 1, "", f"not valid YAML: {exc}")]
    finally:
        loader.dispose()


# --- the configuration -------------------------------------------------------------------------------


def clean_path(path: Any) -> str:
    """A file's path inside the configuration: relative, forward slashes, never leaving it."""
    if not isinstance(path, str) or not path or len(path) > 500 or "\x00" in path or "\\" in path:
        raise ValidationFailed.field("files", f"{str(path)[:80]!r} is not a relative file path")
    normal = posixpath.normpath(path)
    if normal.startswith(("/", "../")) or normal in {".", ".."}:
        raise ValidationFailed.field("files", f"{path!r} must be a path inside the configuration")
    return normal


def check_files(files: Any) -> dict[str, str]:
    """The request's ``files`` (path → text), their paths and sizes checked."""
    if not isinstance(files, Mapping) or not files:
        raise ValidationFailed.field("files", "must be an object of file path → file text, with at least one file")
    if len(files) > MAX_FILES:
        raise ValidationFailed.field("files", f"at most {MAX_FILES} files")
    out: dict[str, str] = {}
    total = 0
    for path, text in files.items():
        if not isinstance(text, str):
            raise ValidationFailed.field(f"files.{path}", "must be the file's text")
        total += len(text)
        out[clean_path(path)] = text
    if total > MAX_BYTES:
        raise ValidationFailed.field("files", f"at most {MAX_BYTES // (1024 * 1024)} MiB in all")
    if not any(p.endswith(YAML_SUFFIXES) for p in out):
        raise ValidationFailed.field("files", "no YAML file (*.yaml, *.yml) among the files")
    return out


def _members(files: Mapping[str, str], base: str, ref: str, where: Where, field_name: str,
             problems: list[Problem]) -> list[str] | None:
    path = posixpath.normpath(posixpath.join(posixpath.dirname(base), ref))
    if path.startswith("../") or path.startswith("/"):
        problems.append(Problem(where.file, where.line, field_name, f"{ref!r} leaves the configuration"))
        return None
    if path not in files:
        problems.append(Problem(where.file, where.line, field_name, f"names {path!r}, which is not among the files"))
        return None
    subjects: list[str] = []
    seen: set[str] = set()
    reader = csv.reader(io.StringIO(files[path], newline=""))
    try:
        for row in reader:
            cells = [c.strip() for c in row if c.strip()]
            if not cells:
                continue
            if reader.line_num == 1 and cells == ["subject"]:
                continue
            if len(cells) > 1:
                problems.append(Problem(path, reader.line_num, field_name, "expected one column (the subject key)"))
                continue
            if len(cells[0]) > 255:
                problems.append(Problem(path, reader.line_num, field_name, "a subject key is at most 255 characters"))
                continue
            if cells[0] in seen:
                problems.append(Problem(path, reader.line_num, field_name, f"subject {cells[0]!r} is listed twice"))
                continue
            seen.add(cells[0])
            subjects.append(cells[0])
    except csv.Error as exc:
        problems.append(Problem(path, reader.line_num, field_name, f"not valid CSV: {exc}"))
    return sorted(subjects)


def read_configuration(files: Mapping[str, str]) -> Desired:
    """Every YAML file parsed, checked against the schema and merged; raises ``ConfigInvalid`` naming every
    problem (file, line, field). Cross-references (a flag's workload, cohorts, environments) are checked by
    the plan, which knows the installation."""
    desired = Desired()
    problems: list[Problem] = []
    for path in sorted(p for p in files if p.endswith(YAML_SUFFIXES)):
        data, root, found = _load_yaml(path, files[path])
        problems += found
        if root is None or found:
            continue
        schema_problems = list(_schema_problems(data, root, path))
        problems += schema_problems
        if schema_problems:
            continue
        for section in SECTIONS:
            for index, item in enumerate(data.get(section) or []):
                key = item["key"]
                item_node = _node_at(root, [section, index])
                line = _line(item_node)
                where = Where(path, line)
                kind = section[:-1]
                if key in desired.section(section):
                    first = desired.located(kind, key)
                    problems.append(Problem(path, line, f"{section}[{index}].key",
                                            f"{kind} '{key}' is already defined at {first.file}:{first.line}"))
                    continue
                item = dict(item)
                if section == "cohorts" and "members" in item:
                    refs = item.pop("members")
                    item["members"] = {kind_: _members(files, path, ref, where, f"{section}[{index}].members.{kind_}",
                                                       problems) or []
                                       for kind_, ref in sorted(refs.items())}
                desired.section(section)[key] = item
                desired.where[(kind, key)] = where
                desired.nodes[(kind, key)] = (item_node, f"{section}[{index}]")
    if problems:
        raise ConfigInvalid(problems)
    return desired
