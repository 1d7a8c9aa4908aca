"""ONNX export of the decoders and their ONNX Runtime outputs against PyTorch."""

import sys

import pytest
import torch

from mesh_decoder.bench.harness import max_relative_error
from mesh_decoder.bench.onnx_export import OnnxRunner, export_onnx, onnx_output_names, require_onnx

pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install 'mesh_decoder[onnx]')")
pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install 'mesh_decoder[onnx]')")
pytest.importorskip("onnxruntime", reason="ONNX Runtime needs onnxruntime (pip install 'mesh_decoder[onnx]')")

from mesh_decoder.hierarchy import build_hierarchy  # noqa: E402
from mesh_decoder.mesh.templates import face_template  # noqa: E402
from mesh_decoder.bench import onnx_export  # noqa: E402
from mesh_decoder.nn.decoders import ChebDecoder, JointDecoder, SpiralDecoder  # noqa: E402


@pytest.fixture(scope="module")
def hierarchy():
    return build_hierarchy(face_template(1000, seed=0), factors=(4, 4), texture_size=32)


def spiral(hierarchy, out_channels=3, seed=0):
    torch.manual_seed(seed)
    decoder = SpiralDecoder.from_hierarchy(hierarchy, latent_size=8, channels=(16, 32), out_channels=out_channels)
    gen = torch.Generator().manual_seed(seed + 1)
    V = hierarchy.sizes[0]
    decoder.set_normalization(torch.randn(V, out_channels, generator=gen), torch.rand(V, out_channels, generator=gen) + 0.5)
    return decoder.eval()


