"""Debian's Prometheus tools for the tests, found or fetched, never installed system-wide.

`debian_tool("promtool")` answers the binary on PATH if there is one; else the one extracted
from Debian's package into `<repo>/.retrainer/tools/<package>/` (`apt-get download` into that
cache, then `dpkg-deb -x`: no root, no dpkg database touched); a first use fetches it (once for
all test processes: a file lock). Only when that is impossible (no apt, no network, no such
package) does the test skip, with what failed in the reason and on stderr.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".retrainer" / "tools"
# binary -> the Debian package that ships it (as /usr/bin/<binary>)
PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
}


class ToolUnavailable(RuntimeError):
    pass


def _run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _download(package: str, into: Path) -> Path:
    """`apt-get download` the package's .deb into `into` (after `apt-get update` if apt's
    lists do not know it yet); its path."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise ToolUnavailable("apt-get / dpkg-deb not found (not a Debian-based system)")
    got = _run(["apt-get", "download", "-q", package], into)
    if got.returncode != 0:
        update = _run(["apt-get", "update", "-qq"], into)
        got = _run(["apt-get", "download", "-q", package], into)
        if got.returncode != 0:
            raise ToolUnavailable(
                f"apt-get download {package} failed: {got.stderr.strip()[-500:]}"
                + (
                    f" (apt-get update: {update.stderr.strip()[-300:]})"
                    if update.returncode
                    else ""
                )
            )
    debs = sorted(into.glob(f"{package}_*.deb"))
    if not debs:
        raise ToolUnavailable(f"apt-get download {package} left no .deb in {into}")
    return debs[-1]


def fetch(package: str, cache: Path = CACHE) -> Path:
    """The package's files extracted under `cache/<package>/` (fetched on first use)."""
    tree = cache / package
    if (tree / "usr" / "bin").is_dir():
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one fetch, however many test processes ask
        if (tree / "usr" / "bin").is_dir():
            return tree
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            work = Path(tmp)
            deb = _download(package, work)
            extracted = work / "tree"
            out = _run(["dpkg-deb", "-x", str(deb), str(extracted)], work)
            if out.returncode != 0:
                raise ToolUnavailable(f"dpkg-deb -x {deb.name} failed: {out.stderr.strip()}")
            extracted.rename(tree)  # whole, or not at all
    return tree


# Debian's Alertmanager reads its default templates from /usr/share/prometheus/alertmanager/
# (a path built into the binary): a fetched one runs in its own mount namespace where the
# package's usr/share is laid over /usr/share (read-only overlay; nothing changes outside it).
# `exec` keeps one process: signals to the Popen reach Alertmanager itself.
_OVERLAY = 'mount -t overlay overlay -o "lowerdir=$0/usr/share:/usr/share" /usr/share && exec "$@"'


def debian_command(name: str, cache: Path = CACHE) -> list[str]:
    """The argv prefix that runs `name` as its package installed would; skips loudly when
    impossible (see debian_tool)."""
    binary = debian_tool(name, cache)
    if name != "prometheus-alertmanager" or not binary.startswith(str(cache)):
        return [binary]
    tree = str(Path(binary).parents[2])
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _OVERLAY, tree]
    probe = subprocess.run(
        [*argv, "test", "-f", "/usr/share/prometheus/alertmanager/default.tmpl"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        reason = (
            "NOT TESTED: Debian's Alertmanager (fetched into "
            f"{tree}) needs its templates at /usr/share/prometheus/alertmanager, and laying them "
            f"there in a private mount namespace failed: {probe.stderr.strip()[-300:]}. "
            "Install it (apt-get install prometheus-alertmanager) to run this test."
        )
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    return [*argv, binary]


def debian_tool(name: str, cache: Path = CACHE) -> str:
    """The path of `name` (promtool, amtool, prometheus, prometheus-alertmanager); skips the
    calling test, loudly, only when it can be neither found nor fetched."""
    found = shutil.which(name)
    if found:
        return found
    package = PACKAGES[name]
    try:
        binary = fetch(package, cache) / "usr" / "bin" / name
        if not binary.is_file():
            raise ToolUnavailable(f"Debian's {package} package has no usr/bin/{name}")
        return str(binary)
    except (ToolUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        reason = (
            f"NOT TESTED: {name} is not on PATH and fetching Debian's {package} package into "
            f"{cache} failed: {exc}. Install it (apt-get install {package}) to run this test."
        )
        print(reason, file=sys.stderr)
        pytest.skip(reason)
