"""A differentiable rasteriser in torch, shading, PNG output and figures.

Rendering needs no OpenGL and no display: :func:`rasterize` finds the nearest face
and its barycentrics at every pixel with vectorised torch code, :func:`interpolate`
and :func:`sample_texture` turn per-vertex colours or a UV texture into pixels,
:func:`shade_lambert` lights them and :func:`render` does all of it. Figures
(:mod:`mesh_decoder.render.figures`) import matplotlib lazily; the PyTorch3D
converters (:mod:`mesh_decoder.render.pytorch3d_interop`) import PyTorch3D only
when they build or read its objects.

Rendering runs eagerly. Under ``torch.autocast`` the cameras project in the
vertices' dtype (a bf16 projection moved vertices by fractions of a pixel and
flipped depth tests). Keep :func:`render` outside ``torch.compile``'d code: how
many candidate chunks the rasteriser loops over depends on the image's coverage,
so a compiled render recompiles at most steps until ``torch._dynamo``'s recompile
limit; compile the decoder and leave the rasteriser eager.
"""

from .cameras import (
    Camera,
    OrthographicCamera,
    PerspectiveCamera,
    WeakPerspectiveCamera,
    image_size_pair,
    ndc_to_pixel,
    pixel_to_ndc,
)
from .figures import (
    benchmark_plot,
    error_heatmap,
    face_grid,
    hierarchy_levels,
    render_images,
    spirals_on_mesh,
    texture_and_mesh,
    tile_images,
)
from .interpolate import interpolate, sample_texture
from .pytorch3d_interop import (
    MeshTensors,
    from_pytorch3d,
    texture_from_pytorch3d_maps,
    texture_to_pytorch3d_maps,
    to_pytorch3d,
    uv_from_pytorch3d,
    uv_to_pytorch3d,
)
from .rasterize import Fragments, barycentric_coordinates, rasterize
from .render import RenderOutput, read_image, render, save_png, to_image_array
from .shading import DirectionalLight, shade_lambert, vertex_normals

__all__ = [
    # cameras
    "Camera",
    "OrthographicCamera",
    "PerspectiveCamera",
    "WeakPerspectiveCamera",
    "image_size_pair",
    "ndc_to_pixel",
    "pixel_to_ndc",
    # rasterisation, interpolation, shading, rendering
    "Fragments",
    "rasterize",
    "barycentric_coordinates",
    "interpolate",
    "sample_texture",
    "DirectionalLight",
    "vertex_normals",
    "shade_lambert",
    "RenderOutput",
    "render",
    "read_image",
    "save_png",
    "to_image_array",
    # figures
    "render_images",
    "tile_images",
    "face_grid",
    "texture_and_mesh",
    "hierarchy_levels",
    "spirals_on_mesh",
    "error_heatmap",
    "benchmark_plot",
    # PyTorch3D interop
    "MeshTensors",
    "to_pytorch3d",
    "from_pytorch3d",
    "texture_to_pytorch3d_maps",
    "texture_from_pytorch3d_maps",
    "uv_to_pytorch3d",
    "uv_from_pytorch3d",
]
