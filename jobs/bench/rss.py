"""Resident memory of this process (Linux /proc), and subprocess probes that report in JSON.

Peak RSS is VmHWM. Writing "5" to /proc/self/clear_refs resets it to the current RSS, so one
process can measure the peak of each step in turn; where the kernel refuses, the peak covers
the process's whole life so far, and `reset_peak` says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

STATUS = Path("/proc/self/status")


def status_bytes(field: str) -> int:
    """A /proc/self/status field in bytes ("VmHWM", "VmRSS")."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{STATUS} has no {field} (not Linux?)")


def rss() -> int:
    return status_bytes("VmRSS")


def peak_rss() -> int:
    return status_bytes("VmHWM")


def reset_peak() -> bool:
    """Reset the peak to the current RSS; False when the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run_probe(module: str, args: list[str], timeout: float | None = None) -> dict[str, Any]:
    """Run `python -m module args` in a fresh process; its last stdout line is a JSON object."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-5:]
        raise RuntimeError(f"{module} {' '.join(args)} failed: {' | '.join(tail)}")
    return json.loads(done.stdout.strip().splitlines()[-1])
