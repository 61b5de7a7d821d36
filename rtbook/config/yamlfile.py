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
- collections may nest at most :data:`MAX_DEPTH` deep (the deepest file of the corpus, the official
  Envoy lds.template.yaml, nests 23; 200,000 ``[`` made libyaml's composer crash the process with
  a segmentation fault).

Both limits live in :mod:`rtbook.bounded`, which the sandbox shares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rtbook.bounded import MAX_ALIAS_NODES, MAX_DEPTH, check_yaml_shape
from rtbook.exceptions import InputError

__all__ = ["MAX_ALIAS_NODES", "MAX_DEPTH", "SafeLoader", "check_yaml_shape", "load_yaml"]

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
