import json
import re
import sys

import numpy as np
import pytest
import torch

from mesh_decoder.mesh.templates import face_template
from mesh_decoder.render import OrthographicCamera, figures, render

pytest.importorskip("matplotlib", reason="figures need matplotlib (pip install matplotlib)")
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def face():
    return face_template(500, seed=0)


def _png(path) -> np.ndarray:
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(path))


def test_tile_images_layout():
    rng = np.random.default_rng(50)
    imgs = rng.random((5, 3, 4, 3))
    grid = figures.tile_images(imgs, ncols=2, padding=1, background=0.5)
    assert grid.shape == (3 * 3 + 4, 2 * 4 + 3, 3)
    for k in range(5):
        r, c = divmod(k, 2)
        assert np.array_equal(grid[1 + r * 4 : 1 + r * 4 + 3, 1 + c * 5 : 1 + c * 5 + 4], imgs[k])
    assert np.all(grid[0] == 0.5) and np.all(grid[-4:, -5:] == 0.5)  # padding and the empty sixth tile
    with pytest.raises(ValueError, match=r"expected shape \(B, H, W, C\)"):
        figures.tile_images(imgs[0])


def test_tile_images_uint8_padding_scales_float_background():
    rng = np.random.default_rng(52)
    imgs = rng.integers(0, 256, size=(3, 4, 5, 3), dtype=np.uint8)
    grid = figures.tile_images(imgs, ncols=2, padding=2)
    assert grid.dtype == np.uint8
    assert np.all(grid[:2] == 255) and np.all(grid[:, :2] == 255)  # default 1.0: white
    assert np.array_equal(grid[2:6, 2:7], imgs[0])
    assert np.all(figures.tile_images(imgs, padding=1, background=0.5)[0] == 128)
    assert np.all(figures.tile_images(imgs, padding=1, background=0.0)[0] == 0)
    assert np.all(figures.tile_images(imgs, padding=1, background=7)[0] == 7)  # an int is a uint8 value
    floats = figures.tile_images(imgs / 255.0, padding=1)
    assert np.all(floats[0] == 1.0)


def test_tile_images_refuses_a_background_integer_images_cannot_hold():
    rng = np.random.default_rng(53)
    imgs = rng.integers(0, 256, size=(3, 4, 5, 3), dtype=np.uint8)
    # numpy wrapped 300 to 44 (and -1 to 255, 2.5 to 2, NaN to 0) in the padding
    for bad in (300.0, 300, np.int64(300), -1, -1.0, 2.5, float("nan"), 256):
        with pytest.raises(ValueError, match=rf"^background: expected a whole number in \[0, 255\] for uint8 images "
                                             rf"\(or a float in \[0, 1\], scaled to 0\.\.255\), got {re.escape(repr(bad))}$"):
            figures.tile_images(imgs, padding=1, background=bad)
    small = rng.integers(-100, 100, size=(2, 3, 3, 1), dtype=np.int8)
    with pytest.raises(ValueError, match=r"^background: expected a whole number in \[-128, 127\] for int8 images, "
                                         r"got 200$"):
        figures.tile_images(small, background=200)
    # values in range still fill the padding exactly; floats are used as given
    assert np.all(figures.tile_images(imgs, padding=1, background=255)[0] == 255)
    assert np.all(figures.tile_images(imgs, padding=1, background=np.uint8(9))[0] == 9)
    assert np.all(figures.tile_images(small, padding=1, background=-128)[0] == -128)
    assert np.all(figures.tile_images(imgs / 255.0, padding=1, background=300.0)[0] == 300.0)


def test_face_grid_renders_each_face_with_one_camera(face, tmp_path):
    g = torch.Generator().manual_seed(51)
    v = torch.tensor(face.vertices) + 3 * torch.randn(3, *face.vertices.shape, generator=g, dtype=torch.float64)
    grid = figures.face_grid(v, face.faces, tmp_path / "grid.png", ncols=3, image_size=40, padding=2)
    assert grid.shape == (44, 3 * 40 + 4 * 2, 3)
    cam = OrthographicCamera.fit(v, 40)
    for b in range(3):
        tile = grid[2 : 42, 2 + b * 42 : 42 + b * 42]
        expect = render(v[b], torch.tensor(face.faces), cam, 40).image[0].permute(1, 2, 0).numpy()
        assert np.allclose(tile, np.clip(expect, 0, 1), atol=1e-6)
    png = _png(tmp_path / "grid.png")
    assert png.shape == grid.shape
    assert np.abs(png / 255.0 - grid).max() <= 0.5 / 255 + 1e-6


