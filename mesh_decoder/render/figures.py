"""Pictures: grids of decoded faces, a texture beside its mesh, hierarchy levels, spirals, error maps, benchmarks.

Every picture is rendered by :func:`mesh_decoder.render.render` (no OpenGL, no
display) and written atomically as PNG. :func:`render_images`, :func:`tile_images`
and :func:`face_grid` need only torch (PNGs are written with Pillow when it is installed, else with
:func:`~mesh_decoder.render.render.save_png`'s own encoder); the figures with
axes, titles, colour bars and overlays import matplotlib when called and raise an
``ImportError`` that says ``pip install matplotlib`` when it is missing. The
benchmark plot re-uses :func:`mesh_decoder.bench.report.plot_throughput`.

Unless a camera is given, meshes are seen by an orthographic camera from ``+z``
(the built-in face looks towards ``+z``) framing all of them together
(:meth:`~mesh_decoder.render.cameras.OrthographicCamera.fit`), so a grid of faces
shares one scale.
"""

from __future__ import annotations

import io
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .._atomic import atomic_write
from .._checks import non_negative_int, positive_int
from .cameras import Camera, OrthographicCamera, ndc_to_pixel
from .rasterize import as_faces, as_vertices
from .render import _check_png_path, render, save_png
from .shading import DirectionalLight

__all__ = [
    "render_images",
    "tile_images",
    "face_grid",
    "texture_and_mesh",
    "hierarchy_levels",
    "spirals_on_mesh",
    "error_heatmap",
    "benchmark_plot",
]


# ------------------------------------------------------------------------------ helpers
def _plt():
    from ..bench.report import require_matplotlib

    return require_matplotlib()


def _save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return os.fspath(path)


def _figure_path(path) -> None:
    """A figure's required PNG name: not ``None``, ending in ``.png`` (``ValueError`` before any drawing)."""
    if path is None:
        raise ValueError("path: expected a file name for the figure, got None")
    _check_png_path(path)


def _tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    return x


def _default_camera(vertices: torch.Tensor, image_size, camera: Camera | None) -> Camera:
    if camera is not None:
        if not isinstance(camera, Camera):
            raise TypeError(f"camera: expected a mesh_decoder.render Camera, got {type(camera).__name__}")
        return camera
    return OrthographicCamera.fit(vertices, image_size)


def render_images(
    vertices,
    faces,
    *,
    colors=None,
    texture=None,
    uv=None,
    uv_faces=None,
    camera: Camera | None = None,
    image_size=256,
    light: DirectionalLight | None = DirectionalLight(),
    background=None,
) -> np.ndarray:
    """Render a batch of meshes to float images in ``[0, 1]`` (no gradient).

    Args:
        vertices: ``(B, V, 3)`` or ``(V, 3)`` (tensor or array).
        faces: ``(F, 3)``.
        colors, texture, uv, uv_faces, light, background: as in :func:`~mesh_decoder.render.render`
            (default background white in every channel).
        camera: default a shared orthographic camera from ``+z`` framing every mesh.
        image_size: ``int`` or ``(H, W)``. Default ``256``.

    Returns:
        ``(B, H, W, C)`` float32 array.
    """
    v = as_vertices(_tensor(vertices, "vertices")).detach()
    f = as_faces(_tensor(faces, "faces"), int(v.shape[1]), v.device)
    cam = _default_camera(v, image_size, camera)
    tex = None if texture is None else _tensor(texture, "texture").detach()
    col = None if colors is None else _tensor(colors, "colors").detach()
    with torch.no_grad():
        out = render(v, f, cam, image_size, colors=col, texture=tex, uv=uv, uv_faces=uv_faces, light=light,
                     background=background)
    return out.image.permute(0, 2, 3, 1).clamp(0.0, 1.0).float().cpu().numpy()  # (B, H, W, C)


