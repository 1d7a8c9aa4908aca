"""The README is the front door: its commands, its example and its tables stay true."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def _readme() -> str:
    with open(README, encoding="utf-8") as fh:
        return fh.read()


def test_two_commands_come_first():
    text = _readme()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert "make bench" in first_block and "make test" in first_block


def test_result_tables_match_committed_files():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "readme_tables.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_python_example_runs():
    code = re.search(r"```python\n(.*?)```", _readme(), flags=re.S).group(1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code + "\nassert tuple(out.texture.shape) == (8, 3, 256, 256)\n"],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
