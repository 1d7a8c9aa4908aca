"""Model files: bitwise round trips, clear errors on bad files, atomic writes under SIGKILL."""

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from mesh_decoder import __version__
from mesh_decoder.errors import ModelFileError, ModelHierarchyMismatchError
from mesh_decoder.hierarchy import HierarchyLevel, MeshHierarchy
from mesh_decoder.model_files import (
    FORMAT_VERSION,
    hierarchy_signature,
    load_model,
    read_model_meta,
    register_model,
    registered_models,
    save_model,
)
from mesh_decoder.pca import PCAModel


def pca_model(seed, n=20, v=50, k=8, colors=True, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, v, 3, generator=g, dtype=dtype) * 20
    c = torch.rand(n, v, 3, generator=g, dtype=dtype) if colors else None
    return PCAModel.fit(x, c, num_components=k)


def toy_hierarchy(v, seed, template_hash="t" * 64, spiral_length=5):
    """A small hand-made hierarchy (two levels) with random valid operators."""
    g = torch.Generator().manual_seed(seed)
    levels = []
    for n in (v, (v + 3) // 4):
        levels.append(HierarchyLevel(
            vertices=torch.randn(n, 3, generator=g),
            faces=torch.randint(0, n, (2 * n, 3), generator=g),
            spirals=torch.randint(0, n + 1, (n, spiral_length), generator=g),
            laplacian_index=torch.randint(0, n, (2, 4 * n), generator=g),
            laplacian_weight=-torch.rand(4 * n, generator=g),
            original_index=torch.arange(n),
            spiral_length=spiral_length,
        ))
    coarse = levels[1].num_vertices
    weight = torch.rand(v, 3, generator=g)
    return MeshHierarchy(
        levels=levels,
        down=[torch.randperm(v, generator=g)[:coarse]],
        up_index=[torch.randint(0, coarse, (v, 3), generator=g)],
        up_weight=[weight / weight.sum(dim=1, keepdim=True)],
        meta={"template_hash": template_hash, "factors": [4]},
    )


@register_model
class ToyGraphModel(nn.Module):
    """A hierarchy-based model exercising shared, non-contiguous and mixed-dtype tensors."""

    def __init__(self, num_vertices, latent_size, spirals):
        super().__init__()
        self.num_vertices, self.latent_size = num_vertices, latent_size
        self.fc = nn.Linear(latent_size, num_vertices * 3)
        self.register_buffer("spirals", spirals)
        self.inner = nn.Module()
        self.inner.register_buffer("spirals", spirals)  # the same tensor held twice
        self.register_buffer("scale_t", torch.rand(3, num_vertices, dtype=torch.float64).T)  # non-contiguous
        self.register_buffer("prior_mean", torch.randn(latent_size, dtype=torch.float64))
        self.norm = nn.BatchNorm1d(3)

    def forward(self, z):
        y = self.fc(z).reshape(z.shape[0], self.num_vertices, 3)  # (B, V, 3)
        y = self.norm(y.transpose(1, 2)).transpose(1, 2)  # (B, V, 3)
        return y * self.scale_t.to(y.dtype) + y[:, self.spirals[:, 0].clamp_max(self.num_vertices - 1)]

    def config(self):
        return {"class": "ToyGraphModel", "latent_size": self.latent_size}

    @classmethod
    def from_config(cls, config, hierarchy):
        return cls(hierarchy.levels[0].num_vertices, config["latent_size"], hierarchy.levels[0].spirals)


def toy_model(h, seed):
    torch.manual_seed(seed)
    model = ToyGraphModel(h.levels[0].num_vertices, 6, h.levels[0].spirals)
    model.train()
    model(torch.randn(8, 6))  # move the BatchNorm running statistics away from their defaults
    return model.eval()


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


# ----------------------------------------------------------------- round trips
def test_pca_round_trip_is_bitwise(tmp_path):
    model = pca_model(1)
    path = tmp_path / "pca.safetensors"
    save_model(model, path, extra_meta={"data_version": "synthetic-faces-1", "epochs": 3})
    loaded = load_model(path)
    assert type(loaded) is PCAModel and not loaded.training
    assert_same_state(model, loaded)
    g = torch.Generator().manual_seed(2)
    z, zc = model.sample_latents(5, g), model.sample_color_latents(5, g)
    assert torch.equal(loaded(z), model(z))
    assert torch.equal(loaded.decode_colors(zc), model.decode_colors(zc))
    assert torch.equal(loaded.sample(3, torch.Generator().manual_seed(4)), model.sample(3, torch.Generator().manual_seed(4)))
    meta = read_model_meta(path)
    assert meta["format_version"] == FORMAT_VERSION and meta["library_version"] == __version__
    assert meta["class"] == "PCAModel" and meta["config"] == model.config()
    assert meta["data_version"] == "synthetic-faces-1" and meta["extra_meta"]["epochs"] == 3
    assert meta["hierarchy_hash"] is None
    assert b"\x80\x04\x95" not in path.read_bytes()[:200]  # a safetensors header, not a pickle
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] < 10_000


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pca_shape_only_keeps_dtype(tmp_path, dtype):
    model = pca_model(3, colors=False, dtype=dtype)
    save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.mean.dtype == dtype and not loaded.has_colors
    z = model.sample_latents(4, torch.Generator().manual_seed(1))
    assert torch.equal(loaded(z), model(z))


