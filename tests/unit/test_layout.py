"""Nothing happens at import, and the pure rooms stay pure: no faust, no App."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
PURE = [
    "edge.validation",
    "edge.canonical",
    "contracts.inputs",
    "contracts.export",
    "contracts.topic_configs",
    "triggers.expr",
    "triggers.catalog",
    "triggers.model",
    "triggers.engine",
    "triggers.pipeline",
    "triggers.loader",
    "state.member_state",
    "state.presence",
    "state.purchases",
    "core.settings",
]


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_pure_modules_import_no_faust():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in PURE)
        + "print(sorted({m.split('.')[0] for m in sys.modules} & {'faust', 'mode', 'aiokafka'}))"
    )
    out = run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_importing_the_app_builds_nothing_and_registering_before_build_says_why():
    out = run("import app, agents, web\nprint(app._built)")
    assert out.returncode == 0 and out.stdout.strip() == "None", out.stderr
    out = run("import topics")
    assert out.returncode != 0 and "call app.build(settings)" in out.stderr
