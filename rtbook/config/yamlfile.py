"""The one YAML loader: libyaml's C parser when PyYAML has it, and errors as :class:`InputError`.

Every YAML file rtbook reads (compose files, kong.yml, Envoy's LDS/CDS/bootstrap, a parameters
file) goes through :func:`load_yaml`, so a syntax error reads the same everywhere: the file, the
line and column, and libyaml's or PyYAML's description of the problem, on one line.

``yaml.CSafeLoader`` is libyaml's parser under PyYAML's own safe constructor and resolver (the
Python classes), so the values are the same as ``yaml.SafeLoader``'s, YAML 1.1 quirks included
(``on``/``yes`` are booleans, ``0o14`` is a string, ``<<`` merges), and custom tags register the
same way; it only parses several times faster. tests/unit/test_yamlfile.py compares the two on the
whole corpus.

Before a document is constructed, its event stream is walked once (no recursion, no objects built)
and refused when it is hostile:

- aliases may add at most :data:`MAX_ALIAS_NODES` nodes to the document when expanded (the
  "billion laughs" document adds 10**9 with a few hundred bytes; a compose file's ``<<: *defaults``
  adds a few hundred). PyYAML builds one object per anchor, but every consumer that walks the
  result as a tree (interpolation, merging, JSON) expands it;
- collections may nest at most :data:`MAX_DEPTH` deep (the deepest real gateway file nests about
  15; a 4 MiB run of ``[`` would otherwise exhaust the stack while it is built).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rtbook.exceptions import InputError

__all__ = ["MAX_ALIAS_NODES", "MAX_DEPTH", "SafeLoader", "check_yaml_shape", "load_yaml"]

MAX_ALIAS_NODES = 100_000
MAX_DEPTH = 100

# libyaml is optional in PyYAML (a wheel without it, or a source build without the headers).
SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str, source: str | Path, *, loader: type[Any] | None = None) -> Any:
    """Parse one YAML document; ``loader`` is :data:`SafeLoader` or a subclass of it (custom tags).

    Raises:
        InputError: the text is not YAML, has an unknown tag or nests too deeply; the message
            starts with ``source`` and gives the line and column when the parser knows them.
    """
    try:
        check_yaml_shape(text, source)
        return yaml.load(text, Loader=loader or SafeLoader)  # a SafeLoader (subclass): no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise InputError(f"{source}: YAML syntax error{where}: {problem}") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{source}: not valid YAML: {first}") from None
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"{source}: cannot parse the YAML: {type(exc).__name__}") from None


def check_yaml_shape(text: str, source: str | Path) -> None:
    """Refuse a document whose aliases expand to more than :data:`MAX_ALIAS_NODES` nodes or that nests too deeply.

    One pass over the parser's events, counting the expanded size of every anchored node (a
    collection's size is one plus its children's, an alias's is its anchor's); memory is one
    number per anchor and per open collection.

    Raises:
        InputError: naming the source and the limit (a syntax error is left to the parse proper).
    """
    sizes: dict[str, int] = {}
    # One [anchor, expanded size] per open collection.
    open_nodes: list[list[Any]] = []
    added = 0
    parser = SafeLoader(text)
    try:
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                if len(open_nodes) >= MAX_DEPTH:
                    raise InputError(
                        f"{source}: nested more than {MAX_DEPTH} levels deep{_at_line(event)}; "
                        "no compose, kong or Envoy file nests like this"
                    )
                open_nodes.append([event.anchor, 1])
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                anchor, size = open_nodes.pop()
            elif isinstance(event, yaml.ScalarEvent):
                anchor, size = event.anchor, 1
            elif isinstance(event, yaml.AliasEvent):
                anchor, size = None, sizes.get(event.anchor or "", 1)
                added += size
                if added > MAX_ALIAS_NODES:
                    raise InputError(
                        f"{source}: YAML aliases expand to more than {MAX_ALIAS_NODES} nodes (alias "
                        f"*{event.anchor}{_at_line(event)}); an alias bomb, not a configuration file"
                    )
            else:
                continue
            if anchor:
                sizes[anchor] = size
            if open_nodes:
                open_nodes[-1][1] += size
    except yaml.YAMLError:
        # A syntax error: the real parse stops at the same place and words it (line, column);
        # everything before it was within the limits.
        return
    finally:
        parser.dispose()


def _at_line(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f" at line {mark.line + 1}" if mark is not None else ""