def test_shared_noncontiguous_and_mixed_tensors_round_trip(tmp_path):
    h = toy_hierarchy(40, seed=5)
    model = toy_model(h, seed=6)
    path = tmp_path / "toy.safetensors"
    save_model(model, path, hierarchy=h)
    meta = read_model_meta(path)
    assert meta["aliases"] == {"spirals": "inner.spirals"} or meta["aliases"] == {"inner.spirals": "spirals"}
    assert meta["hierarchy_hash"] == "t" * 64 and meta["hierarchy_signature"] == hierarchy_signature(h)
    loaded = load_model(path, h)
    assert_same_state(model, loaded)
    assert loaded.spirals.data_ptr() == loaded.inner.spirals.data_ptr()
    assert loaded.prior_mean.dtype == torch.float64 and loaded.fc.weight.dtype == torch.float32
    assert isinstance(loaded.fc.weight, nn.Parameter) and loaded.fc.weight.requires_grad
    z = torch.randn(4, 6, generator=torch.Generator().manual_seed(7))
    assert torch.equal(loaded(z), model(z))


def test_spiral_decoder_round_trip_is_bitwise(tmp_path):
    nn_mod = pytest.importorskip("mesh_decoder.nn")
    hier = pytest.importorskip("mesh_decoder.hierarchy")
    templates = pytest.importorskip("mesh_decoder.mesh.templates")
    if not hasattr(nn_mod, "SpiralDecoder") or not hasattr(hier, "build_hierarchy"):
        pytest.skip("SpiralDecoder or build_hierarchy not available")
    h = hier.build_hierarchy(templates.face_template(1000), factors=(4, 4), texture_size=None)
    torch.manual_seed(8)
    decoder = nn_mod.SpiralDecoder.from_hierarchy(h, latent_size=8, channels=(8, 16))
    g = torch.Generator().manual_seed(9)
    decoder.set_normalization(torch.randn(1000, 3, generator=g) * 10, torch.rand(1000, 3, generator=g) + 0.5)
    decoder.eval()
    path = tmp_path / "spiral.safetensors"
    save_model(decoder, path, hierarchy=h, extra_meta={"data_version": "synthetic-faces-1"})
    torch.manual_seed(10)
    want = torch.randn(3)
    torch.manual_seed(10)
    loaded = load_model(path, h)
    assert torch.equal(torch.randn(3), want)  # rebuilding the model drew its initial weights from the caller's stream
    assert type(loaded) is nn_mod.SpiralDecoder
    assert_same_state(decoder, loaded)
    z = torch.randn(3, 8, generator=g)
    with torch.no_grad():
        assert torch.equal(loaded(z), decoder(z))
    other = hier.build_hierarchy(templates.face_template(1000, seed=1), factors=(4, 4), texture_size=None)
    with pytest.raises(ModelFileError, match="spiral.safetensors: model built for template"):
        load_model(path, other)
    with pytest.raises(ModelFileError, match="needs the mesh hierarchy"):
        load_model(path)


