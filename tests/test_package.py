"""Importing the package needs neither openmesh nor any optional extra."""

import subprocess
import sys

BLOCK_OPENMESH = "import sys; sys.modules['openmesh'] = None; "


def test_import_without_openmesh():
    code = BLOCK_OPENMESH + "import mesh_decoder, mesh_decoder.mesh, mesh_decoder.hierarchy, mesh_decoder.nn, mesh_decoder.render, mesh_decoder.pca, mesh_decoder.model_files; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_saved_hierarchy_decodes_without_openmesh(tmp_path):
    """README: running a decoder from a saved hierarchy, and every command module, need no openmesh."""
    from mesh_decoder.hierarchy import build_hierarchy, save_hierarchy
    from mesh_decoder.mesh import face_template

    save_hierarchy(build_hierarchy(face_template(500), factors=(2, 2), texture_size=16), tmp_path / "h.npz")
    code = BLOCK_OPENMESH + (
        "import torch, mesh_decoder.cli, mesh_decoder.train, mesh_decoder.fit, mesh_decoder.bench, mesh_decoder.data\n"
        "from mesh_decoder.hierarchy import load_hierarchy\n"
        "from mesh_decoder.nn import JointDecoder\n"
        f"h = load_hierarchy({str(tmp_path / 'h.npz')!r})\n"
        "torch.manual_seed(3)\n"
        "decoder = JointDecoder.from_hierarchy(h, latent_size=4, channels=(8, 8), texture_branch='mesh')\n"
        "out = decoder(torch.randn(2, 4))\n"
        "print(tuple(out.vertices.shape), tuple(out.texture.shape))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(2, 500, 3) (2, 3, 16, 16)"


def test_public_helpers_the_docs_point_to_are_exported_by_their_package():
    """pseudo_coordinates (named by PyGConv's docs), preset_mismatch and closest_point_on_triangle were only in
    their modules' __all__; each package's __all__ names what it has."""
    import importlib

    for package, names in (("mesh_decoder.nn", ["pseudo_coordinates", "PSEUDO_COORDINATES", "preset_mismatch"]),
                           ("mesh_decoder.hierarchy", ["closest_point_on_triangle"])):
        module = importlib.import_module(package)
        assert set(names) <= set(module.__all__), package
        assert all(hasattr(module, name) for name in module.__all__), package
