"""Time how fast recall_dask starts: ``import recall_dask`` and ``recall-dask --help``, each the
median of fresh interpreters, and write the table into
docs/benchmarks/performance.md (issue 16: both under 0.5 s).
Wall time waits for a core on a busy machine; CPU time (user + system) does not.

    python benchmarks/startup.py [--repeats 5] [--no-readme]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _measure import replace_readme_section

ROOT = Path(__file__).resolve().parents[1]
#: The manual's page that holds this script's tables, between their markers.
PAGE = ROOT / "docs" / "benchmarks" / "performance.md"
COMMANDS = {
    "`import recall_dask`": [sys.executable, "-c", "import recall_dask"],
    "`recall-dask --help`": [sys.executable, "-m", "recall_dask", "--help"],
    "`recall-dask run --help`": [sys.executable, "-m", "recall_dask", "run", "--help"],
    "bare interpreter": [sys.executable, "-c", "pass"],
}


def seconds(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh process running ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def table(repeats: int) -> str:
    lines = [
        f"| command | wall seconds | CPU seconds (medians of {repeats} fresh processes) |",
        "|---|---|---|",
    ]
    for name, command in COMMANDS.items():
        seconds(command)  # warm the file cache and Python's bytecode cache
        wall, cpu = zip(*(seconds(command) for _ in range(repeats)), strict=True)
        lines.append(f"| {name} | {statistics.median(wall):.3f} | {statistics.median(cpu):.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-readme", action="store_true", help="print the table only")
    args = parser.parse_args()
    text = table(args.repeats)
    print(text, end="")
    if not args.no_readme:
        replace_readme_section(PAGE, "startup-benchmark", text)


if __name__ == "__main__":
    main()
