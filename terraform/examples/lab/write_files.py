"""Write the files of a Terraform output into a directory, without jq.

usage: terraform output -json files | python3 write_files.py DIR

The output is a map of relative path => {"content": ..., "mode": "0644"} (the lab example's
``files``). Paths must stay inside DIR; a file already there is replaced.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def write(files: dict[str, dict[str, str]], directory: Path) -> list[Path]:
    root = directory.resolve()
    written = []
    for relative, entry in sorted(files.items()):
        path = (root / relative).resolve()
        if root not in path.parents:
            raise ValueError(f"{relative!r} is not inside {root}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(entry["content"])
        path.chmod(int(entry.get("mode", "0644"), 8))
        written.append(path)
    return written


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    files = json.load(sys.stdin)
    written = write(files, Path(sys.argv[1]))
    print(f"wrote {len(written)} files into {Path(sys.argv[1]).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