def tile_images(images: np.ndarray, ncols: int | None = None, padding: int = 4, background: float = 1.0) -> np.ndarray:
    """Tile ``(B, H, W, C)`` images row by row into one ``(H', W', C)`` image.

    Args:
        images: ``(B, H, W, C)`` array (or tensor, channels last; ``C`` is 1, 3 or 4 for
            :func:`save_png`). A channels-first ``(B, C, H, W)`` batch (``render()``'s) is refused.
        ncols: images per row (an int >= 1); default ``ceil(sqrt(B))``.
        padding: pixels between and around tiles. Default ``4``.
        background: value of the padding. Default ``1.0`` (white). For uint8 images a
            float in ``[0, 1]`` is scaled to ``0..255`` (``1.0`` -> 255); other values are used as given,
            and for integer images must be whole numbers in the dtype's range (``ValueError``
            otherwise: numpy would wrap 300 to 44 in uint8).
    """
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim != 4:
        raise ValueError(f"images: expected shape (B, H, W, C), got {arr.shape}")
    B, H, W, C = arr.shape
    if C not in (1, 3, 4) and H in (1, 3, 4):  # render()'s image is (B, C, H, W)
        raise ValueError(f"images: expected channels last (B, H, W, C), got shape {arr.shape}, which looks like "
                         f"channels first (B, C, H, W) with C = {H}, as render() returns; pass "
                         "images.permute(0, 2, 3, 1) (a tensor) or images.transpose(0, 2, 3, 1) (an array)")
    if B == 0:
        raise ValueError("images: expected at least one image, got 0")
    # a float (2.7 was cut to 2), a bool or a string is a TypeError, 0 or -1 a ValueError
    ncols = int(math.ceil(math.sqrt(B))) if ncols is None else positive_int(ncols, "ncols")
    padding = non_negative_int(padding, "padding")
    ncols = min(ncols, B)
    nrows = int(math.ceil(B / ncols))
    if arr.dtype == np.uint8 and isinstance(background, (float, np.floating)) and 0.0 <= background <= 1.0:
        background = int(round(float(background) * 255.0))
    if np.issubdtype(arr.dtype, np.integer):
        _check_integer_fill(background, arr.dtype)
    out = np.full((nrows * H + (nrows + 1) * padding, ncols * W + (ncols + 1) * padding, C), background,
                  dtype=arr.dtype)
    for k in range(B):
        r, c = divmod(k, ncols)
        y0 = padding + r * (H + padding)
        x0 = padding + c * (W + padding)
        out[y0 : y0 + H, x0 : x0 + W] = arr[k]
    return out


def _check_integer_fill(background, dtype: np.dtype) -> None:
    """Refuse (``ValueError``) a ``background`` that an integer image of ``dtype`` cannot hold exactly."""
    info = np.iinfo(dtype)
    scaled = " (or a float in [0, 1], scaled to 0..255)" if dtype == np.uint8 else ""
    try:
        values = np.asarray(background, dtype=np.float64)
    except (TypeError, ValueError):
        values = None
    if values is None or not (np.isfinite(values).all() and (values == np.round(values)).all()
                              and (values >= info.min).all() and (values <= info.max).all()):
        raise ValueError(f"background: expected a whole number in [{info.min}, {info.max}] for {dtype} images{scaled}, "
                         f"got {background!r}")