def test_spiral_decoder_onnx_equals_pytorch_dynamic_batch(hierarchy, tmp_path):
    decoder = spiral(hierarchy)
    path = tmp_path / "spiral.onnx"
    exporter = export_onnx(decoder, path, batch_size=1, dynamic_batch=True)
    assert exporter in ("dynamo", "torchscript")
    runner = OnnxRunner(path, threads=1)
    assert runner.output_names == ["vertices"]
    for batch in (1, 4):  # exported at batch 1, run at another batch size
        z = torch.randn(batch, 8, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = decoder(z)
        (got,) = runner(z)
        assert got.shape == expected.shape
        assert max_relative_error([got], [expected]) < 1e-5


def test_chebyshev_decoder_onnx_has_a_dynamic_batch(hierarchy, tmp_path):
    """A batch of 1 traced by torch.export is specialised; export_onnx traces at 2 and checks the file."""
    torch.manual_seed(int(torch.randint(1 << 30, ())))
    decoder = ChebDecoder.from_hierarchy(hierarchy, latent_size=8, channels=(16, 32)).eval()
    path = tmp_path / "coma.onnx"
    export_onnx(decoder, path, batch_size=1, dynamic_batch=True)
    onnx_export._check_dynamic_batch(str(path))
    runner = OnnxRunner(path, threads=1)
    for batch in (1, 3):
        z = torch.randn(batch, 8)
        with torch.no_grad():
            expected = decoder(z)
        (got,) = runner(z)
        assert got.shape == expected.shape and max_relative_error([got], [expected]) < 1e-5
    fixed = tmp_path / "fixed.onnx"
    export_onnx(decoder, fixed, batch_size=2, dynamic_batch=False)
    with pytest.raises(ValueError, match="expected a dynamic batch dimension on input 'z', got a fixed batch of 2"):
        onnx_export._check_dynamic_batch(str(fixed))


def test_joint_decoder_onnx_outputs(hierarchy, tmp_path):
    joint = JointDecoder(spiral(hierarchy, out_channels=6, seed=2), "mesh", hierarchy.texel_map).eval()
    path = tmp_path / "joint.onnx"
    export_onnx(joint, path)
    runner = OnnxRunner(path, threads=1)
    assert runner.output_names == ["vertices", "texture", "colors", "mask"]
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = joint(z)
    got = runner(z)
    for name, g, e in zip(runner.output_names, got, expected):
        assert g.shape == e.shape, name
        if e.is_floating_point():
            assert max_relative_error([g], [e]) < 1e-5, name
        else:
            assert torch.equal(g, e), name


def test_output_names():
    assert onnx_output_names(torch.zeros(1)) == ["vertices"]
    assert onnx_output_names((torch.zeros(1), None, torch.zeros(1))) == ["output_0", "output_2"]
    with pytest.raises(TypeError, match="tensor"):
        onnx_output_names("nope")


def test_errors_name_the_problem(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxRunner(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="latent_size"):
        export_onnx(torch.nn.Linear(3, 3), tmp_path / "x.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match="pip install"):
        require_onnx("onnxruntime")


def test_harness_onnx_mode(tmp_path, capsys):
    import json

    from mesh_decoder.bench import harness, report

    argv = ["--quick", "--vertices", "1000", "--texture-size", "32", "--threads", "1", "--batch-sizes", "2",
            "--decoders", "spiralnet++-coma", "joint", "--onnx", "--memory", "off", "--time-budget", "0.2",
            "--output-dir", str(tmp_path), "--no-progress", "--no-plot"]
    assert harness.main(argv) == 0
    data = json.loads((tmp_path / f"decode_{report.machine_slug('cpu', 1)}.json").read_text())
    rows = {(r["decoder"], r["mode"]): r for r in data["rows"]}
    assert set(rows) == {(d, m) for d in ("spiralnet++-coma", "joint") for m in ("eager", "onnx")}
    for (decoder, mode), r in rows.items():
        assert r["status"] == "ok", r
        assert r["max_error"] < 1e-4 and r["meshes_per_s"] > 0
    assert data["decoders"]["joint"]["onnx_exporter"] in ("dynamo", "torchscript")


def test_bad_path_and_batch_are_refused_before_the_export(tmp_path, monkeypatch):
    """A folder as the path failed after the whole export, naming a temporary file; batch_size=True was taken as 1."""
    exported = []
    monkeypatch.setattr(onnx_export, "_export", lambda *args: exported.append(args))

    class Tiny(torch.nn.Module):
        latent_size = 4

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 9)

        def forward(self, z):
            return self.fc(z).view(z.shape[0], 3, 3)  # (B, 3, 3)

    with pytest.raises(ValueError, match=rf"path {tmp_path}: expected a file path, found a directory"):
        export_onnx(Tiny(), tmp_path)
    for bad, error in ((True, TypeError), (0, ValueError), (2.0, TypeError)):
        with pytest.raises(error, match="batch_size: expected an integer"):
            export_onnx(Tiny(), tmp_path / "x.onnx", batch_size=bad)
    assert exported == []


def test_a_file_that_decodes_only_the_traced_batch_is_refused(hierarchy, tmp_path):
    """The TorchScript exporter records a union-mode PyG conv's edge offsets (torch.arange of the batch size) as
    constants: the file declared a dynamic batch yet decoded only the traced samples right. The dynamo exporter
    makes them symbolic."""
    from mesh_decoder.nn import PyGDecoder

    torch.manual_seed(int(torch.randint(1 << 30, ())))
    decoder = PyGDecoder.from_hierarchy(hierarchy, "GATConv", latent_size=4, channels=(8, 8)).eval()
    assert decoder.convs[0].mode == "union"
    with pytest.raises(RuntimeError, match=r"torchscript: ValueError: the file decodes a batch of 3 wrongly "
                                           r"\('vertices' off by .* relative to the module\): it holds values of "
                                           r"the traced batch"):
        export_onnx(decoder, tmp_path / "gat.onnx", prefer_dynamo=False)
    assert not (tmp_path / "gat.onnx").exists()
    assert export_onnx(decoder, tmp_path / "gat.onnx") == "dynamo"
    z = torch.randn(5, 4)
    with torch.no_grad():
        expected = decoder(z)
    (got,) = OnnxRunner(tmp_path / "gat.onnx", threads=1)(z)
    assert max_relative_error([got], [expected]) < 1e-5


def test_a_requested_opset_is_the_files_or_the_export_fails_over(hierarchy, tmp_path):
    """The dynamo exporter wrote opset 18 when asked for 13 (a warning, then success): a file an older runtime
    cannot load. Now the file has the asked opset, from the TorchScript exporter below 18."""
    import onnx

    decoder = spiral(hierarchy, seed=5)
    for opset, exporters in ((13, ("torchscript",)), (18, ("dynamo", "torchscript"))):
        path = tmp_path / f"opset{opset}.onnx"
        assert export_onnx(decoder, path, batch_size=2, opset_version=opset) in exporters
        assert [o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx")] == [opset]
        z = torch.randn(3, 8)
        with torch.no_grad():
            assert max_relative_error(OnnxRunner(path, threads=1)(z), [decoder(z)]) < 1e-5
    for bad, error in ((6, ValueError), ("13", TypeError)):
        with pytest.raises(error, match="opset_version: expected an integer"):
            export_onnx(decoder, tmp_path / "x.onnx", opset_version=bad)
    with pytest.raises(ValueError, match=r"^opset 999: no exporter wrote this model at that opset \(dynamo: "
                                         r"ValueError: expected opset 999, the file has .*leave the opset out"):
        export_onnx(decoder, tmp_path / "x.onnx", opset_version=999)
    assert not (tmp_path / "x.onnx").exists()


def test_the_file_records_what_made_it(hierarchy, tmp_path):
    import json

    import mesh_decoder

    joint = JointDecoder(spiral(hierarchy, out_channels=6, seed=6), "mesh", hierarchy.texel_map).eval()
    path = tmp_path / "joint.onnx"
    export_onnx(joint, path, metadata={"note": "mine"})
    meta = OnnxRunner(path).metadata
    assert meta["mesh_decoder.version"] == mesh_decoder.__version__
    assert meta["mesh_decoder.class"] == "JointDecoder"
    assert json.loads(meta["mesh_decoder.outputs"]) == ["vertices", "texture", "colors", "mask"]
    assert meta["note"] == "mine" and meta["mesh_decoder.latent_size"] == "8"
    with pytest.raises(ValueError, match=r"metadata: expected none of the keys the export writes itself .*got "
                                         r"mesh_decoder\.latent_size"):  # it overrode the file's own description
        export_onnx(joint, tmp_path / "x.onnx", metadata={"mesh_decoder.latent_size": "999"})
    with pytest.raises(TypeError, match=r"metadata: expected None or a mapping of str keys to str values"):
        export_onnx(joint, tmp_path / "x.onnx", metadata={"n": 1})
    assert OnnxRunner(export_onnx(joint, tmp_path / "y.onnx") and tmp_path / "y.onnx").metadata[
        "mesh_decoder.latent_size"] == "8"


@pytest.mark.parametrize("bad", ["spiral", None, {"fc.weight": torch.ones(1)}, SpiralDecoder])
def test_a_non_module_is_a_type_error(bad, tmp_path):
    """A string, None, a state dict or the class itself gave AttributeErrors from deepcopy(...).to()."""
    (tmp_path / "kept.onnx").write_bytes(b"old")
    with pytest.raises(TypeError, match=r"decoder: expected a torch.nn.Module decoder .*got "):
        export_onnx(bad, tmp_path / "kept.onnx")
    assert (tmp_path / "kept.onnx").read_bytes() == b"old"


def test_runner_takes_numpy_and_an_encoder_is_no_decoder(hierarchy, tmp_path):
    """A numpy latent gave AttributeError: 'numpy.ndarray' object has no attribute 'detach'; an encoder (it has a
    latent_size) failed inside its forward with a shape error."""
    from mesh_decoder.nn import SpiralEncoder

    decoder = spiral(hierarchy, seed=8)
    path = tmp_path / "d.onnx"
    export_onnx(decoder, path)
    runner = OnnxRunner(path)
    z = torch.randn(2, 8)
    torch.testing.assert_close(runner(z.numpy())[0], runner(z)[0], rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"z: expected a \(B, Z\) torch tensor or numpy array, got list"):
        runner(z.tolist())
    encoder = SpiralEncoder.from_hierarchy(hierarchy, latent_size=8, channels=(16, 32))
    with pytest.raises(TypeError, match=r"decoder: expected a torch\.nn\.Module decoder .*got SpiralEncoder"):
        export_onnx(encoder, tmp_path / "e.onnx")


def test_rows_that_end_in_error_say_why_on_stderr(tmp_path, capsys):
    """A row that ended in error showed 'error' in the table, its reason only in the JSON's note."""
    from mesh_decoder.bench import harness

    argv = ["--quick", "--vertices", "1000", "--texture-size", "0", "--threads", "1", "--batch-sizes", "1",
            "--decoders", "pca", "--modes", "eager", "onnx", "--dtypes", "fp32", "bf16", "--memory", "off",
            "--time-budget", "0.2", "--output-dir", str(tmp_path), "--no-progress", "--no-plot"]
    assert harness.main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: pca bf16 onnx batch 1: error: ValueError: mode onnx runs the fp32 export only, got dtype bf16" \
        in err, err


def test_runner_and_export_errors_are_value_and_type_errors(hierarchy, tmp_path):
    """ONNX Runtime's own exceptions (InvalidProtobuf, InvalidArgument) came through; a boolean latent_size was
    exported; an autoencoder failed inside its encoder; VertexColorSplit exported an empty colors output."""
    from mesh_decoder.bench.onnx_export import VertexColorSplit
    from mesh_decoder.nn import MeshAutoencoder, SpiralEncoder

    decoder = spiral(hierarchy, seed=9)
    path = tmp_path / "d.onnx"
    export_onnx(decoder, path)
    data = path.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"cut\.onnx: not an ONNX model ONNX Runtime can load"):
        OnnxRunner(tmp_path / "cut.onnx")
    runner = OnnxRunner(path)
    for bad in (torch.randn(2, 5), torch.randn(8), torch.randn(1, 2, 8)):
        with pytest.raises(ValueError, match=r"z: expected shape \(B, 8\), got "):
            runner(bad)
    with pytest.raises(TypeError, match=r"z: expected real latents, got torch\.complex64"):
        runner(torch.randn(2, 8, dtype=torch.complex64))

    class Flag(torch.nn.Module):
        latent_size = True

        def forward(self, z):
            return z

    with pytest.raises(ValueError, match=r"expected a decoder with a positive integer 'latent_size' attribute, got "
                                         r"Flag with latent_size True"):
        export_onnx(Flag(), tmp_path / "f.onnx")
    autoencoder = MeshAutoencoder(SpiralEncoder.from_hierarchy(hierarchy, latent_size=8, channels=(16, 32)), decoder)
    with pytest.raises(TypeError, match=r"got a MeshAutoencoder .*pass its \.decoder"):
        export_onnx(autoencoder, tmp_path / "a.onnx")
    with pytest.raises(ValueError, match=r"expected one of 6 output channels \(xyz then rgb\), got SpiralDecoder "
                                         r"with 3"):
        VertexColorSplit(decoder)