# ---------------------------------------------------------- errors on loading
def test_hierarchy_mismatches_are_clear_errors(tmp_path):
    h = toy_hierarchy(40, seed=10)
    path = tmp_path / "toy.safetensors"
    save_model(toy_model(h, seed=11), path, hierarchy=h)
    with pytest.raises(ModelFileError, match=r"toy\.safetensors: ToyGraphModel needs the mesh hierarchy .*t{64}") as info:
        load_model(path)
    assert not isinstance(info.value, ModelHierarchyMismatchError)
    # a mismatch is its own ModelFileError, which callers that know the hierarchy's file extend
    with pytest.raises(ModelHierarchyMismatchError,
                       match=f"model built for template {'t' * 64} \\(40 vertices\\), but the given hierarchy is for "
                             f"template {'u' * 64} \\(40 vertices\\)"):
        load_model(path, toy_hierarchy(40, seed=10, template_hash="u" * 64))
    with pytest.raises(ModelHierarchyMismatchError, match=r"toy\.safetensors: model built on a hierarchy with .*spiral"):
        load_model(path, toy_hierarchy(40, seed=10, spiral_length=7))
    with pytest.raises(ValueError, match="pass hierarchy="):
        save_model(toy_model(h, seed=11), tmp_path / "nohier.safetensors")
    # a PCA model saved with its template's hierarchy checks it when one is given
    pca = pca_model(12, v=40, colors=False)
    save_model(pca, tmp_path / "pca.safetensors", hierarchy=h)
    assert torch.equal(load_model(tmp_path / "pca.safetensors").mean, pca.mean)
    with pytest.raises(ModelFileError, match="model built for template"):
        load_model(tmp_path / "pca.safetensors", toy_hierarchy(40, seed=10, template_hash="u" * 64))


def rewrite_meta(src, dst, change):
    """Copy a model file with its JSON metadata edited by ``change(meta)``."""
    import safetensors.torch

    blob = src.read_bytes()
    size = struct.unpack("<Q", blob[:8])[0]
    meta = json.loads(json.loads(blob[8:8 + size])["__metadata__"]["mesh_decoder"])
    change(meta)
    dst.write_bytes(safetensors.torch.save(safetensors.torch.load(blob), metadata={"mesh_decoder": json.dumps(meta)}))