def face_grid(
    vertices,
    faces,
    path: str | os.PathLike | None = None,
    *,
    ncols: int | None = None,
    image_size=192,
    colors=None,
    texture=None,
    uv=None,
    uv_faces=None,
    camera: Camera | None = None,
    light: DirectionalLight | None = DirectionalLight(),
    padding: int = 4,
) -> np.ndarray:
    """Render decoded faces and tile them into a grid (e.g. the output of a decoder for a batch of codes).

    Args:
        vertices: ``(B, V, 3)`` decoded positions.
        faces: ``(F, 3)`` template faces.
        path: PNG to write (a name ending in ``.png``), or ``None``.
        ncols: faces per row (default ``ceil(sqrt(B))``).
        image_size: size of each tile. Default ``192``.
        colors / texture, uv, uv_faces: per-vertex colours ``(B, V, 3)`` or a UV
            texture ``(B, 3, H_t, W_t)`` (e.g. a ``JointOutput``'s). Default untextured.
        camera: default a shared orthographic camera framing all faces.
        light: default ``DirectionalLight()``; ``None`` for unlit colours.
        padding: pixels between tiles. Default ``4``.

    Returns:
        The grid, ``(H', W', 3)`` float in ``[0, 1]``.
    """
    if path is not None:
        _check_png_path(path)
    imgs = render_images(vertices, faces, colors=colors, texture=texture, uv=uv, uv_faces=uv_faces, camera=camera,
                         image_size=image_size, light=light)
    grid = tile_images(imgs, ncols=ncols, padding=padding)
    if path is not None:
        save_png(grid, path)
    return grid


