"""The ``mesh-decoder`` console script: :func:`mesh_decoder.cli.main`, with Ctrl-C while it starts
(importing torch takes seconds) ending as quietly as later, not in a traceback."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return run()
