"""Reading the configuration file: YAML (a key given twice in one mapping refused), a
mapping of names, and errors told in one line."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from akoshad.errors import ConfigError
from akoshad.fastpath import CONFIG_MAX_BYTES, read_head


def names_only(data: Mapping[Any, Any], path: Path) -> None:
    """Refuse a top-level key that YAML did not read as a string (``30:``, ``on:``): no
    setting has such a name, and it must be told in one line like any unknown key."""
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(
                f"invalid configuration: {key}: unknown key (not a name; quote it if it "
                f"is meant as one) (from file {path})"
            )


class _UniqueKeys(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping: YAML would keep
    the last one silently (a second ``cloud_sync:`` dropping the bucket of the first)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # ``<<: *anchor``: construct_mapping merges it (keys after it win)
        key = loader.construct_object(key_node, deep=True)
        try:
            again = key in seen
        except TypeError:  # not hashable: construct_mapping says so
            continue
        if again:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_config_text(path: Path, named: bool) -> str | None:
    """The text of the configuration file ``path``; ``None`` when it is missing and not
    ``named`` (the default file); ``ConfigError`` in one line when a named file is missing
    or the file cannot be read."""
    try:
        data = read_head(path)
        if len(data) > CONFIG_MAX_BYTES:
            raise ConfigError(
                f"configuration file {path} is larger than {CONFIG_MAX_BYTES >> 20} MiB: not a "
                "configuration (a few KB of YAML; check --config or AKOSHAD_CONFIG)"
            )
        return data.decode("utf-8")
    except FileNotFoundError:
        if named:
            raise ConfigError(f"configuration file {path} does not exist") from None
        return None
    except IsADirectoryError:
        raise ConfigError(
            f"configuration file {path} is a directory: name the YAML file in it (e.g. config.yaml)"
        ) from None
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ConfigError(f"configuration file {path} cannot be read: {why}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc}") from None


def read_yaml(path: Path, named: bool) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (``{}`` when empty, or missing and not
    ``named``); ``ConfigError`` in one line otherwise."""
    text = read_config_text(path, named)
    if text is None:
        return {}
    try:
        data = yaml.load(text, Loader=_UniqueKeys)  # a SafeLoader: no object tags
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or ""
        if problem.endswith("is given twice"):
            raise ConfigError(
                f"configuration file {path}: {one_line(problem)}{where} "
                "(only one would be read: merge them)"
            ) from None
        raise ConfigError(
            f"configuration file {path} is not valid YAML{where}{_why(problem)}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must be a mapping of keys to values")
    return data


def _why(problem: str) -> str:
    """What YAML found wrong, with a hint for the usual mistake (a tab in the indentation).
    A quoted word longer than a character that is no token (``'<stream end>'``) is the
    file's own text (an alias, a tag: a secret written ``*x`` or ``!x``), never shown."""
    if not problem:
        return ""
    tab = " (a tab: YAML indents with spaces)" if "'\\t'" in problem else ""
    shown = re.sub(r"'([^']*)'", _token_or_hidden, problem)
    return f": {one_line(shown)}{tab}"


def _token_or_hidden(match: re.Match[str]) -> str:
    inner = match.group(1)
    token = len(inner) <= 1 or re.fullmatch(r"\\.|<[a-z ]+>", inner) is not None
    return match.group(0) if token else "'...'"


def one_line(text: str) -> str:
    """``text`` with every character that is not printable escaped (``\\n`` for a newline):
    a key or a value quoted in an error may hold one, and the error is one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