def test_bad_files_are_clear_errors(tmp_path):
    path = tmp_path / "pca.safetensors"
    save_model(pca_model(13), path)
    blob = path.read_bytes()

    def expect(name, data, match):
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(ModelFileError, match=match) as info:
            load_model(bad)
        assert str(bad) in str(info.value)

    expect("empty.safetensors", b"", "truncated or not a model file: 0 bytes")
    # load_model gives read_model_meta's sizes, not safetensors' "incomplete metadata, file not fully covered"
    expect("short.safetensors", blob[:len(blob) // 2], r"short\.safetensors: truncated: its header describes \d+ "
                                                       r"bytes of tensor data, the file holds \d+$")
    expect("tail.safetensors", blob[:-1], "truncated: its header describes")
    expect("extra.safetensors", blob + bytes(16), r"extra\.safetensors: corrupt: 16 bytes follow the \d+ bytes of "
                                                   r"tensor data its header describes$")
    with pytest.raises(ModelFileError, match=r"tail\.safetensors: truncated: its header describes (\d+) bytes "
                                             r"of tensor data, the file holds (\d+)") as info:
        read_model_meta(tmp_path / "tail.safetensors")  # known from the header and the file's size
    declared, held = map(int, re.search(r"describes (\d+) .* holds (\d+)", str(info.value)).groups())
    assert declared - held == 1
    expect("garbage.safetensors", bytes(range(256)) * 4, "truncated or not a model file")
    size = struct.unpack("<Q", blob[:8])[0]
    flipped = bytearray(blob)
    flipped[8 + size + 100] ^= 0x01
    expect("flipped.safetensors", bytes(flipped), "checksum mismatch")
    import safetensors.torch

    expect("foreign.safetensors", safetensors.torch.save({"w": torch.rand(3)}), "not a mesh_decoder model file")
    with pytest.raises(ModelFileError, match="missing.safetensors: cannot read the model file"):
        load_model(tmp_path / "missing.safetensors")

    rewrite_meta(path, tmp_path / "v2.safetensors", lambda m: m.update(format_version=2))
    with pytest.raises(ModelFileError, match=r"v2\.safetensors: written in model format version 2 .*reads format version 1"):
        load_model(tmp_path / "v2.safetensors")
    with pytest.raises(ModelFileError, match="format version 2"):
        read_model_meta(tmp_path / "v2.safetensors")
    for equal_to_one in (1.0, True):  # equal to 1 in Python, but not the integer the format writes
        rewrite_meta(path, tmp_path / "v1.0.safetensors", lambda m: m.update(format_version=equal_to_one))
        with pytest.raises(ModelFileError, match=f"written in model format version {equal_to_one!r} "):
            load_model(tmp_path / "v1.0.safetensors")
    rewrite_meta(path, tmp_path / "cls.safetensors", lambda m: m.update({"class": "NoSuchDecoder"}))
    with pytest.raises(ModelFileError, match=r"cls\.safetensors: unknown model class 'NoSuchDecoder'; expected one of \[.*'PCAModel'"):
        load_model(tmp_path / "cls.safetensors")
    rewrite_meta(path, tmp_path / "cfg.safetensors", lambda m: m["config"].update(num_components=7))
    with pytest.raises(ModelFileError, match=r"cfg\.safetensors: the saved tensors do not fit PCAModel"):
        load_model(tmp_path / "cfg.safetensors")


@pytest.mark.parametrize("key, value, match", [
    ("aliases", [], r"expected 'aliases' to be a JSON object, got list"),
    ("aliases", {"x": 3}, r"expected 'aliases' to map tensor names to tensor names"),
    ("class", ["PCAModel"], r"expected 'class' to be a string, got list"),
    ("config", None, r"expected 'config' to be a JSON object, got NoneType"),
    ("checksum", 7, r"expected 'checksum' to be a string, got int"),
    # read as objects by sample, fit and render: a list was an AttributeError traceback there
    ("extra_meta", [1], r"expected 'extra_meta' to be a JSON object, got list \[1\]$"),
    ("hierarchy_meta", "h", r"expected 'hierarchy_meta' to be a JSON object, got str 'h'$"),
])
def test_metadata_of_the_wrong_type_is_a_clear_error(tmp_path, key, value, match):
    path = tmp_path / "pca.safetensors"
    save_model(pca_model(int(torch.randint(1 << 20, ()))), path)
    bad = tmp_path / "bad.safetensors"
    rewrite_meta(path, bad, lambda m: m.update({key: value}))
    for read in (load_model, read_model_meta):
        with pytest.raises(ModelFileError, match=r"bad\.safetensors: corrupt model metadata: " + match):
            read(bad)


def test_a_config_too_large_to_build_names_the_file(tmp_path, monkeypatch):
    """latent_size 10**9 in a damaged config ended as 'out of memory ... try smaller sizes', naming no file."""
    from mesh_decoder.pca import PCAModel

    path = tmp_path / "pca.safetensors"
    save_model(pca_model(int(torch.randint(1 << 20, ()))), path)
    bad = tmp_path / "bad.safetensors"
    rewrite_meta(path, bad, lambda m: m["config"].update(num_components=10**9))

    def no_memory(*args, **kwargs):  # what torch raises for the allocation, without allocating
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 1024000000000 bytes.")

    monkeypatch.setattr(PCAModel, "from_config", classmethod(no_memory))
    with pytest.raises(ModelFileError, match=r"bad\.safetensors: cannot rebuild PCAModel from its saved config: out of "
                                             r"memory building a model of its sizes \{.*'num_components': 1000000000"
                                             r".*\} \(a damaged config\?\), the file holds [\d,]+ numbers$"):
        load_model(bad)


def test_save_rejects_unregistered_and_unserialisable(tmp_path):
    class Unregistered(nn.Module):
        def config(self):
            return {"class": "Unregistered"}

    with pytest.raises(ValueError, match="unknown model class 'Unregistered'"):
        save_model(Unregistered(), tmp_path / "u.safetensors")
    with pytest.raises(TypeError, match="expected an nn.Module with config"):
        save_model(nn.Linear(2, 2), tmp_path / "l.safetensors")
    with pytest.raises(TypeError, match="extra_meta: expected JSON-able"):
        save_model(pca_model(14), tmp_path / "p.safetensors", extra_meta={"x": object()})
    assert not (tmp_path / "p.safetensors").exists()
    assert {"PCAModel", "SpiralDecoder", "ChebDecoder", "JointDecoder", "MeshAutoencoder"} <= set(registered_models())


# --------------------------------------------------------------- atomic writes
CHILD = r"""
import contextlib, sys, time
import mesh_decoder.model_files as mf

target, a_path, b_path, mode = sys.argv[1:]
a, b = mf.load_model(a_path), mf.load_model(b_path)
mf.save_model(a, target)
print("saved a", flush=True)
if mode == "loop":
    while True:
        mf.save_model(b, target)
        mf.save_model(a, target)
        print("saved", flush=True)

real_atomic_write = mf.atomic_write

class SlowHandle:
    # Writes in small pieces with pauses, so the parent kills us mid-write.
    def __init__(self, handle):
        self.handle = handle
    def write(self, data):
        view = memoryview(data)
        for start in range(0, len(view), 1 << 16):
            self.handle.write(view[start:start + (1 << 16)])
            self.handle.flush()
            if start == 0:
                print("writing b", flush=True)
            time.sleep(0.01)

@contextlib.contextmanager
def slow_atomic_write(path, mode="wb", suffix=None):
    with real_atomic_write(path, mode, suffix) as handle:
        yield SlowHandle(handle)

mf.atomic_write = slow_atomic_write
mf.save_model(b, target)
print("saved b", flush=True)
"""


def spawn(tmp_path, mode):
    a, b = pca_model(20, n=40, v=4000, k=30), pca_model(21, n=40, v=4000, k=30)  # ~6 MB each
    save_model(a, tmp_path / "a.safetensors")
    save_model(b, tmp_path / "b.safetensors")
    target = tmp_path / "model.safetensors"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(target), str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    return a, b, target, proc


def temp_files(tmp_path):
    return sorted(p for p in tmp_path.iterdir() if p.name.startswith(".model.safetensors.") and p.name.endswith(".tmp"))


def test_sigkill_mid_write_leaves_previous_file(tmp_path):
    a, b, target, proc = spawn(tmp_path, "slow")
    try:
        assert proc.stdout.readline().strip() == "saved a", proc.stderr.read()
        assert proc.stdout.readline().strip() == "writing b", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    leftovers = temp_files(tmp_path)
    assert len(leftovers) == 1  # the killed write's partial file, under a name no reader opens
    assert 0 < leftovers[0].stat().st_size < (tmp_path / "b.safetensors").stat().st_size
    loaded = load_model(target)
    assert_same_state(a, loaded)
    z = a.sample_latents(3, torch.Generator().manual_seed(1))
    assert torch.equal(loaded(z), a(z))
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(leftovers[0])


def test_sigkill_during_repeated_saves_leaves_a_complete_file(tmp_path):
    a, b, target, proc = spawn(tmp_path, "loop")
    try:
        assert proc.stdout.readline().strip() == "saved a", proc.stderr.read()
        assert proc.stdout.readline().strip() == "saved", proc.stderr.read()
        time.sleep(0.137)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    loaded = load_model(target)
    assert any(torch.equal(loaded.components, m.components) for m in (a, b))
    assert_same_state(a if torch.equal(loaded.components, a.components) else b, loaded)


def test_loading_needs_no_openmesh(tmp_path):
    model = pca_model(22)
    path = tmp_path / "pca.safetensors"
    save_model(model, path)
    z = model.sample_latents(2, torch.Generator().manual_seed(3))
    code = (
        "import sys; sys.modules['openmesh'] = None\n"
        "import torch\n"
        "from mesh_decoder.model_files import load_model\n"
        f"m = load_model({str(path)!r})\n"
        f"z = torch.tensor({z.tolist()!r}, dtype=torch.float64)\n"
        "print(repr(m(z).sum().item()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.strip()) == model(z).sum().item()


def rewrite_tensors(src, dst, change):
    """Copy a model file with its tensors edited by ``change(tensors)`` and the checksum recomputed."""
    import safetensors.torch

    from mesh_decoder.model_files import _checksum

    blob = src.read_bytes()
    size = struct.unpack("<Q", blob[:8])[0]
    meta = json.loads(json.loads(blob[8:8 + size])["__metadata__"]["mesh_decoder"])
    tensors = safetensors.torch.load(blob)
    change(tensors)
    meta["checksum"] = _checksum(tensors)
    dst.write_bytes(safetensors.torch.save(tensors, metadata={"mesh_decoder": json.dumps(meta)}))


@pytest.mark.parametrize("key", ["mean", "components", "stddev", "color_mean"])
def test_tensors_of_another_dtype_are_a_clear_error(tmp_path, key):
    """A file whose tensors' dtypes differ from what its config builds is refused, not loaded half-cast."""
    path = tmp_path / "pca.safetensors"
    save_model(pca_model(19, dtype=torch.float32), path)
    bad = tmp_path / "dtype.safetensors"
    rewrite_tensors(path, bad, lambda t: t.update({key: t[key].double()}))
    with pytest.raises(ModelFileError, match=rf"^{bad}: the saved tensors do not fit PCAModel: 1 float tensor is "
                                             rf"torch.float64 where its saved config builds torch.float32 \({key}\); "
                                             r"a damaged or edited file\?$"):
        load_model(bad)
    # all of them: one line, not the model's own message once per tensor joined into a very long one
    everything = tmp_path / "all.safetensors"
    rewrite_tensors(path, everything, lambda t: t.update({k: v.double() for k, v in t.items() if v.is_floating_point()}))
    with pytest.raises(ModelFileError, match=r"do not fit PCAModel: \d+ float tensors are torch.float64 where its "
                                             r"saved config builds torch.float32 \(\w+, \w+, \w+, \.\.\.\); a damaged"):
        load_model(everything)


def test_tensors_of_another_kind_do_not_fit_a_graph_model(tmp_path):
    """An index buffer saved as floats (or weights as integers) does not fit a hierarchy model either."""
    h = toy_hierarchy(40, seed=15)
    save_model(toy_model(h, seed=16), tmp_path / "toy.safetensors", hierarchy=h)
    bad = tmp_path / "kind.safetensors"
    rewrite_tensors(tmp_path / "toy.safetensors", bad, lambda t: t.update(
        {k: t[k].float() for k in ("spirals", "inner.spirals") if k in t}))
    with pytest.raises(ModelFileError, match=r"do not fit ToyGraphModel: '(inner\.)?spirals' is torch.float32, "
                                             r"expected a non-floating dtype like torch.int64"):
        load_model(bad, h)
    rewrite_tensors(tmp_path / "toy.safetensors", bad, lambda t: t.update({"fc.weight": t["fc.weight"].long()}))
    with pytest.raises(ModelFileError, match=r"'fc.weight' is torch.int64, expected a floating dtype like torch.float32"):
        load_model(bad, h)


@pytest.mark.parametrize("key, seed", [("components", 23), ("mean", 24), ("color_components", 25)])
def test_a_tensor_relabelled_to_another_shape_fails_the_checksum(tmp_path, key, seed):
    """The checksum did not cover shapes: a header giving a (K, 3V) tensor as (3V, K), same bytes, went unnoticed."""
    path = tmp_path / "pca.safetensors"
    save_model(pca_model(seed, k=int(torch.randint(3, 10, (1,), generator=torch.Generator().manual_seed(seed)))), path)
    blob = path.read_bytes()
    size = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + size])
    old = header[key]["shape"]
    assert len(old) == 2 and old[0] != old[1]
    header[key]["shape"] = old[::-1]  # the same number of elements: the bytes stay a valid tensor
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads its header with spaces to 8 bytes
    bad = tmp_path / "relabelled.safetensors"
    bad.write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + size:])
    import safetensors.torch

    relabelled = safetensors.torch.load(bad.read_bytes())  # a valid file: only the checksum can tell
    assert list(relabelled[key].shape) == old[::-1]
    with pytest.raises(ModelFileError, match=rf"^{re.escape(str(bad))}: corrupt tensor data: checksum mismatch$"):
        load_model(bad)


