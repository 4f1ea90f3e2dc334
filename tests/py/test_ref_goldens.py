"""Committed goldens equal a fresh run of their torch reference scripts
(skipped without torch; CI checks the goldens themselves in C tests)."""
import os
import subprocess
import sys

ROOT = os.environ.get("RL_ROOT", ".")
try:
    import torch  # noqa: F401
except ImportError as e:
    print("ok reference goldens are fresh # SKIP torch not installed (%s)" % e)
    sys.exit(0)

rc = 0
for script, golden in [("tests/ref/dpo_loss_ref.py", "tests/data/golden/dpo_losses.json")]:
    p = subprocess.run([sys.executable, os.path.join(ROOT, script), "--check", os.path.join(ROOT, golden)],
                       capture_output=True, text=True)
    print(p.stdout.strip() or "not ok %s: %s" % (script, p.stderr.strip()[-300:]))
    rc |= p.returncode
sys.exit(1 if rc else 0)