def _visible_edges(face_id: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unique edges ``(E, 2)`` of the faces that cover at least one pixel."""
    visible = torch.unique(face_id[face_id >= 0])  # (F_vis,)
    f = faces[visible]  # (F_vis, 3)
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(dim=1).values  # (3 F_vis, 2)
    return torch.unique(e, dim=0)


def _pixel_positions(camera: Camera, vertices: torch.Tensor, image_size) -> np.ndarray:
    """``(V, 3)`` world points -> ``(V, 2)`` pixel (column, row) for plotting over ``imshow``."""
    ndc = camera[0].project(vertices.unsqueeze(0))[0]  # (V, 3)
    return ndc_to_pixel(ndc, image_size)[:, :2].detach().cpu().double().numpy()


def texture_and_mesh(
    texture,
    vertices,
    faces,
    uv,
    uv_faces=None,
    path: str | os.PathLike | None = None,
    *,
    image_size=512,
    camera: Camera | None = None,
    show_layout: bool = True,
    title: str | None = None,
) -> str:
    """A UV texture (with its triangle layout) beside the mesh rendered with it.

    Args:
        texture: ``(3, H_t, W_t)`` (or ``(1, 3, H_t, W_t)``) UV texture, row 0 at ``v = 1``.
        vertices: ``(V, 3)``.
        faces: ``(F, 3)``.
        uv: ``(T, 2)`` UVs (``v`` from the bottom).
        uv_faces: ``(F, 3)``, default ``faces``.
        path: the PNG to write (required; a name ending in ``.png``).
        image_size: render size. Default ``512``.
        camera: default orthographic from ``+z``.
        show_layout: draw the UV triangles over the texture. Default ``True``.
        title: optional figure title.

    Returns:
        ``path``.
    """
    _figure_path(path)
    tex = _tensor(texture, "texture").detach()
    if tex.dim() == 4:
        if tex.shape[0] != 1:
            raise ValueError(f"texture: expected one texture, got a batch of {int(tex.shape[0])}")
        tex = tex[0]
    if tex.dim() != 3:
        raise ValueError(f"texture: expected shape (C, H, W), got {tuple(tex.shape)}")
    v = as_vertices(_tensor(vertices, "vertices"))[:1]
    f = as_faces(_tensor(faces, "faces"), int(v.shape[1]), v.device)
    uv_t = _tensor(uv, "uv").detach()
    uvf = f if uv_faces is None else as_faces(_tensor(uv_faces, "uv_faces"), int(uv_t.shape[0]), v.device)
    img = render_images(v, f, texture=tex, uv=uv_t, uv_faces=uvf, camera=camera, image_size=image_size)[0]
    plt = _plt()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 5))
    try:
        ax0.imshow(tex.permute(1, 2, 0).clamp(0, 1).float().cpu().numpy(), extent=(0, 1, 0, 1), origin="upper",
                   interpolation="nearest")
        if show_layout:
            uv_np = uv_t.double().cpu().numpy()
            ax0.triplot(uv_np[:, 0], uv_np[:, 1], uvf.cpu().numpy(), color="black", linewidth=0.15, alpha=0.5)
        ax0.set_xlabel("u")
        ax0.set_ylabel("v")
        ax0.set_title(f"UV texture {int(tex.shape[1])} x {int(tex.shape[2])}")
        ax1.imshow(img)
        ax1.set_axis_off()
        ax1.set_title("rendered with the texture")
        if title:
            fig.suptitle(title)
        return _save_figure(fig, path)
    finally:
        plt.close(fig)


def hierarchy_levels(
    hierarchy,
    path: str | os.PathLike | None = None,
    *,
    image_size=256,
    wireframe: bool = True,
    camera: Camera | None = None,
) -> str:
    """Render every level of a mesh hierarchy side by side, with its visible edges.

    Args:
        hierarchy: a :class:`~mesh_decoder.hierarchy.MeshHierarchy`, or a sequence of
            ``(vertices (V_l, 3), faces (F_l, 3))`` pairs.
        path: the PNG to write (required; a name ending in ``.png``).
        image_size: size of each panel. Default ``256``.
        wireframe: draw the edges of the visible faces. Default ``True``.
        camera: default one orthographic camera framing the finest level.

    Returns:
        ``path``.
    """
    _figure_path(path)
    if hasattr(hierarchy, "levels"):
        levels = [(lvl.vertices, lvl.faces) for lvl in hierarchy.levels]
    else:
        levels = list(hierarchy)
    if not levels:
        raise ValueError("hierarchy: expected at least one level, got none")
    meshes = []
    for i, item in enumerate(levels):
        if len(item) != 2:
            raise ValueError(f"hierarchy: level {i}: expected (vertices, faces), got {len(item)} items")
        v = as_vertices(_tensor(item[0], f"level {i} vertices")).detach()[:1].double()
        f = as_faces(_tensor(item[1], f"level {i} faces"), int(v.shape[1]), v.device)
        meshes.append((v, f))
    cam = _default_camera(meshes[0][0], image_size, camera)
    plt = _plt()
    n = len(meshes)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    try:
        from matplotlib.collections import LineCollection

        for i, (v, f) in enumerate(meshes):
            with torch.no_grad():
                out = render(v, f, cam, image_size)
            ax = axes[0, i]
            ax.imshow(out.image[0].permute(1, 2, 0).clamp(0, 1).float().numpy())
            if wireframe:
                edges = _visible_edges(out.fragments.face_id[0], f)  # (E, 2)
                xy = _pixel_positions(cam, v[0], image_size)  # (V, 2)
                segs = xy[edges.numpy()]  # (E, 2, 2)
                ax.add_collection(LineCollection(segs, colors="black", linewidths=0.3, alpha=0.6))
            ax.set_axis_off()
            ax.set_title(f"level {i}: {int(v.shape[1]):,} vertices, {int(f.shape[0]):,} faces", fontsize=9)
        return _save_figure(fig, path)
    finally:
        plt.close(fig)


def spirals_on_mesh(
    vertices,
    faces,
    spirals,
    centers: Sequence[int],
    path: str | os.PathLike | None = None,
    *,
    image_size=512,
    camera: Camera | None = None,
    title: str | None = None,
) -> str:
    """Draw the spirals of a few vertices as coloured polylines over a render of the mesh.

    Each spiral ``spirals[c]`` is drawn through the projected positions of its
    vertices in order, starting with a dot at the centre vertex ``c``; padding
    entries (index ``>= V``, the virtual zero vertex) are skipped.

    Args:
        vertices: ``(V, 3)``.
        faces: ``(F, 3)``.
        spirals: ``(V, S)`` int64 spiral indices (e.g. ``hierarchy.levels[0].spirals``).
        centers: vertex ids whose spirals are drawn.
        path: the PNG to write (required; a name ending in ``.png``).
        image_size: default ``512``.
        camera: default orthographic from ``+z`` framing the mesh.
        title: optional title.

    Returns:
        ``path``.
    """
    _figure_path(path)
    v = as_vertices(_tensor(vertices, "vertices")).detach()[:1]
    f = as_faces(_tensor(faces, "faces"), int(v.shape[1]), v.device)
    V = int(v.shape[1])
    sp = _tensor(spirals, "spirals")
    if sp.dim() != 2 or sp.shape[0] != V or sp.is_floating_point():
        raise ValueError(f"spirals: expected integer indices of shape ({V}, S), got {tuple(sp.shape)} {sp.dtype}")
    if sp.numel() and int(sp.min()) < 0:
        raise ValueError(f"spirals: expected indices >= 0 (>= {V} for padding), got {int(sp.min())}")
    centers = [int(c) for c in centers]
    bad = [c for c in centers if not 0 <= c < V]
    if bad or not centers:
        raise ValueError(f"centers: expected vertex ids in [0, {V}), got {centers}")
    empty = [c for c in centers if not bool((sp[c] < V).any())]
    if empty:
        raise ValueError(f"spirals: expected at least one vertex id below {V} in the spirals of centers {empty}, "
                         "got only padding")
    cam = _default_camera(v, image_size, camera)
    img = render_images(v, f, camera=cam, image_size=image_size)[0]
    xy = _pixel_positions(cam, v[0], image_size)  # (V, 2)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 6))
    try:
        ax.imshow(img)
        cmap = plt.get_cmap("tab10")
        for k, c in enumerate(centers):
            seq = sp[c].tolist()
            seq = [s for s in seq if 0 <= s < V]
            pts = xy[seq]  # (S', 2)
            color = cmap(k % 10)
            ax.plot(pts[:, 0], pts[:, 1], "-", color=color, linewidth=1.2, label=f"vertex {c} ({len(seq)})")
            ax.plot(pts[:, 0], pts[:, 1], ".", color=color, markersize=3)
            ax.plot(pts[0, 0], pts[0, 1], "o", color=color, markersize=6, markeredgecolor="black")
        ax.set_axis_off()
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(title or f"spirals (length {int(sp.shape[1])}) of {len(centers)} vertices")
        return _save_figure(fig, path)
    finally:
        plt.close(fig)


def error_heatmap(
    vertices,
    faces,
    errors,
    path: str | os.PathLike | None = None,
    *,
    vmin: float = 0.0,
    vmax: float | None = None,
    cmap: str = "viridis",
    label: str = "per-vertex error",
    titles: Sequence[str] | None = None,
    image_size=256,
    camera: Camera | None = None,
    light: DirectionalLight | None = DirectionalLight(ambient=0.6, diffuse=0.4),
) -> str:
    """Per-vertex errors as colours on the meshes, with one shared colour bar.

    Args:
        vertices: ``(B, V, 3)`` or ``(V, 3)`` (e.g. the ground truth or the reconstruction).
        faces: ``(F, 3)``.
        errors: ``(B, V)`` or ``(V,)`` non-negative values (e.g. Euclidean error in mm).
        path: the PNG to write (required; a name ending in ``.png``).
        vmin: lower end of the colour scale. Default ``0``.
        vmax: upper end, above ``vmin``; default the largest error (``vmin + 1`` when no
            error exceeds ``vmin``).
        cmap: matplotlib colour map. Default ``"viridis"``.
        label: colour-bar label.
        titles: one title per mesh, optional.
        image_size: panel size. Default ``256``.
        camera: default a shared orthographic camera.
        light: default a soft light (ambient 0.6) so colours stay readable.

    Returns:
        ``path``.
    """
    _figure_path(path)
    v = as_vertices(_tensor(vertices, "vertices")).detach()
    err = _tensor(errors, "errors").detach().double()
    if err.dim() == 1:
        err = err.unsqueeze(0)  # (1, V)
    if err.dim() != 2 or err.shape[1] != v.shape[1]:
        V = int(v.shape[1])
        raise ValueError(f"errors: expected shape (B, {V}) or ({V},), got {tuple(err.shape)}")
    B = max(int(v.shape[0]), int(err.shape[0]))
    if int(v.shape[0]) not in (1, B) or int(err.shape[0]) not in (1, B):
        raise ValueError(
            f"vertices, errors: expected batch sizes 1 or {B}, got {int(v.shape[0])} and {int(err.shape[0])}"
        )
    if not torch.isfinite(err).all():
        raise ValueError("errors: expected finite values, got NaN or inf")
    vmin = float(vmin)
    if not math.isfinite(vmin):
        raise ValueError(f"vmin: expected a finite number, got {vmin}")
    if vmax is not None and not (math.isfinite(float(vmax)) and float(vmax) > vmin):
        raise ValueError(f"vmax: expected a finite number above vmin={vmin}, got {vmax}")
    top = float(err.max()) if vmax is None else float(vmax)
    if not top > vmin:  # every error at or below vmin (e.g. all zero): any scale above vmin shows them alike
        top = vmin + 1.0
    if titles is not None and len(titles) != B:
        raise ValueError(f"titles: expected {B} titles, got {len(titles)}")
    plt = _plt()
    import matplotlib.colors as mcolors

    norm = mcolors.Normalize(vmin=vmin, vmax=top)
    colormap = plt.get_cmap(cmap)
    rgb = torch.from_numpy(colormap(norm(err.numpy()))[..., :3]).to(v.dtype)  # (B|1, V, 3)
    imgs = render_images(v.expand(B, -1, -1), faces, colors=rgb.expand(B, -1, -1), camera=camera,
                         image_size=image_size, light=light)
    fig, axes = plt.subplots(1, B, figsize=(3.2 * B + 1.0, 3.6), squeeze=False)
    try:
        for i in range(B):
            ax = axes[0, i]
            ax.imshow(imgs[i])
            ax.set_axis_off()
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
            else:
                ax.set_title(f"mean {float(err[min(i, err.shape[0] - 1)].mean()):.3g}, "
                             f"max {float(err[min(i, err.shape[0] - 1)].max()):.3g}", fontsize=9)
        mappable = plt.cm.ScalarMappable(norm=norm, cmap=colormap)
        fig.colorbar(mappable, ax=list(axes[0]), label=label, shrink=0.8)
        return _save_figure(fig, path)
    finally:
        plt.close(fig)


def benchmark_plot(source: str | os.PathLike | Sequence[Mapping[str, Any]], path: str | os.PathLike,
                   title: str = "") -> str:
    """Meshes/s against batch size from a benchmark result (re-uses :func:`mesh_decoder.bench.report.plot_throughput`).

    Args:
        source: a result JSON written by the benchmark harness (an object with
            ``"rows"``), or the list of row dicts itself.
        path: the PNG to write (a name ending in ``.png``).
        title: optional title.

    Returns:
        ``path``.
    """
    from ..bench.report import plot_throughput

    _figure_path(path)
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, encoding="utf-8") as handle:
                payload = json.load(handle)
        except FileNotFoundError:
            from ..errors import MissingFileError

            raise MissingFileError(source, "expected a benchmark result JSON, found none") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"{os.fspath(source)}: expected a benchmark result JSON, could not read it ({exc})"
            ) from exc
        if not isinstance(payload, Mapping) or not isinstance(payload.get("rows"), list):
            raise ValueError(f"{os.fspath(source)}: expected a JSON object with a 'rows' list")
        rows = payload["rows"]
    else:
        rows = list(source)
    if not all(isinstance(r, Mapping) for r in rows):
        raise TypeError("source: expected result rows as mappings")
    plot_throughput(rows, path, title=title)
    return os.fspath(path)
