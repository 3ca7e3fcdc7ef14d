"""The console's charting library (Chart.js, MIT), taken from the npm registry at set-up and
checked against the registry's sha512 integrity: the worker serves it from web/console/vendor/
and the browser loads nothing from the internet. `python -m infra.console_assets` (make setup,
the Dockerfile)."""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "4.6.1"
URL = f"https://registry.npmjs.org/chart.js/-/chart.js-{VERSION}.tgz"
INTEGRITY = (
    "sha512-hJyniucsFmq//EvXYvJ6c6mahPoI3kaxdjVH8awTaJ/"
    "fDNWeSqqqArixMJWkWNN6fcYvPU3HneSANFNYtRi61g=="
)
VENDOR = Path(__file__).resolve().parents[1] / "web" / "console" / "vendor"
FILES = {
    "package/dist/chart.umd.min.js": "chart.umd.min.js",
    "package/LICENSE.md": "chart.LICENSE.md",
}


def ensure(dest: Path = VENDOR) -> Path:
    """The library in `dest` (downloaded once; a file that is there already is kept)."""
    target = dest / "chart.umd.min.js"
    if target.is_file():
        return target
    with urllib.request.urlopen(URL, timeout=60) as resp:
        blob = resp.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(blob).digest()).decode()
    if digest != INTEGRITY:
        raise RuntimeError(f"{URL}: integrity {digest} is not the pinned {INTEGRITY}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member, name in FILES.items():
            extracted = tar.extractfile(member)
            if extracted is None:
                raise RuntimeError(f"{URL}: {member} missing")
            (dest / name).write_bytes(extracted.read())
    return target


if __name__ == "__main__":
    try:
        print(f"console assets: {ensure()}")
    except (OSError, RuntimeError) as exc:
        sys.exit(f"console assets: cannot fetch Chart.js {VERSION} from the npm registry: {exc}")
