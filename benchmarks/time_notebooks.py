"""How long each workshop notebook takes, run top to bottom in a fresh kernel.

    python benchmarks/time_notebooks.py              # all five, full size
    python benchmarks/time_notebooks.py 03 04        # some of them

Each notebook runs with nbclient in a temporary folder (the files it writes go there), at
its full workshop size (``MEDVERSE_WORKSHOP_QUICK`` unset), as a participant's Run All
does. The README's workshop table quotes these times with the machine they ran on.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def time_notebook(path: Path) -> float:
    """Seconds to run ``path`` top to bottom (kernel start included), failing on any error."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": tmp}}).execute()
        return time.perf_counter() - start


def main(argv: list[str]) -> None:
    os.environ.pop("MEDVERSE_WORKSHOP_QUICK", None)
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if argv:
        paths = [p for p in paths if p.name[:2] in argv]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for path in paths:
        seconds = time_notebook(path)
        print(f"| {path.stem} | {seconds:.0f} s |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
