"""``meshgate edge run`` without BGP loads neither the CLI's HTTP client (urllib.request, with
http.client and email: about 1 MB) nor the ExaBGP speaker: an idle edge's memory is measured in
bench/ (``python -m bench memory``)."""

from __future__ import annotations

import json
import subprocess
import sys

NOT_NEEDED = ("urllib.request", "http.client", "email.parser", "bgp.speaker", "bgp.process")


def loaded(imports: str) -> list[str]:
    code = f"import json, sys, {imports}; print(json.dumps(sorted(m for m in {NOT_NEEDED!r} if m in sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    result: list[str] = json.loads(done.stdout)
    return result


def test_the_edge_command_and_process_leave_out_the_api_client_and_the_bgp_speaker() -> None:
    assert loaded("meshgate.cli.main, meshgate.cli.edge_commands, edge.process") == []