def test_header_metadata_that_is_not_an_object(tmp_path):
    header = json.dumps({"__metadata__": 5, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    bad = tmp_path / "meta5.safetensors"
    bad.write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))
    for read in (load_model, read_model_meta):
        with pytest.raises(ModelFileError, match=rf"^{bad}: not a safetensors model file: expected the header's "
                                                 r"'__metadata__' to be a JSON object, got int$"):
            read(bad)


def test_save_to_a_directory_and_load_to_a_bad_device_are_clear_errors(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    with pytest.raises(ValueError, match=rf"^path {folder}: expected a file path, found a directory$"):
        save_model(pca_model(17), folder)
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []
    path = tmp_path / "pca.safetensors"
    save_model(pca_model(18), path)
    with pytest.raises(ValueError, match=r"^device: expected cpu, cuda, cuda:N or mps, got 'gpu'$"):
        load_model(path, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^device cuda: CUDA is not available on this machine"):
            load_model(path, device="cuda")
    assert load_model(path, device=torch.device("cpu")).mean.device.type == "cpu"


def test_a_pyg_decoder_built_from_a_factory_is_refused_before_writing(tmp_path):
    """It was saved without complaint, yet load_model could never rebuild it (the file has no conv to name)."""
    import torch_geometric.nn as gnn

    from mesh_decoder.hierarchy import build_hierarchy
    from mesh_decoder.mesh.templates import face_template
    from mesh_decoder.nn import JointDecoder, PyGDecoder

    h = build_hierarchy(face_template(600), factors=(4, 4), texture_size=16)
    torch.manual_seed(12)

    def factory(cin, cout):
        return gnn.GraphConv(cin, cout, aggr="mean")

    decoder = PyGDecoder.from_hierarchy(h, factory, latent_size=4, channels=(8, 8))
    joint = JointDecoder(PyGDecoder.from_hierarchy(h, factory, latent_size=4, channels=(8, 8), out_channels=6),
                         "mesh", h.texel_map)
    for model, name in ((decoder, "pyg.safetensors"), (joint, "joint.safetensors")):
        with pytest.raises(ValueError, match="^model: a PyGDecoder built with a conv factory function or a class "
                                             "outside torch_geometric.nn cannot be stored"):
            save_model(model, tmp_path / name, hierarchy=h)
        assert not (tmp_path / name).exists()
    named = PyGDecoder.from_hierarchy(h, "GraphConv", conv_kwargs={"aggr": "mean"}, latent_size=4, channels=(8, 8))
    save_model(named, tmp_path / "named.safetensors", hierarchy=h)
    assert type(load_model(tmp_path / "named.safetensors", h)) is PyGDecoder


def test_a_compiled_module_is_refused_naming_the_module_it_wraps(tmp_path):
    """It was refused as a module 'of another class than its config names', without the way out."""
    model = pca_model(31)
    with pytest.raises(TypeError, match=r"^model: expected the module itself, got OptimizedModule, a torch.compile'd "
                                        r"module: save the module it wraps, model._orig_mod$"):
        save_model(torch.compile(model), tmp_path / "m.safetensors")
    save_model(torch.compile(model)._orig_mod, tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").exists()


def test_a_file_of_another_format_is_named_and_a_truncated_one_is_not_mistaken(tmp_path):
    """A saved hierarchy given as a model said 'header of 193340853072 bytes announced'; a truncated model whose
    header length begins with 0x80 must not be called a pickle."""
    import struct

    import numpy as np

    from mesh_decoder.errors import ModelFileError
    from mesh_decoder.model_files import read_model_meta

    np.savez(tmp_path / "h.npz", a=np.arange(3))
    with pytest.raises(ModelFileError, match=r"h\.npz: not a safetensors model file: it looks like a zip archive"):
        read_model_meta(tmp_path / "h.npz")
    for size in (128, 264):  # first byte 0x80 (a pickle's), then 0x08 (an ONNX file's)
        cut = tmp_path / f"cut{size}.safetensors"
        cut.write_bytes(struct.pack("<Q", size) + b'{"__metadata__": {"mesh')
        with pytest.raises(ModelFileError, match=rf"cut{size}\.safetensors: truncated or not a model file: header of "
                                                 rf"{size} bytes announced"):
            read_model_meta(cut)


def _own_registry(monkeypatch):
    """The registrations a test makes are undone after it."""
    import mesh_decoder.model_files as model_files

    monkeypatch.setattr(model_files, "_REGISTRY", dict(model_files._REGISTRY))


def test_a_registered_decoder_of_ones_own_saves_and_loads_inside_a_joint_decoder_and_an_autoencoder(
        tmp_path, monkeypatch):
    """Nested configs resolved through a closed list: a joint decoder or autoencoder holding a registered
    decoder of one's own was written, then never loaded ("expected 'class' to be one of [...]")."""
    _own_registry(monkeypatch)
    from mesh_decoder.nn import JointDecoder, MeshAutoencoder, SpiralDecoder, SpiralEncoder
    from tests.nn.conftest import make_synthetic_hierarchy

    class OwnSpiralDecoder(SpiralDecoder):
        """A user's decoder: the same network under its own class name."""

    register_model(OwnSpiralDecoder)
    h = make_synthetic_hierarchy()
    torch.manual_seed(52)
    joint = JointDecoder.from_hierarchy(h, "mesh", decoder=OwnSpiralDecoder, latent_size=5, channels=(8, 12)).eval()
    assert type(joint.decoder) is OwnSpiralDecoder and joint.config()["decoder"]["class"] == "OwnSpiralDecoder"
    auto = MeshAutoencoder(SpiralEncoder.from_hierarchy(h, latent_size=5, channels=(8, 12)),
                           OwnSpiralDecoder.from_hierarchy(h, latent_size=5, channels=(8, 12))).eval()
    z = torch.randn(3, 5, generator=torch.Generator().manual_seed(53))
    for name, model in (("joint", joint), ("auto", auto)):
        save_model(model, tmp_path / f"{name}.safetensors", hierarchy=h)
        loaded = load_model(tmp_path / f"{name}.safetensors", h)
        assert type(loaded.decoder) is OwnSpiralDecoder
        assert_same_state(model, loaded)
        with torch.no_grad():
            for got, want in zip(*(m(z) if name == "joint" else (m.decode(z),) for m in (loaded, model))):
                if got is not None:
                    assert torch.equal(got, want)
    class Unregistered(SpiralDecoder):
        pass

    joint = JointDecoder.from_hierarchy(h, "mesh", decoder=Unregistered, latent_size=5, channels=(8, 12))
    with pytest.raises(ValueError, match=r"^model: its part 'Unregistered' \(.*Unregistered\) is not a registered "
                                         r"model class, so the file could not be loaded; call mesh_decoder\."
                                         r"model_files\.register_model\(Unregistered\) first$"):
        save_model(joint, tmp_path / "unregistered.safetensors", hierarchy=h)
    assert not (tmp_path / "unregistered.safetensors").exists()

    class OwnSpiralDecoder(SpiralDecoder):  # another class of the registered name
        pass

    joint = JointDecoder.from_hierarchy(h, "mesh", decoder=OwnSpiralDecoder, latent_size=5, channels=(8, 12))
    with pytest.raises(ValueError, match=r"^model: its part 'OwnSpiralDecoder' is .*OwnSpiralDecoder, but that name "
                                         r"is registered to .*OwnSpiralDecoder: the file would load as that one$"):
        save_model(joint, tmp_path / "other.safetensors", hierarchy=h)
    with pytest.raises(ValueError, match=r"^decoder: expected one of \['ChebDecoder', 'PyGDecoder', 'SpiralDecoder'\]"
                                         r", a GraphDecoder subclass or the name one is registered under"):
        JointDecoder.from_hierarchy(h, "mesh", decoder="NoSuchDecoder", latent_size=5, channels=(8, 12))


def test_register_model_refuses_a_name_taken_by_another_class(monkeypatch):
    """register_model replaced any name in silence, a built-in one too: saved SpiralDecoder files then failed to
    load ('expected class MeanDecoder, got SpiralDecoder')."""
    _own_registry(monkeypatch)
    from mesh_decoder.nn import SpiralDecoder

    class Imposter(SpiralDecoder):
        pass

    with pytest.raises(ValueError, match=r"^name: 'SpiralDecoder' is registered to mesh_decoder\.nn\.decoders\."
                                         r"SpiralDecoder \(built in\); give .*Imposter another name \(its "
                                         r"config\(\)\['class'\], which for the decoders is the class's own name\)"):
        register_model(Imposter, name="SpiralDecoder")
    assert register_model(SpiralDecoder) is SpiralDecoder  # the same class again: taken
    with pytest.raises(ValueError, match=r"^name: 'ToyGraphModel' is registered to .*ToyGraphModel; give "):
        register_model(Imposter, name="ToyGraphModel")

    def define():  # a notebook cell defining its class again: the new definition replaces the old
        class Cell(SpiralDecoder):
            pass
        return Cell

    first, again = define(), define()
    assert register_model(first) is first and register_model(again) is again
    from mesh_decoder.model_files import model_class

    assert model_class("Cell") is again
    with pytest.raises(ValueError, match=r"^needs_hierarchy: 'SpiralDecoder' is built in with needs_hierarchy=True, "
                                         r"got False$"):
        register_model(SpiralDecoder, needs_hierarchy=False)
    from mesh_decoder.pca import PCAModel

    assert register_model(PCAModel) is PCAModel  # a built-in without a hierarchy, registered again: taken
    with pytest.raises(ValueError, match=r"unknown model class 'NoSuchModel'; expected one of \[.*\] \(a class of "
                                         r"one's own: import its module and call mesh_decoder\.model_files\."
                                         r"register_model\(ItsClass\) before loading\)$"):
        model_class("NoSuchModel")


def test_registering_a_class_again_with_another_needs_hierarchy_takes_the_new_value(monkeypatch, tmp_path):
    """A class registered once more with needs_hierarchy=False kept the first registration's True in silence:
    save_model still asked for a hierarchy."""
    _own_registry(monkeypatch)

    class Standalone(nn.Module):
        def __init__(self, size):
            super().__init__()
            self.size = size
            self.fc = nn.Linear(size, 3)

        def config(self):
            return {"class": "Standalone", "size": self.size}

        @classmethod
        def from_config(cls, config, hierarchy=None):
            return cls(config["size"])

    torch.manual_seed(50)
    model = Standalone(4)
    register_model(Standalone)
    with pytest.raises(ValueError, match=r"^hierarchy: Standalone is built on a mesh hierarchy"):
        save_model(model, tmp_path / "refused.safetensors")
    register_model(Standalone, needs_hierarchy=False)
    register_model(Standalone)  # again, as a notebook cell run twice: keeps False
    save_model(model, tmp_path / "standalone.safetensors")
    loaded = load_model(tmp_path / "standalone.safetensors")
    assert torch.equal(loaded.fc.weight, model.fc.weight)
