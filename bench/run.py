"""Entry point: ``.venv/bin/python bench/run.py [--quick] [--json out.json]``.

Run as a script, Python puts bench/ itself on the path; the benchmark is the package
``bench`` (its contenders are started with ``python -m bench.contenders...``), so the
repository root goes on the path first.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.cli import main

    main()


if __name__ == "__main__":
    _main()
