"""Importing the package needs neither openmesh nor any optional extra."""

import subprocess
import sys

BLOCK_OPENMESH = "import sys; sys.modules['openmesh'] = None; "


def test_import_without_openmesh():
    code = BLOCK_OPENMESH + "import mesh_decoder, mesh_decoder.mesh, mesh_decoder.hierarchy, mesh_decoder.nn, mesh_decoder.render, mesh_decoder.pca, mesh_decoder.model_files; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
