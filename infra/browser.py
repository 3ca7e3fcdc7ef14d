"""Debian's chromium for the console tests, installed when missing: Playwright for Python drives
it through its bundled driver (`executable_path`), so no browser is downloaded. A Chinese font
(WenQuanYi Micro Hei) comes with it: the console is zh-CN first, and a bare Debian has none."""

from __future__ import annotations

import os
import shutil

from infra.process import InfraError, apt_install

NAMES = ("chromium", "chromium-browser")


FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
PACKAGES = ("chromium", "fonts-wqy-microhei")


def ensure_chromium() -> str:
    """The path of the system chromium; `apt-get install chromium` when missing and we may."""
    for name in NAMES:
        found = shutil.which(name)
        if found and os.path.exists(FONT):
            return found
    apt_install(
        list(PACKAGES),
        "chromium or its Chinese font not found: run "
        "`sudo apt-get install -y chromium fonts-wqy-microhei` (Debian)",
    )
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise InfraError("chromium is still missing after apt-get install")
