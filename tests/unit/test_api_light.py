"""The API side stays light: importing it loads no torch, transformers or workers."""

import subprocess
import sys


def test_service_imports_no_torch_transformers_or_workers():
    code = ("import sys, service.main, service.cli, schemas.jobs; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'workers')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
