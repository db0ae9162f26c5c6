"""containerlab's environment expansion of a topology file, before YAML parsing.

As containerlab does it (envsubst, restricted, no replace): ``$VAR`` and ``${VAR}`` take the value
of a variable that is set; an unset variable is left as written; ``${VAR:-default}`` (and
``${VAR-default}``) give the default when the variable is unset (``:-``: or empty); ``$$`` is a
literal ``$`` (so ``exec: [sh -c 'echo $$HOME']`` reaches the node as ``echo $HOME``); names
starting with a digit are not variables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_TOKEN = re.compile(
    r"\$\$"
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def expand(text: str, environ: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        value = environ.get(name)
        op = match.group("op")
        if op is not None:
            if value is None or (op == ":-" and value == ""):
                return match.group("default")
            return value
        return whole if value is None else value

    return _TOKEN.sub(replace, text)
