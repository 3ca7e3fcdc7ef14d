"""Debian's chromium for the console tests, installed when missing: Playwright for Python drives
it through its bundled driver (`executable_path`), so no browser is downloaded. A Chinese font
(WenQuanYi Micro Hei) comes with it: the console is zh-CN first, and a bare Debian has none."""

from __future__ import annotations

import os
import shutil
import subprocess

from infra.process import InfraError

NAMES = ("chromium", "chromium-browser")


FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
PACKAGES = ("chromium", "fonts-wqy-microhei")


def ensure_chromium() -> str:
    """The path of the system chromium; `apt-get install chromium` when missing and we may."""
    for name in NAMES:
        found = shutil.which(name)
        if found and os.path.exists(FONT):
            return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise InfraError(
            "chromium or its Chinese font not found: run "
            "`sudo apt-get install -y chromium fonts-wqy-microhei` (Debian)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise InfraError(f"`{' '.join(cmd)}` failed: {result.stderr[-1500:]}")
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise InfraError("chromium is still missing after apt-get install")