def test_figure_helpers_write_pngs(face, tmp_path):
    from mesh_decoder.nn.texture import TexelGather
    from mesh_decoder.mesh.uv import texel_map

    colors = torch.tensor(0.5 + 0.4 * np.sin(face.vertices / 30.0))
    tex = TexelGather.from_texel_map(texel_map(face, 32, dtype=torch.float64), num_vertices=500)(colors)
    p = figures.texture_and_mesh(tex, face.vertices, face.faces, face.uv, face.uv_faces, tmp_path / "tex.png",
                                 image_size=64, title="texture")
    assert _png(p).shape[1] > _png(p).shape[0]  # two panels side by side

    levels = [(face.vertices, face.faces), (face.vertices[:3] * 1.0, np.array([[0, 1, 2]]))]
    p = figures.hierarchy_levels(levels, tmp_path / "levels.png", image_size=48)
    assert _png(p).ndim == 3

    spirals = np.tile(np.arange(9), (500, 1))
    spirals[:, 0] = np.arange(500)
    spirals[7, 5:] = 500  # padding is skipped
    p = figures.spirals_on_mesh(face.vertices, face.faces, spirals, [7, 100], tmp_path / "spirals.png",
                                image_size=64)
    assert _png(p).ndim == 3
    with pytest.raises(ValueError, match=r"centers: expected vertex ids in \[0, 500\)"):
        figures.spirals_on_mesh(face.vertices, face.faces, spirals, [500], tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"spirals: expected integer indices of shape \(500, S\)"):
        figures.spirals_on_mesh(face.vertices, face.faces, spirals[:10], [1], tmp_path / "bad.png")
    # a negative entry was skipped as if it were padding; a spiral of padding only was an IndexError
    rng = np.random.default_rng(53)
    negative = spirals.copy()
    negative[int(rng.integers(500)), int(rng.integers(1, 9))] = -int(rng.integers(1, 500))
    with pytest.raises(ValueError, match=r"spirals: expected indices >= 0 \(>= 500 for padding\), got -"):
        figures.spirals_on_mesh(face.vertices, face.faces, negative, [7], tmp_path / "bad.png")
    padding = spirals.copy()
    padding[100] = 500 + int(rng.integers(0, 3))
    with pytest.raises(ValueError, match=r"in the spirals of centers \[100\], got only padding"):
        figures.spirals_on_mesh(face.vertices, face.faces, padding, [7, 100], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()

    err = np.random.default_rng(52).random((2, 500))
    p = figures.error_heatmap(np.stack([face.vertices] * 2), face.faces, err, tmp_path / "err.png",
                              titles=["a", "b"], image_size=48, label="mm")
    assert _png(p).ndim == 3
    with pytest.raises(ValueError, match=r"errors: expected shape \(B, 500\)"):
        figures.error_heatmap(face.vertices, face.faces, err[:, :10], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    for vmin, vmax in ((1.0, 0.5), (0.5, 0.5), (0.0, float("nan"))):  # were replaced by vmin + 1 without a word
        with pytest.raises(ValueError, match=r"vmax: expected a finite number above vmin="):
            figures.error_heatmap(face.vertices, face.faces, err, tmp_path / "bad.png", vmin=vmin, vmax=vmax)
    with pytest.raises(ValueError, match=r"vmin: expected a finite number, got inf"):
        figures.error_heatmap(face.vertices, face.faces, err, tmp_path / "bad.png", vmin=float("inf"))
    assert not (tmp_path / "bad.png").exists()


def test_error_heatmap_colours_follow_the_errors(face, tmp_path):
    """Vertices with a high error are drawn in the top colour of the map."""
    import matplotlib.pyplot as plt

    err = np.where(face.vertices[:, 0] > 0, 1.0, 0.0)  # right half of the face (image right) at vmax
    imgs = figures.render_images(face.vertices, face.faces, colors=torch.tensor(plt.get_cmap("viridis")(err)[:, :3]),
                                 image_size=64, light=None)
    top = np.array(plt.get_cmap("viridis")(1.0)[:3])
    low = np.array(plt.get_cmap("viridis")(0.0)[:3])
    assert np.abs(imgs[0, 32, 50] - top).max() < 1e-6
    assert np.abs(imgs[0, 32, 12] - low).max() < 1e-6


def test_figures_refuse_names_other_than_png_before_drawing(face, tmp_path, monkeypatch):
    rng = np.random.default_rng(54)
    v = face.vertices + rng.normal(scale=0.5, size=face.vertices.shape)
    rows = [{"decoder": "spiral", "dtype": "float32", "mode": "eager", "batch": 1, "status": "ok",
             "meshes_per_s": 100.0}]
    drawn = []
    monkeypatch.setattr(figures, "render_images", lambda *a, **k: drawn.append(1))
    calls = {
        "face_grid": lambda p: figures.face_grid(v[None], face.faces, p, image_size=16),
        "texture_and_mesh": lambda p: figures.texture_and_mesh(torch.rand(3, 8, 8), v, face.faces, face.uv,
                                                               face.uv_faces, p, image_size=16),
        "hierarchy_levels": lambda p: figures.hierarchy_levels([(v, face.faces)], p, image_size=16),
        "spirals_on_mesh": lambda p: figures.spirals_on_mesh(v, face.faces, np.tile(np.arange(3), (500, 1)), [0], p),
        "error_heatmap": lambda p: figures.error_heatmap(v, face.faces, rng.random(500), p, image_size=16),
        "benchmark_plot": lambda p: figures.benchmark_plot(rows, p),
    }
    for name, call in calls.items():
        # these wrote PNG bytes into a .pdf / .jpg file before
        for suffix in (".pdf", ".jpg"):
            with pytest.raises(ValueError, match=rf"{name}{suffix}: expected a file name ending in \.png"):
                call(tmp_path / f"{name}{suffix}")
    assert drawn == [] and sorted(tmp_path.iterdir()) == []


def test_benchmark_plot_from_rows_and_json(tmp_path):
    rows = [{"decoder": "spiral", "dtype": "float32", "mode": "eager", "batch": b, "status": "ok",
             "meshes_per_s": 100.0 * b ** 0.7} for b in (1, 4, 16)]
    assert _png(figures.benchmark_plot(rows, tmp_path / "a.png")).ndim == 3
    (tmp_path / "r.json").write_text(json.dumps({"rows": rows}))
    assert _png(figures.benchmark_plot(tmp_path / "r.json", tmp_path / "b.png", title="t")).ndim == 3
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json: expected a JSON object with a 'rows' list"):
        figures.benchmark_plot(tmp_path / "bad.json", tmp_path / "c.png")
    # a missing result file is a FileNotFoundError (and a ValueError), naming it
    with pytest.raises(FileNotFoundError, match=r"missing.json: expected a benchmark result JSON, found none") as info:
        figures.benchmark_plot(tmp_path / "missing.json", tmp_path / "d.png")
    assert isinstance(info.value, ValueError) and not (tmp_path / "d.png").exists()


def test_missing_matplotlib_says_how_to_install(face, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        figures.hierarchy_levels([(face.vertices, face.faces)], tmp_path / "x.png")
    # the grid needs no matplotlib
    figures.face_grid(face.vertices, face.faces, tmp_path / "grid.png", image_size=16)
    assert (tmp_path / "grid.png").exists()


def test_tile_images_refuses_renders_channels_first():
    """render().image is (B, C, H, W): tiled as given it became an (18, W', 192) 'image' that save_png refused."""
    rng = np.random.default_rng(3)
    first = torch.from_numpy(rng.random((4, 3, 16, 20)))  # (B, C, H, W)
    with pytest.raises(ValueError, match=r"images: expected channels last \(B, H, W, C\), got shape \(4, 3, 16, 20\), "
                                         r"which looks like channels first .* pass images.permute\(0, 2, 3, 1\)"):
        figures.tile_images(first)
    tiled = figures.tile_images(first.permute(0, 2, 3, 1), ncols=2, padding=0)
    assert tiled.shape == (32, 40, 3)
    np.testing.assert_array_equal(tiled[:16, 20:], first[1].permute(1, 2, 0).numpy())
    assert figures.tile_images(rng.random((2, 5, 6, 2)), padding=0).shape == (5, 12, 2)  # two channels, not refused
