r"""Fitting by analysis-by-synthesis: a latent code, a similarity transform and a camera.

The fitted face in *target space* is

.. math::
    X(\theta) = s\, R\, \mathrm{dec}(z) + t, \qquad z = \mu + L w,

a decoded mesh moved by a similarity transform (scale ``s``, rotation ``R``,
translation ``t``), and the fit minimises

.. math::
    \sum_{k} \lambda_k\, E_k(X) + \lambda_{prior}\, \tfrac12 \bigl(\lVert w\rVert^2 + \lVert w_c\rVert^2\bigr)

over the free parameter groups, where the data terms :math:`E_k`
(:mod:`mesh_decoder.fit.losses`) depend on the target and the prior is the
decoder's Gaussian (:class:`~mesh_decoder.fit.adapters.GaussianPrior`, optimised in
whitened coordinates ``w``; ``w_c`` is the colour latent of a PCA colour model).
This is the analysis-by-synthesis fitting of Blanz & Vetter ("A Morphable Model
for the Synthesis of 3D Faces", SIGGRAPH 1999) with any decoder in place of the
linear model.

**Targets and target space.**

* :class:`~mesh_decoder.fit.targets.MeshTarget` (registered mesh): vertex loss; target space
  is the mesh's. The pose starts from the Umeyama alignment of the prior-mean shape. A
  target with per-vertex colours adds the colour loss (mean squared RGB difference of
  corresponding vertices, with the vertex weights) when the decoder has colours: the
  ``color`` group fits a PCA colour latent to them (the default schedule frees it with the
  shape), a joint decoder's colours follow its latent.
* :class:`~mesh_decoder.fit.targets.PointCloudTarget` (scan): iterative closest
  points with correspondences recomputed every ``correspondence_every`` iterations:
  a point-to-point term from every scan point to its closest point on the fitted
  surface, and a point-to-plane term in both directions (scan to surface, and every
  fitted vertex to its nearest scan point, along the normal: a vertex-to-point
  distance would pull the boundary inwards and bias the scale). Starts from the
  identity rotation with the centroids and RMS radii matched.
* :class:`~mesh_decoder.fit.targets.LandmarkTarget`: the template's landmarks projected
  through a camera. With ``camera="weak_perspective"`` (scaled orthographic), target
  space is in pixels: ``x`` right and ``y`` up from the image centre, ``z`` towards
  the viewer; ``s`` is in pixels per model unit and ``t_z`` is unobservable (kept 0).
  With ``camera="perspective"``, target space is in model units (millimetres) with
  ``y`` up and the pinhole at the origin looking along ``-z``
  (:class:`~mesh_decoder.render.PerspectiveCamera` with ``R = diag(1, -1, -1)``,
  principal point at the image centre, focal length ``f`` in pixels); ``s`` stays 1
  in the default stages. Either way ``R = I`` is a frontal face. The pose starts
  from the closed-form affine camera of the landmarks of the prior-mean shape,
  projected onto scaled rotations.
* :class:`~mesh_decoder.fit.targets.ImageTarget`: the photometric loss through the
  differentiable renderer (:func:`mesh_decoder.render.render`, Lambert shading with a
  fitted directional light), plus its landmarks when given. Colours come from the
  decoder (a PCA colour model, or a joint decoder's colours or UV texture); a
  shape-only decoder gets one fitted albedo colour. The renderer has no silhouette
  gradients, so landmarks should hold the outline in place.

**Parameter groups** (a :class:`Stage` frees some of them): ``rotation``,
``translation``, ``scale``, ``latent``, ``color`` (colour latent or albedo; photographs
and registered meshes with per-vertex colours or a texture map, a stage that names it for a
target without usable colour is refused), ``light``
(direction, ambient and diffuse) and ``focal`` (perspective camera); aliases
``pose`` (rotation, translation, scale — no scale for the perspective camera),
``shape`` (latent), ``appearance`` (color, light: those of them the target has; a coloured
mesh's appearance is its colour), ``camera`` (focal) and ``all`` (every
group that applies to the target). Every group is parameterised at unit scale: the latent
whitened by the prior, scale and focal length as log-factors, the translation in units of
the initial face radius in target space, the rotation as an axis-angle update of the
initial rotation (or its 6D representation), so one learning rate suits all groups.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn

from .._atomic import write_json
from .._checks import check_bool, non_negative_int, real_number
from ..mesh.container import Mesh
from ..render.cameras import Camera, OrthographicCamera, PerspectiveCamera, ndc_to_pixel
from ..render.render import RenderOutput, render
from ..render.shading import DirectionalLight, light_direction, vertex_normals
from .adapters import Decoded, FitDecoder, as_fit_decoder
from .losses import (
    Correspondences,
    face_normals,
    find_correspondences,
    landmark_loss,
    photometric_loss,
    point_to_plane_loss,
    point_to_point_loss,
    surface_points,
    vertex_loss,
)
from .pose import (
    apply_similarity,
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rotation_6d,
    rotation_6d_to_matrix,
    umeyama,
)
from .targets import ImageTarget, LandmarkTarget, MeshTarget, PointCloudTarget, real_tensor

__all__ = [
    "PARAM_GROUPS",
    "GROUP_ALIASES",
    "LOSS_TERMS",
    "DEFAULT_WEIGHTS",
    "DEFAULT_PRIOR_WEIGHTS",
    "Stage",
    "default_stages",
    "FitProblem",
    "FitResult",
    "fit",
]

#: Parameter groups a :class:`Stage` can free.
PARAM_GROUPS = ("rotation", "translation", "scale", "latent", "color", "light", "focal")
#: Group aliases (``pose`` has no ``scale`` for the perspective camera).
GROUP_ALIASES: dict[str, tuple[str, ...]] = {
    "pose": ("rotation", "translation", "scale"),
    "shape": ("latent",),
    "appearance": ("color", "light"),
    "camera": ("focal",),
    "all": PARAM_GROUPS,
}
#: Loss terms; which ones a fit has depends on its target.
LOSS_TERMS = ("vertex", "color", "point_to_point", "point_to_plane", "landmark", "photometric", "prior")
#: Default weights of the data terms (the prior has its own, :data:`DEFAULT_PRIOR_WEIGHTS`). The geometric
#: terms' weights, these or given ones, are per squared model unit: a fit divides them by the scale from model to
#: target that it estimates from the target (the terms are in target units), so a target in metres fits as in
#: millimetres.
DEFAULT_WEIGHTS: dict[str, float] = {
    "vertex": 1.0,  # per squared model unit
    "color": 100.0,  # per squared RGB unit: 0.01 RMS colour error weighs like a 0.1 RMS vertex error
    "point_to_point": 1.0,
    "point_to_plane": 1.0,
    "landmark": 1.0,  # per squared pixel
    "photometric": 2000.0,  # per squared RGB unit: 0.01 RMS error weighs like a 0.45-pixel landmark error
}
#: The data terms in (squared) target units.
_GEOMETRIC_TERMS = ("vertex", "point_to_point", "point_to_plane")
#: Default prior weight per target kind (the data terms' units differ).
DEFAULT_PRIOR_WEIGHTS: dict[str, float] = {"mesh": 1e-3, "points": 1e-3, "landmarks": 0.1, "image": 0.1}

_CAMERAS = {"weak_perspective": "weak_perspective", "weak": "weak_perspective", "perspective": "perspective"}
#: Target space of the perspective camera: y up, looking along -z (OpenCV axes flip y and z).
_FLIP_YZ = (1.0, -1.0, -1.0)
#: Largest ``|R^T R - I|`` entry accepted in a starting rotation matrix (float32 round-off passes).
_ROTATION_TOLERANCE = 1e-4


# ============================================================================ stages
def _expand_groups(groups: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for g in groups:
        if not isinstance(g, str):
            raise TypeError(f"groups: expected names, got {type(g).__name__}")
        names = GROUP_ALIASES.get(g, (g,))
        for n in names:
            if n not in PARAM_GROUPS:
                raise ValueError(
                    f"groups: unknown parameter group {g!r}; expected names from {list(PARAM_GROUPS)} "
                    f"or aliases {sorted(GROUP_ALIASES)}"
                )
            if n not in out:
                out.append(n)
    return tuple(out)


def _check_terms(terms: str | Sequence[str]) -> tuple[str, ...]:
    """Loss term names (one string is one name) as a tuple; ``ValueError`` naming those not in :data:`LOSS_TERMS`."""
    terms = (terms,) if isinstance(terms, str) else tuple(terms)
    unknown = [t for t in terms if t not in LOSS_TERMS]
    if unknown:
        raise ValueError(f"terms: unknown loss terms {unknown}; expected names from {list(LOSS_TERMS)}")
    return terms


@dataclass(frozen=True)
class Stage:
    """One stage of a fit schedule: which parameter groups are free, for how long, how fast.

    Args:
        groups: parameter group names or aliases (module docstring), e.g. ``("pose",)``
            or ``("pose", "shape")``. ``"pose"`` includes ``scale`` except for the
            perspective camera (where it stays 1 unless ``"scale"`` is named).
        iterations: optimiser steps (``>= 0``).
        lr: Adam's initial learning rate (every group is parameterised at unit
            scale, module docstring). Default ``0.05``.
        terms: the loss terms used (names in :data:`LOSS_TERMS`); default ``None``:
            all the target's terms. Terms the target does not have are ignored, but a
            stage must use at least one of the target's terms (``"prior"`` counts).
        final_lr_factor: the learning rate at the end of the stage, relative to
            ``lr``; Adam's rate follows a cosine decay from ``lr`` to there. Default ``0.1``.
        name: shown on the progress bar. Default ``""``.
    """

    groups: tuple[str, ...]
    iterations: int
    lr: float = 0.05
    terms: tuple[str, ...] | None = None
    final_lr_factor: float = 0.1
    name: str = ""

    def __post_init__(self) -> None:
        try:
            groups = (self.groups,) if isinstance(self.groups, str) else tuple(self.groups)
        except TypeError:
            raise TypeError(f"groups: expected parameter group names, got {type(self.groups).__name__}") from None
        if not groups:
            raise ValueError("groups: expected at least one parameter group, got none")
        _expand_groups(groups)  # validates
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "iterations", non_negative_int(self.iterations, "iterations"))
        lr = real_number(self.lr)
        if lr is None or not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")
        object.__setattr__(self, "lr", lr)
        factor = real_number(self.final_lr_factor)
        if factor is None or not 0 < factor <= 1:
            raise ValueError(f"final_lr_factor: expected a number in (0, 1], got {self.final_lr_factor!r}")
        object.__setattr__(self, "final_lr_factor", factor)
        if self.terms is not None:
            object.__setattr__(self, "terms", _check_terms(self.terms))

    @classmethod
    def parse(cls, spec: str) -> "Stage":
        """A stage from ``"GROUPS:ITERATIONS[:LR]"``, groups joined by ``+``.

        Example: ``Stage.parse("pose+shape:300:0.02")``.
        """
        if not isinstance(spec, str):
            raise TypeError(f"spec: expected a string, got {type(spec).__name__}")
        parts = spec.split(":")
        if not 2 <= len(parts) <= 3 or not parts[0]:
            raise ValueError(f"stage {spec!r}: expected GROUPS:ITERATIONS[:LR], e.g. 'pose+shape:300:0.02'")
        try:
            iterations = int(parts[1])
            lr = float(parts[2]) if len(parts) > 2 and parts[2] else 0.05
        except ValueError:
            raise ValueError(
                f"stage {spec!r}: expected an integer iteration count and a number learning rate") from None
        return cls(tuple(parts[0].split("+")), iterations, lr)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description."""
        return {"groups": list(self.groups), "iterations": self.iterations, "lr": float(self.lr),
                "terms": None if self.terms is None else list(self.terms),
                "final_lr_factor": self.final_lr_factor, "name": self.name}


def default_stages(kind: str, camera: str = "weak_perspective", has_landmarks: bool = True,
                   has_colors: bool = False) -> list[Stage]:
    """The default schedule for a target kind: pose first, then pose and shape (then appearance for images).

    Args:
        kind: ``"mesh"``, ``"points"``, ``"landmarks"`` or ``"image"``.
        camera: ``"weak_perspective"`` (default) or ``"perspective"``.
        has_landmarks: for images, whether landmarks are given (default ``True``).
        has_colors: for registered meshes, whether the fit has a colour latent to fit to the
            target's colours (default ``False``); the shape stage then frees ``color`` too.
    """
    pose: tuple[str, ...] = ("rotation", "translation") if _camera_name(camera) == "perspective" else ("pose",)
    if kind == "mesh":
        shape = ("pose", "shape", "color") if has_colors else ("pose", "shape")
        return [Stage(("pose",), 60, 0.05, name="pose"), Stage(shape, 300, 0.05, name="shape")]
    if kind == "points":
        return [Stage(("pose",), 100, 0.03, name="pose"), Stage(("pose", "shape"), 500, 0.03, name="shape")]
    if kind == "landmarks":
        return [Stage(pose, 80, 0.05, name="pose"), Stage(pose + ("shape",), 250, 0.05, name="shape")]
    if kind == "image":
        if has_landmarks:
            return [
                Stage(pose, 60, 0.05, terms=("landmark", "prior"), name="pose"),
                Stage(pose + ("shape",), 150, 0.05, terms=("landmark", "prior"), name="shape"),
                Stage(("appearance",), 40, 0.05, name="appearance"),
                Stage(pose + ("shape", "appearance"), 300, 0.03, name="photometric"),
            ]
        return [
            Stage(pose + ("appearance",), 100, 0.03, name="pose"),
            Stage(pose + ("shape", "appearance"), 300, 0.03, name="photometric"),
        ]
    raise ValueError(f"kind: expected 'mesh', 'points', 'landmarks' or 'image', got {kind!r}")


def _camera_name(camera: str) -> str:
    if not isinstance(camera, str) or camera not in _CAMERAS:
        raise ValueError(f"camera: expected 'weak_perspective' or 'perspective', got {camera!r}")
    return _CAMERAS[camera]


# ============================================================================ result
@dataclass
class FitResult:
    """The outcome of :func:`fit`.

    Attributes:
        latent: ``(Z,)`` fitted latent code ``z``.
        color_latent: ``(Z_c,)`` fitted colour latent (PCA colour model), or ``None``.
        scale: ``()`` similarity scale ``s``.
        rotation: ``(3, 3)`` rotation matrix ``R``.
        translation: ``(3,)`` translation ``t``.
        camera: the fitted camera for landmark and image targets (mapping target space
            to the image), else ``None``.
        light: the fitted :class:`~mesh_decoder.render.DirectionalLight` (image targets), else ``None``.
        albedo: ``(3,)`` fitted albedo of a shape-only decoder (image targets), else ``None``.
        vertices: ``(V, 3)`` the fitted mesh in target space, :math:`s R\\,\\mathrm{dec}(z) + t`.
        model_vertices: ``(V, 3)`` the decoded mesh in model space, :math:`\\mathrm{dec}(z)`.
        colors: ``(V, 3)`` decoded per-vertex colours, or ``None``.
        faces: ``(F, 3)`` the template's faces, or ``None`` without a template.
        losses: term name -> per-iteration values (unweighted; ``"total"`` is the
            weighted sum), each measured before that iteration's update; ``nan``
            where the iteration's stage did not use the term.
        final_losses: the terms at the fitted parameters.
        weights: term name -> the weight its loss has in ``"total"``
            (:meth:`FitProblem.weight`: a geometric term's weight is per squared
            model unit, divided here by the target's scale squared), so that
            ``total = sum(weights[k] * final_losses[k])`` over the terms.
        stage_starts: the iteration at which each stage began. A stage whose loss ended
            above its first value (without correspondence updates) ends at its
            lowest-loss iterate, so ``losses`` may hold higher values after it.
        stages: the stages run.
        target_kind: ``"mesh"``, ``"points"``, ``"landmarks"`` or ``"image"``.
        rotation_representation: ``"axis_angle"`` or ``"6d"``.
        image_size: ``(H, W)`` for landmark and image targets, else ``None``.
        seconds: wall time of the fit.
        template: the template mesh (UVs and landmarks of :meth:`to_mesh`), or ``None``.
        target: the target fitted.

    Shapes:
        ``latent (Z,)``, ``rotation (3, 3)``, ``translation (3,)``, ``vertices (V, 3)``.
    """

    latent: torch.Tensor
    color_latent: torch.Tensor | None
    scale: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    camera: Camera | None
    light: DirectionalLight | None
    albedo: torch.Tensor | None
    vertices: torch.Tensor
    model_vertices: torch.Tensor
    colors: torch.Tensor | None
    faces: torch.Tensor | None
    losses: dict[str, list[float]]
    final_losses: dict[str, float]
    stage_starts: list[int]
    stages: list[Stage]
    target_kind: str
    rotation_representation: str
    image_size: tuple[int, int] | None = None
    seconds: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)
    template: Mesh | None = field(default=None, repr=False)
    target: Any = field(default=None, repr=False)

    @property
    def axis_angle(self) -> torch.Tensor:
        """``(3,)`` the rotation as an axis-angle vector (radians)."""
        return matrix_to_axis_angle(self.rotation.double()).to(self.rotation.dtype)

    @property
    def rotation_params(self) -> torch.Tensor:
        """The rotation in the fit's representation: axis-angle ``(3,)`` or 6D ``(6,)``."""
        return self.axis_angle if self.rotation_representation == "axis_angle" else matrix_to_rotation_6d(self.rotation)

    @property
    def focal(self) -> float | None:
        """Focal length in pixels of a perspective camera, else ``None``."""
        if isinstance(self.camera, PerspectiveCamera):
            return float(self.camera.K[0, 0])
        return None

    def transform(self, points: torch.Tensor) -> torch.Tensor:
        """Model-space points to target space with the fitted similarity. Shapes: ``(N, 3) -> (N, 3)``."""
        return apply_similarity(points.to(self.rotation), self.scale, self.rotation, self.translation)

    def project_landmarks(self, names: Sequence[str] | None = None) -> torch.Tensor:
        """Pixel positions ``(K, 2)`` of the fitted template landmarks (image fits only).

        Args:
            names: landmark names; default the target's landmarks.
        """
        if self.camera is None or self.image_size is None:
            raise ValueError("project_landmarks: this fit has no camera (fit landmarks or an image to get one)")
        if self.template is None:
            raise ValueError("project_landmarks: this fit has no template (landmark indices unknown)")
        if names is None:
            lm = self.target.landmarks if isinstance(self.target, ImageTarget) else self.target
            if not isinstance(lm, LandmarkTarget):
                raise ValueError("project_landmarks: give names=; the target has no landmarks")
            names = lm.names
        if isinstance(names, str):
            raise TypeError(f"names: expected a sequence of landmark names, got one string {names!r}")
        index = _landmark_index(self.template, names)
        ndc = self.camera.project(self.vertices[index].unsqueeze(0))  # (1, K, 3)
        return ndc_to_pixel(ndc, self.image_size)[0, :, :2]  # (K, 2)

    def to_mesh(self) -> Mesh:
        """The fitted mesh in target space (template faces, UVs and landmarks; colours clipped to ``[0, 1]``)."""
        if self.faces is None:
            raise ValueError("to_mesh: this fit has no template faces (pass template= to fit)")
        colors = None if self.colors is None else self.colors.detach().double().clamp(0, 1).cpu().numpy()
        t = self.template
        return Mesh(
            self.vertices.detach().double().cpu().numpy(),
            self.faces.cpu().numpy().copy(),  # self.faces shares memory with the template's faces
            uv=None if t is None or t.uv is None else t.uv.copy(),  # its own arrays, not the template's
            uv_faces=None if t is None or t.uv_faces is None else t.uv_faces.copy(),
            colors=colors,
            landmarks={} if t is None else dict(t.landmarks),
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary: parameters, final losses and their weights, per-iteration losses, stages."""
        out: dict[str, Any] = {
            "target_kind": self.target_kind,
            "latent": self.latent.tolist(),
            "color_latent": None if self.color_latent is None else self.color_latent.tolist(),
            "scale": float(self.scale),
            "rotation": self.rotation.tolist(),
            "rotation_representation": self.rotation_representation,
            "rotation_params": self.rotation_params.tolist(),
            "rotation_angle_deg": float(self.axis_angle.norm()) * 180.0 / math.pi,
            "translation": self.translation.tolist(),
            "camera": _describe_camera(self.camera),
            "image_size": None if self.image_size is None else list(self.image_size),
            "light": None if self.light is None else {
                "direction": [float(v) for v in torch.as_tensor(self.light.direction).tolist()],
                "ambient": float(self.light.ambient), "diffuse": float(self.light.diffuse)},
            "albedo": None if self.albedo is None else self.albedo.tolist(),
            "final_losses": dict(self.final_losses),
            "weights": dict(self.weights),
            "losses": {k: list(v) for k, v in self.losses.items()},
            "stage_starts": list(self.stage_starts),
            "stages": [s.describe() for s in self.stages],
            "seconds": self.seconds,
        }
        return out

    def save_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`summary` as standard JSON, atomically.

        A loss not evaluated at a step (NaN in :attr:`losses`) is written as ``null``.
        """
        write_json(path, self.summary(), indent=1)

    def render(self, image_size=None, light: DirectionalLight | None = None) -> RenderOutput:
        """Render the fitted mesh with its camera (or, without one, a frontal orthographic view of target space).

        Args:
            image_size: default the fit's image size, or 512 without one.
            light: default the fitted light, or :class:`~mesh_decoder.render.DirectionalLight`.
        """
        if self.faces is None:
            raise ValueError("render: this fit has no template faces (pass template= to fit)")
        size = image_size if image_size is not None else (self.image_size or 512)
        camera = self.camera
        verts = self.vertices.detach()
        if camera is None:
            camera = OrthographicCamera.fit(verts, size)
        colors = None if self.colors is None else self.colors.detach().clamp(0, 1)
        if colors is None and self.albedo is not None:
            colors = self.albedo.detach().clamp(0, 1).expand(verts.shape[0], 3)
        with torch.no_grad():
            return render(verts, self.faces, camera, size, colors=colors,
                          light=light if light is not None else (self.light or DirectionalLight()))

    def save_overlay(
        self,
        path: str | os.PathLike,
        image: torch.Tensor | np.ndarray | None = None,
        alpha: float = 0.6,
        draw_landmarks: bool = True,
        size: int = 512,
    ) -> str:
        """Write a PNG of the fitted mesh over the image (via the renderer).

        For image and landmark fits the mesh is drawn with the fitted camera over
        ``image`` (default: the target photograph, or white), blended with
        ``alpha``; with ``draw_landmarks`` the target landmarks are drawn as green
        squares and the fitted ones as red. For mesh and scan fits the fitted mesh is
        drawn in a frontal orthographic view of target space with the target points
        (up to 4000) as blue dots.

        Args:
            path: the PNG file.
            image: ``(3, H, W)`` float in ``[0, 1]`` or ``(H, W, 3)`` uint8; default the target's.
            alpha: opacity of the mesh. Default ``0.6``.
            draw_landmarks: default ``True``.
            size: image side for fits without a camera. Default ``512``.

        Returns:
            ``path`` as a string.
        """
        from ..render.render import save_png

        a = real_number(alpha)
        if a is None or not 0.0 <= a <= 1.0:
            raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}")
        alpha = a
        if self.camera is not None:
            h, w = self.image_size
            background = _background_image(image, self.target, (h, w))  # (H, W, 3) float
            out = self.render((h, w))
            rendered = out.image[0].permute(1, 2, 0).double().cpu().numpy()  # (H, W, 3)
            mask = out.mask[0].cpu().numpy()[..., None]  # (H, W, 1)
            canvas = np.where(mask, alpha * rendered + (1 - alpha) * background, background)
            if draw_landmarks:
                lm = self.target.landmarks if isinstance(self.target, ImageTarget) else self.target
                if isinstance(lm, LandmarkTarget) and self.template is not None:
                    _draw_points(canvas, lm.points.numpy(), (0.1, 0.85, 0.1), 2)
                    _draw_points(canvas, self.project_landmarks(lm.names).detach().double().cpu().numpy(),
                                 (0.95, 0.1, 0.1), 1)
        else:
            verts = self.vertices.detach()
            camera = OrthographicCamera.fit(verts, size)
            out = self.render(size)
            canvas = out.image[0].permute(1, 2, 0).double().cpu().numpy()
            points = None
            if isinstance(self.target, PointCloudTarget):
                points = self.target.points
            elif isinstance(self.target, MeshTarget):
                points = self.target.vertices
            if points is not None and draw_landmarks:
                step = max(1, int(points.shape[0]) // 4000)
                pts = points[::step].to(verts)
                pix = ndc_to_pixel(camera.project(pts.unsqueeze(0)), size)[0, :, :2]  # (N, 2)
                _draw_points(canvas, pix.double().cpu().numpy(), (0.15, 0.3, 0.95), 1 if len(pts) <= 1000 else 0)
        return save_png(np.clip(canvas, 0.0, 1.0), path)


def _describe_camera(camera: Camera | None) -> dict[str, Any] | None:
    if camera is None:
        return None
    if isinstance(camera, PerspectiveCamera):
        return {"type": "perspective", "K": camera.K[0].tolist(), "R": camera.R[0].tolist(),
                "t": camera.t[0].tolist(), "image_size": list(camera.image_size)}
    if isinstance(camera, OrthographicCamera):
        return {"type": "weak_perspective", "ndc_scale": camera.scale[0].tolist()}
    return {"type": type(camera).__name__}


def _background_image(image, target, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` float64 in ``[0, 1]``: the given image, the target photograph, or white."""
    h, w = size
    if image is None:
        if isinstance(target, ImageTarget):
            return target.image.permute(1, 2, 0).numpy().copy()
        return np.ones((h, w, 3))
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        arr = (t if t.dtype == torch.uint8 else t.double()).numpy()
    else:
        arr = np.asarray(image)
    # (3, H, W) to channels-last; a (3, 3, 3) image is channels-last when uint8 (the documented layouts)
    if arr.shape == (3, h, w) and (arr.shape != (h, w, 3) or arr.dtype != np.uint8):
        arr = arr.transpose(1, 2, 0)
    arr = arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float64)
    if arr.shape != (h, w, 3):
        raise ValueError(f"image: expected an RGB image of {h} x {w} pixels, got shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:  # drawn clipped: 0..255 floats all but white
        raise ValueError(f"image: expected floats in [0, 1] or uint8, got range [{arr.min():g}, {arr.max():g}]"
                         + (" (8-bit values? divide them by 255, or pass a uint8 array)" if arr.max() > 1 else ""))
    return arr.copy()


def _draw_points(canvas: np.ndarray, points: np.ndarray, color, radius: int) -> None:
    """Draw filled squares of side ``2 radius + 1`` at pixel positions ``(x, y)`` (in place)."""
    h, w = canvas.shape[:2]
    for x, y in np.round(points).astype(np.int64):
        r0, r1 = max(y - radius, 0), min(y + radius + 1, h)
        c0, c1 = max(x - radius, 0), min(x + radius + 1, w)
        if r0 < r1 and c0 < c1:
            canvas[r0:r1, c0:c1] = color


def _landmark_index(template: Mesh, names: Sequence[str]) -> torch.Tensor:
    missing = [n for n in names if n not in template.landmarks]
    if missing:
        raise ValueError(
            f"landmarks: {missing[:5]}{'...' if len(missing) > 5 else ''} are not template landmarks; "
            f"expected names from {sorted(template.landmarks)}"
        )
    return torch.tensor([template.landmarks[n] for n in names], dtype=torch.int64)


# =========================================================================== problem
@contextlib.contextmanager
def _frozen(module: nn.Module | None) -> Iterator[None]:
    """Freeze a module's parameters and put it in eval mode; restore both afterwards."""
    if module is None:
        yield
        return
    flags = [(p, p.requires_grad) for p in module.parameters()]
    was_training = module.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        module.eval()
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


def _init_tensor(value: Any, key: str, size: int | None = None) -> torch.Tensor:
    """A starting value of ``init`` (numbers: a tensor, array, list or scalar) as a detached real tensor; with
    ``size``, flattened to that many values. ``TypeError`` / ``ValueError`` name ``init KEY``."""
    t = real_tensor(value, f"init {key}")
    if size is None:
        return t
    if t.numel() != size:
        raise ValueError(f"init {key}: expected {size} value{'s' if size != 1 else ''}, got {t.numel()} "
                         f"(shape {tuple(t.shape)})")
    return t.reshape(size)


def _as_matrix(rotation: Any, dtype, device) -> torch.Tensor:
    given = _init_tensor(rotation, "rotation").to(device=device, dtype=torch.float64)
    shape = tuple(given.shape)
    if shape == (3,):
        r = axis_angle_to_matrix(given)
    elif shape == (6,):
        r = rotation_6d_to_matrix(given)
    elif shape == (3, 3):
        r = given
    else:
        raise ValueError(
            f"init rotation: expected a (3, 3) matrix, a (3,) axis-angle or a (6,) 6D vector, got {shape}")
    det = float(torch.linalg.det(r))
    err = float((r.T @ r - torch.eye(3, dtype=r.dtype, device=r.device)).abs().max())
    if not (err <= _ROTATION_TOLERANCE and det > 0):
        if shape == (6,):  # Gram-Schmidt of a zero or parallel pair gives no rotation
            raise ValueError("init rotation: expected a 6D rotation, two non-zero and non-parallel 3-vectors, "
                             f"got {[round(v, 6) for v in given.tolist()]}")
        raise ValueError(f"init rotation: expected a rotation matrix (R^T R = I, det +1), got det {det:.6g}, "
                         f"max |R^T R - I| {err:.3g}")
    return r.to(dtype)


def _check_finite(name: str, value: Any) -> None:
    """Raise if a starting value (a number, array, tensor or light) holds NaN or infinity."""
    parts = [value.direction, value.ambient, value.diffuse] if isinstance(value, DirectionalLight) else [value]
    for part in parts:
        try:
            t = part.detach() if isinstance(part, torch.Tensor) else torch.as_tensor(np.asarray(part, dtype=np.float64))
        except (TypeError, ValueError):
            continue  # not numbers: reported where the value is used
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: expected finite values, got NaN or infinity")


def _start_direction(light: DirectionalLight, name: str) -> torch.Tensor:
    """The ``(3,)`` float64 CPU direction of a starting light: 3 numbers, not all zero, else ``ValueError``
    naming ``name``. Plain numbers were checked when the light was built; a tensor is read here, once."""
    d = light.direction
    if not isinstance(d, torch.Tensor):
        return torch.as_tensor(light_direction(d, name))
    t = d.detach().cpu().double()
    if tuple(t.shape) != (3,) or not bool((t != 0).any()):
        raise ValueError(f"{name}: expected a direction of 3 numbers, not all zero, got "
                         f"{t.tolist() if t.numel() <= 6 else tuple(t.shape)}")
    return t


def _non_negative(value: Any, name: str) -> float:
    """A weight: a finite real number ``>= 0`` (numpy and 0-d tensor scalars too, not bools)."""
    w = real_number(value)
    if w is None or not (math.isfinite(w) and w >= 0):
        raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
    return w


def _focal_value(value: Any, name: str) -> float:
    """A focal length in pixels: a real number or a 0-d tensor / array, positive and finite."""
    f = real_number(value)
    if f is None or not (math.isfinite(f) and f > 0):
        raise ValueError(f"{name}: expected a positive number of pixels, got {value!r}")
    return f


class FitProblem:
    """The objective and parameters of one fit (what :func:`fit` optimises).

    Build it with the arguments of :func:`fit`; :meth:`losses` evaluates the loss
    terms at the current parameters, :meth:`parameters` lists the tensors of
    parameter groups, :meth:`run` optimises a schedule and returns a :class:`FitResult`.
    """

    def __init__(
        self,
        decoder: Any,
        target: MeshTarget | PointCloudTarget | LandmarkTarget | ImageTarget,
        *,
        template: Mesh | None = None,
        prior=None,
        prior_weight: float | None = None,
        weights: Mapping[str, float] | None = None,
        rotation: str = "axis_angle",
        camera: str = "weak_perspective",
        focal: float | None = None,
        init: "FitResult | Mapping[str, Any] | None" = None,
        light: DirectionalLight | None = None,
    ) -> None:
        self.decoder: FitDecoder = as_fit_decoder(decoder, prior)
        if not isinstance(target, (MeshTarget, PointCloudTarget, LandmarkTarget, ImageTarget)):
            raise TypeError(
                "target: expected a MeshTarget, PointCloudTarget, LandmarkTarget or ImageTarget, "
                f"got {type(target).__name__}"
            )
        if template is not None and not isinstance(template, Mesh):
            raise TypeError(f"template: expected a mesh_decoder Mesh, got {type(template).__name__}")
        if rotation not in ("axis_angle", "6d"):
            raise ValueError(f"rotation: expected 'axis_angle' or '6d', got {rotation!r}")
        self.target = target
        self.kind: str = target.kind
        self.template = template
        self.rotation_kind = rotation
        self.camera_kind = _camera_name(camera)
        self.dtype = self.decoder.dtype
        self.device = self.decoder.device
        dd = {"dtype": self.dtype, "device": self.device}
        self._dd = dd

        if self.kind in ("points", "landmarks", "image") and template is None:
            raise ValueError(f"template: a {self.kind} target needs the model's template mesh (faces and landmarks)")
        self.faces = None if template is None else torch.as_tensor(template.faces, device=self.device)

        # ---------------------------------------------------------------- weights
        self.weights = dict(DEFAULT_WEIGHTS)
        if weights is not None and not isinstance(weights, Mapping):
            raise TypeError(f"weights: expected a mapping term name -> weight, got {type(weights).__name__}")
        for k, v in (weights or {}).items():
            if k not in DEFAULT_WEIGHTS:
                raise ValueError(f"weights: unknown term {k!r}; expected names from {sorted(DEFAULT_WEIGHTS)} "
                                 "(the prior has prior_weight)")
            self.weights[k] = _non_negative(v, f"weights[{k!r}]")
        pw = DEFAULT_PRIOR_WEIGHTS[self.kind] if prior_weight is None else prior_weight
        self.prior_weight = _non_negative(pw, "prior_weight")

        # ---------------------------------------------------------------- target data
        self.landmarks: LandmarkTarget | None = None
        self.image_size: tuple[int, int] | None = None
        self.target_colors: torch.Tensor | None = None
        if isinstance(target, MeshTarget):
            self.target_vertices = target.vertices.to(**dd)
            self.target_weights = None if target.weights is None else target.weights.to(**dd)
            self.target_colors = None if target.colors is None else target.colors.to(**dd)
        elif isinstance(target, PointCloudTarget):
            self.points = target.points.to(**dd)
            self.point_normals = None if target.normals is None else target.normals.to(**dd)
            self._points_np = target.points.numpy()
            self._tree = cKDTree(self._points_np) if target.model_to_scan else None
            self.correspondences: Correspondences | None = None
        else:
            self.landmarks = target if isinstance(target, LandmarkTarget) else target.landmarks
            self.image_size = target.image_size
        if self.image_size is None and self.camera_kind == "perspective":  # it would be ignored
            raise ValueError(f"camera: a {self.kind} target is fitted in 3D, with no camera; expected the default "
                             "'weak_perspective', got 'perspective'")
        if focal is not None and self.image_size is None:  # it would be ignored
            raise ValueError(f"focal: a {self.kind} target is fitted in 3D, with no camera; leave focal out, "
                             f"got focal={focal!r}")
        if focal is not None and self.camera_kind != "perspective":  # it would be ignored
            raise ValueError(f"focal: only the perspective camera has a focal length; expected camera='perspective' "
                             f"with focal={focal!r}, got camera={camera!r}")
        if self.landmarks is not None:
            self.landmark_index = _landmark_index(template, self.landmarks.names).to(self.device)
            self.landmark_points = self.landmarks.points.to(**dd)
            self.landmark_weights = None if self.landmarks.weights is None else self.landmarks.weights.to(**dd)
        if isinstance(target, ImageTarget):
            self.target_image = target.image.to(**dd)
            self.target_mask = None if target.mask is None else target.mask.to(self.device)

        # ---------------------------------------------------------------- initial state
        with torch.no_grad(), _frozen(self.decoder.module):
            mean_decoded = self.decoder(self.decoder.prior.mean.to(**dd).unsqueeze(0),
                                        None if self.decoder.color_prior is None
                                        else self.decoder.color_prior.mean.to(**dd).unsqueeze(0))
        V = int(mean_decoded.vertices.shape[1])
        if not bool(torch.isfinite(mean_decoded.vertices).all()):
            raise ValueError(f"decoder: expected finite vertices from the prior mean latent, got NaN or inf "
                             f"({self.decoder.name or 'decoder'})")
        if template is not None and template.num_vertices != V:
            raise ValueError(f"template: expected {V} vertices (the decoder's output), got {template.num_vertices}")
        if isinstance(target, MeshTarget) and target.vertices.shape[0] != V:
            raise ValueError(f"target: expected a registered mesh of {V} vertices (the decoder's), "
                             f"got {target.vertices.shape[0]}")
        self.has_colors = mean_decoded.colors is not None
        self.has_texture = mean_decoded.texture is not None and not self.has_colors
        self.terms = self._available_terms()
        if self.kind == "image" and self.has_texture and (template is None or template.uv is None):
            raise ValueError("template: rendering a decoder's UV texture needs the template's UVs")
        self._init_state(mean_decoded.vertices[0], init, focal, light)

    # ------------------------------------------------------------------ set-up
    def _available_terms(self) -> tuple[str, ...]:
        mesh = ["vertex"] + (["color"] if self.target_colors is not None and self.has_colors else [])
        terms = {"mesh": mesh, "points": ["point_to_point", "point_to_plane"], "landmarks": ["landmark"],
                 "image": ["photometric"] + (["landmark"] if self.landmarks is not None else [])}[self.kind]
        return tuple(terms) + ("prior",)

    def color_group_unavailable(self) -> str | None:
        """Why a stage may not name the ``color`` group (or ``appearance``) for this target and decoder: a
        clause saying what is missing and what to do, or ``None`` where colour is fitted (photographs;
        registered meshes with per-vertex colours and a decoder with a colour latent)."""
        if self.kind == "image" or (self.wc is not None and "color" in self.terms):
            return None
        where = ("(colour is fitted to photographs and to registered meshes with per-vertex colours or a texture "
                 "map)")
        if self.kind != "mesh":
            return f"a {self.kind} target carries no colours; leave it out {where}"
        if self.target_colors is None:
            return f"the mesh target has no colours (per-vertex, or of a texture map its file references); leave it " \
                   f"out {where}"
        if not self.has_colors:
            return f"the decoder ({self.decoder.name or 'decoder'}) has no colours; leave it out {where}"
        return ("the decoder's colours come from its latent, which the 'shape' group fits (to the target's "
                "colours too); leave it out")

    def _init_state(self, mean_shape: torch.Tensor, init, focal, light) -> None:
        dd = self._dd
        given: dict[str, Any] = {}
        if isinstance(init, FitResult):
            given = {"latent": init.latent, "color_latent": init.color_latent, "scale": init.scale,
                     "rotation": init.rotation, "translation": init.translation, "light": init.light,
                     "albedo": init.albedo}
            if init.focal is not None:
                given["focal"] = init.focal
        elif init is not None:
            if not isinstance(init, Mapping):
                raise TypeError(f"init: expected a FitResult, a mapping or None, got {type(init).__name__}")
            allowed = {"latent", "color_latent", "scale", "rotation", "translation", "focal", "light", "albedo"}
            unknown = set(init) - allowed
            if unknown:
                raise ValueError(f"init: unknown keys {sorted(unknown)}; expected some of {sorted(allowed)}")
            given = {k: v for k, v in init.items() if v is not None}
        for key, value in given.items():
            if value is not None:  # a FitResult's unused entries are None
                _check_finite(f"init {key}", value)
        if light is not None:
            _check_finite("light", light)

        # Focal length (perspective).
        self.focal0 = None
        if self.camera_kind == "perspective" and self.image_size is not None:
            if "focal" in given:
                self.focal0 = _focal_value(given["focal"], "init focal")
            elif focal is not None:
                self.focal0 = _focal_value(focal, "focal")
            else:
                self.focal0 = float(max(self.image_size))

        # Latent (whitened).
        prior = self.decoder.prior.to(**dd)
        self.prior = prior
        z0 = given.get("latent")
        if z0 is not None:
            z0 = _init_tensor(z0, "latent", prior.size).to(**dd)
        w0 = torch.zeros(1, prior.size, **dd) if z0 is None else prior.whiten(z0.unsqueeze(0)).detach()
        self.color_prior = None if self.decoder.color_prior is None else self.decoder.color_prior.to(**dd)
        zc0 = given.get("color_latent")
        if self.color_prior is not None:
            wc0 = torch.zeros(1, self.color_prior.size, **dd)
            if zc0 is not None:
                zc0 = _init_tensor(zc0, "color_latent", self.color_prior.size).to(**dd)
                wc0 = self.color_prior.whiten(zc0.unsqueeze(0)).detach()
        if z0 is not None:
            with torch.no_grad(), _frozen(self.decoder.module):
                shape0 = self.decoder(z0.unsqueeze(0)).vertices[0]
        else:
            shape0 = mean_shape

        # Pose.
        s0, R0, t0 = self._initial_pose(shape0)
        # the geometric terms are in squared target units, their weights per squared model unit: divided by the
        # scale the target gives the mean face (not a starting pose or code given, so a refit weighs its data as
        # the first fit did); a target in metres (1e-3 of a millimetre model) had come back as the mean face
        self.target_scale = float(s0 if z0 is None else self._initial_pose(mean_shape)[0])
        if "scale" in given:
            s0 = _init_tensor(given["scale"], "scale", 1).to(**dd).reshape(())
        if "rotation" in given:
            R0 = _as_matrix(given["rotation"], self.dtype, self.device)
        if "translation" in given:
            t0 = _init_tensor(given["translation"], "translation", 3).to(**dd)
        if not (float(s0) > 0 and math.isfinite(float(s0))):
            raise ValueError(f"init scale: expected a positive number, got {float(s0)}")
        self.s0, self.R0, self.t0 = s0.detach(), R0.detach(), t0.detach()
        centred = shape0 - shape0.mean(0)
        radius = float(centred.square().sum(-1).mean().sqrt()) or 1.0
        self.t_unit = float(s0) * radius  # translation unit: the face radius in target space

        # Appearance.
        self.light0 = light if light is not None else given.get("light") or DirectionalLight()
        light_name = "light" if light is not None else "init light"
        if not isinstance(self.light0, DirectionalLight):
            raise TypeError(f"{light_name}: expected a DirectionalLight, got {type(self.light0).__name__}")
        direction = _start_direction(self.light0, light_name)
        for part, article in (("ambient", "an"), ("diffuse", "a")):  # fitted as logarithms
            value = getattr(self.light0, part)
            number = real_number(value)
            if number is None or number < 0:
                raise ValueError(f"{light_name}: expected {article} {part} coefficient, a real number >= 0, "
                                 f"got {value!r}")
        albedo0 = given.get("albedo")
        albedo0 = self._initial_albedo() if albedo0 is None else _init_tensor(albedo0, "albedo", 3)

        # Free tensors (all leaves; a stage decides which ones the optimiser sees).
        def leaf(t):
            return t.detach().clone().to(**dd).requires_grad_(True)

        self.w = leaf(w0)
        self.wc = leaf(wc0) if self.color_prior is not None else None
        if self.rotation_kind == "axis_angle":
            self.rot = leaf(torch.zeros(3))
        else:
            self.rot = leaf(matrix_to_rotation_6d(self.R0))
        self.dt = leaf(torch.zeros(3))
        self.log_s = leaf(torch.zeros(()))
        self.log_f = leaf(torch.zeros(())) if self.focal0 is not None else None
        self.light_dir = leaf(direction / direction.norm())
        self.log_ambient = leaf(torch.tensor(math.log(max(float(self.light0.ambient), 1e-6))))
        self.log_diffuse = leaf(torch.tensor(math.log(max(float(self.light0.diffuse), 1e-6))))
        self.albedo = leaf(albedo0) if (
            self.kind == "image" and not self.has_colors and not self.has_texture) else None

    def _initial_albedo(self) -> torch.Tensor:
        if isinstance(self.target, ImageTarget):
            mask = self.target.mask
            img = self.target.image
            if mask is not None:
                return img[:, mask].mean(1)
            return img.reshape(3, -1).median(1).values
        return torch.full((3,), 0.7)

    def _initial_pose(self, shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(s, R, t)`` from the target and the starting shape ``(V, 3)`` (module docstring)."""
        dd = self._dd
        eye = torch.eye(3, **dd)
        if isinstance(self.target, MeshTarget):
            return umeyama(shape, self.target_vertices, self.target_weights)
        if isinstance(self.target, PointCloudTarget):
            mc, pc = shape.mean(0), self.points.mean(0)
            r_model = float((shape - mc).square().sum(-1).mean().sqrt())
            r_scan = float((self.points - pc).square().sum(-1).mean().sqrt())
            s = torch.tensor(r_scan / r_model if r_model > 0 else 1.0, **dd)
            return s, eye, pc - s * mc
        h, w = self.image_size
        if self.landmarks is not None:
            model = shape[self.landmark_index]  # (K, 3)
            px = self.landmark_points[:, 0] - (w - 1) / 2.0  # pixels right of the centre
            py = (h - 1) / 2.0 - self.landmark_points[:, 1]  # pixels up from the centre
            s_wp, R, b = _affine_camera(model, torch.stack([px, py], 1), self.landmark_weights)
        else:  # frontal, centred, 80 % of the image height
            lo, hi = shape.min(0).values, shape.max(0).values
            s_wp = torch.tensor(0.8 * h / max(float(hi[1] - lo[1]), 1e-12), **dd)
            R = eye
            centre = (lo + hi) / 2
            b = -s_wp * centre[:2]
        if self.camera_kind == "weak_perspective":
            t = torch.cat([b, torch.zeros(1, **dd)])
            return s_wp, R, t
        depth = self.focal0 / float(s_wp)
        c = shape[self.landmark_index].mean(0) if self.landmarks is not None else (shape.min(0).values
                                                                                  + shape.max(0).values) / 2
        rc = R @ c
        # p ~ (f / depth) (R x + t)_xy with f / depth = s_wp, and the landmark centroid at the depth.
        t = torch.stack([b[0] / s_wp, b[1] / s_wp, torch.tensor(-depth, **dd) - rc[2]])
        return torch.ones((), **dd), R, t

    # --------------------------------------------------------------- parameters
    def group_tensors(self) -> dict[str, list[torch.Tensor]]:
        """Group name -> its free tensors (empty where the group does not apply)."""
        return {
            "rotation": [self.rot],
            "translation": [self.dt],
            "scale": [self.log_s],
            "latent": [self.w],
            "color": ([t for t in (self.wc, self.albedo) if t is not None]
                      if self.kind == "image" or "color" in self.terms else []),
            "light": [self.light_dir, self.log_ambient, self.log_diffuse] if self.kind == "image" else [],
            "focal": [self.log_f] if self.log_f is not None else [],
        }

    def resolve_groups(self, groups: Sequence[str]) -> tuple[str, ...]:
        """Expand aliases; ``pose`` has no ``scale`` for the perspective camera."""
        out: list[str] = []
        for g in groups:
            names = _expand_groups([g])
            if g == "pose" and self.camera_kind == "perspective" and self.image_size is not None:
                names = ("rotation", "translation")
            out.extend(n for n in names if n not in out)
        return tuple(out)

    def parameters(self, groups: Sequence[str] = PARAM_GROUPS) -> list[torch.Tensor]:
        """The tensors of the named groups (aliases allowed)."""
        tensors = self.group_tensors()
        out: list[torch.Tensor] = []
        for g in self.resolve_groups(groups):
            out.extend(tensors[g])
        return out

    # --------------------------------------------------------------- evaluation
    def rotation(self) -> torch.Tensor:
        """The current rotation matrix ``(3, 3)``."""
        if self.rotation_kind == "axis_angle":
            return axis_angle_to_matrix(self.rot) @ self.R0
        return rotation_6d_to_matrix(self.rot)

    def scale(self) -> torch.Tensor:
        """The similarity's scale ``s`` ``()`` now (the starting one times ``exp`` of its parameter)."""
        return self.s0 * torch.exp(self.log_s)

    def translation(self) -> torch.Tensor:
        """The similarity's translation ``t`` ``(3,)`` now, in target units."""
        dt = self.dt
        if self.image_size is not None and self.camera_kind == "weak_perspective":
            # t_z does not move the projection: keep it where it started (round-off in the renderer's
            # gradient would otherwise make Adam walk it by a full step each iteration)
            dt = torch.cat([dt[:2], torch.zeros_like(dt[2:])])
        return self.t0 + self.t_unit * dt

    def camera(self) -> Camera | None:
        """The camera mapping target space to the image (``None`` for mesh and scan targets)."""
        if self.image_size is None:
            return None
        h, w = self.image_size
        if self.camera_kind == "weak_perspective":
            scale = torch.tensor([[2.0 / w, 2.0 / h]], **self._dd)  # (1, 2) pixels -> NDC
            return OrthographicCamera(scale=scale, center=torch.zeros(3, **self._dd))
        f = self.focal0 * torch.exp(self.log_f)
        K = torch.stack([f, f, torch.tensor((w - 1) / 2.0, **self._dd), torch.tensor((h - 1) / 2.0, **self._dd)])
        return PerspectiveCamera(K.unsqueeze(0), (h, w), R=torch.diag(torch.tensor(_FLIP_YZ, **self._dd)))

    def light(self) -> DirectionalLight:
        """The :class:`~mesh_decoder.render.DirectionalLight` now (image targets)."""
        return DirectionalLight(self.light_dir, torch.exp(self.log_ambient), torch.exp(self.log_diffuse))

    def decode(self) -> tuple[Decoded, torch.Tensor]:
        """The decoded output and the target-space vertices ``(1, V, 3)``."""
        z = self.prior.unwhiten(self.w)  # (1, Z)
        zc = None if self.wc is None else self.color_prior.unwhiten(self.wc)  # (1, Z_c)
        out = self.decoder(z, zc)
        X = apply_similarity(out.vertices, self.scale(), self.rotation(), self.translation())  # (1, V, 3)
        return out, X

    def update_correspondences(self, vertices: torch.Tensor | None = None) -> Correspondences:
        """Recompute the ICP pairs from target-space vertices ``(V, 3)`` (default: the current fit)."""
        if not isinstance(self.target, PointCloudTarget):
            raise ValueError("update_correspondences: only a PointCloudTarget has correspondences")
        if vertices is None:
            with torch.no_grad(), _frozen(self.decoder.module):
                vertices = self.decode()[1][0]
        self.correspondences = find_correspondences(
            vertices.detach().double().cpu().numpy(), self.template.faces, self._points_np, self._tree,
            self.target.trim, self.target.model_to_scan)
        return self.correspondences

    def losses(self, terms: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """The unweighted loss terms ``()`` at the current parameters (all the target's by default)."""
        use = self.terms if terms is None else tuple(t for t in _check_terms(terms) if t in self.terms)
        out, X = self.decode()
        result: dict[str, torch.Tensor] = {}
        if "vertex" in use:
            result["vertex"] = vertex_loss(X, self.target_vertices, self.target_weights)[0]
        if "color" in use:  # the same weighted mean over corresponding vertices, of RGB differences
            result["color"] = vertex_loss(out.colors, self.target_colors, self.target_weights)[0]
        if "point_to_point" in use or "point_to_plane" in use:
            result.update(self._icp_terms(X))
        if "landmark" in use:
            cam = self.camera()
            ndc = cam.project(X[:, self.landmark_index])  # (1, K, 3)
            pix = ndc_to_pixel(ndc, self.image_size)[..., :2]  # (1, K, 2)
            result["landmark"] = landmark_loss(pix, self.landmark_points, self.landmark_weights)[0]
        if "photometric" in use:
            result["photometric"] = self._photometric(out, X)
        if "prior" in use:
            energy = 0.5 * self.w.square().sum()
            if self.wc is not None:
                energy = energy + 0.5 * self.wc.square().sum()
            result["prior"] = energy
        return {k: result[k] for k in use if k in result}

    def _icp_terms(self, X: torch.Tensor) -> dict[str, torch.Tensor]:
        """Point-to-point (scan to surface) and point-to-plane (both directions, averaged) terms."""
        corr = self.correspondences if self.correspondences is not None else self.update_correspondences(X[0])
        faces = self.faces
        p = self.points[corr.scan_index.to(self.device)]  # (P, 3) scan points
        face = corr.face.to(self.device)
        q = surface_points(X, faces, face, corr.bary.to(self.device))[0]  # (P, 3) their closest surface points
        n = face_normals(X.detach(), faces)[0, face]  # (P, 3)
        point = point_to_point_loss(p, q)
        planes = [point_to_plane_loss(p, q, n)]
        if self.target.model_to_scan and corr.model_index.numel():
            vi = corr.model_index.to(self.device)
            si = corr.scan_of_model.to(self.device)
            if self.point_normals is not None:
                nm = self.point_normals[si]  # (Q, 3)
            else:
                nm = vertex_normals(X[0].detach(), faces)[vi]  # (Q, 3)
            planes.append(point_to_plane_loss(X[0, vi], self.points[si], nm))
        return {"point_to_point": point, "point_to_plane": torch.stack(planes).mean()}

    def _photometric(self, out: Decoded, X: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, Any] = {}
        if out.colors is not None:
            kwargs["colors"] = out.colors
        elif out.texture is not None:
            kwargs.update(texture=out.texture, uv=torch.as_tensor(self.template.uv, **self._dd),
                          uv_faces=torch.as_tensor(self.template.uv_faces, device=self.device))
        else:
            kwargs["colors"] = self.albedo.expand(X.shape[1], 3)
        rendered = render(X, self.faces, self.camera(), self.image_size, light=self.light(), **kwargs)
        mask = rendered.mask  # (1, H, W)
        if self.target_mask is not None:
            mask = mask & self.target_mask
        return photometric_loss(rendered.image, self.target_image, mask)[0]

    def total(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of loss terms."""
        total = None
        for k, v in terms.items():
            w = self.weight(k)
            total = w * v if total is None else total + w * v
        return total

    def weight(self, term: str) -> float:
        """The weight the loss of ``term`` is multiplied by: ``prior_weight`` for ``"prior"``; for a geometric
        term its weight per squared model unit over :attr:`target_scale` squared (the term is in squared
        target units); else ``weights[term]``."""
        if term == "prior":
            return self.prior_weight
        return self.weights[term] / self.target_scale**2 if term in _GEOMETRIC_TERMS else self.weights[term]

    # --------------------------------------------------------------------- run
    def run(self, stages: Sequence[Stage] | None = None, progress: bool = True) -> FitResult:
        """Optimise the stages in order and return the :class:`FitResult`.

        Args:
            stages: default :func:`default_stages` of the target kind.
            progress: show a tqdm bar with the loss terms (default ``True``).
        """
        progress = check_bool(progress, "progress")
        if stages is None:
            stages = default_stages(self.kind, self.camera_kind, self.landmarks is not None,
                                    has_colors=self.color_group_unavailable() is None)
        if isinstance(stages, Stage) or not isinstance(stages, Iterable):
            raise TypeError(f"stages: expected a sequence of Stage objects, got {type(stages).__name__}"
                            + (" (put one stage in a list)" if isinstance(stages, Stage) else ""))
        stages = list(stages)
        if not stages:
            raise ValueError("stages: expected at least one Stage, got none (stages=None runs the default schedule)")
        for s in stages:
            if not isinstance(s, Stage):
                raise TypeError(f"stages: expected Stage objects, got {type(s).__name__}")
        tensors = self.group_tensors()
        no_color = self.color_group_unavailable()
        for i, s in enumerate(stages):
            groups = self.resolve_groups(s.groups)
            named = _expand_groups([g for g in s.groups if g != "all"])  # "all": every group that applies
            if "focal" in named and self.log_f is None:
                raise ValueError("stages: the 'focal' group needs a perspective camera and an image target")
            stage = f"stages[{i}]" + (f" ({s.name!r})" if s.name else "")
            if not any(tensors[g] for g in groups):
                raise ValueError(
                    f"{stage}: the groups {list(s.groups)} free no parameters of a {self.kind} target; expected "
                    "at least one group that applies (light applies to image targets only, color to image "
                    "targets and registered meshes with per-vertex colours or a texture map)")
            color_named = [g for g in s.groups if g in ("color", "appearance")]
            if color_named and no_color is not None:  # it would be skipped without a word
                raise ValueError(f"{stage}: the group {color_named[0]!r} fits colour, but {no_color}")
            if "light" in s.groups and not tensors["light"]:  # as colour: not skipped without a word
                raise ValueError(f"{stage}: the group 'light' fits the lighting of a photograph, but this is a "
                                 f"{self.kind} target; leave it out")
            if s.terms is not None and not any(t in self.terms for t in s.terms):
                raise ValueError(f"{stage}: uses none of this target's terms {list(self.terms)}; "
                                 f"got terms {list(s.terms)}")
            used = {t: self.weight(t)
                    for t in (self.terms if s.terms is None else s.terms) if t in self.terms}
            if s.iterations and not any(used.values()):
                raise ValueError(f"{stage}: every term it uses has weight 0 ({used}), so it would fit nothing; "
                                 "expected a positive weight (weights=, prior_weight=) for at least one")
        losses: dict[str, list[float]] = {k: [] for k in (*self.terms, "total")}
        stage_starts: list[int] = []
        total_iterations = sum(s.iterations for s in stages)
        start = time.perf_counter()
        bar = _progress(total_iterations, progress)
        iteration = 0
        try:
            with _frozen(self.decoder.module):
                for stage in stages:
                    stage_starts.append(iteration)
                    iteration = self._run_stage(stage, losses, iteration, bar)
                with torch.no_grad():
                    if isinstance(self.target, PointCloudTarget):
                        self.update_correspondences()
                    final = {k: float(v) for k, v in self.losses().items()}
                    final["total"] = float(self.total({k: torch.tensor(v, dtype=torch.float64)
                                                       for k, v in final.items()}))
                    out, X = self.decode()
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - start
        return self._result(out, X, losses, final, stage_starts, stages, seconds)

    def _run_stage(self, stage: Stage, losses: dict[str, list[float]], iteration: int, bar) -> int:
        params = self.parameters(stage.groups)
        if not params or stage.iterations == 0:
            return iteration
        for t in self.parameters(PARAM_GROUPS):
            t.grad = None
        every = self.target.correspondence_every if isinstance(self.target, PointCloudTarget) else 0
        opt = torch.optim.Adam(params, lr=stage.lr)
        lo = stage.final_lr_factor
        # A stage never ends worse than it began: one whose loss rose (a photograph's background pixels that
        # the face comes to cover are not in the gradient) ends at its lowest-loss iterate instead, so that it
        # cannot undo the stages before it. Not with correspondences, which change the loss being compared.
        keep_best = not every
        first_total, best_total, best = None, math.inf, None
        for i in range(stage.iterations):
            if every and (iteration % every == 0 or i == 0):
                with torch.no_grad():
                    self.update_correspondences()
            progress = i / max(stage.iterations - 1, 1)
            for group in opt.param_groups:  # cosine decay from lr to lr * final_lr_factor
                group["lr"] = stage.lr * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * progress)))
            opt.zero_grad(set_to_none=True)
            terms = self.losses(stage.terms)
            total = self.total(terms)
            if not bool(torch.isfinite(total)):
                raise ValueError(
                    f"fit: the loss became {float(total.detach())} at iteration {iteration} "
                    f"(stage {stage.name or '+'.join(stage.groups)}); lower the learning rate, or check "
                    "weights and inputs of extreme size"
                )
            total.backward()
            record = {k: float(v.detach()) for k, v in terms.items()}
            record["total"] = float(total.detach())
            if first_total is None:
                first_total = record["total"]
            if keep_best and record["total"] < best_total:  # the loss of the parameters before this step
                best_total, best = record["total"], [p.detach().clone() for p in params]
            opt.step()
            for k in losses:
                losses[k].append(record.get(k, float("nan")))
            iteration += 1
            if bar is not None:
                bar.update(1)
                last = i == stage.iterations - 1
                if i % 5 == 0 or last:
                    bar.set_description(stage.name or "+".join(stage.groups), refresh=False)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()}, refresh=last)
        if best is not None:
            with torch.no_grad():
                if float(self.total(self.losses(stage.terms))) > first_total:  # after the last step
                    for p, b in zip(params, best):
                        p.copy_(b)
        return iteration

    def _result(self, out: Decoded, X: torch.Tensor, losses, final, stage_starts, stages, seconds) -> FitResult:
        z = self.prior.unwhiten(self.w.detach())[0]
        zc = None if self.wc is None else self.color_prior.unwhiten(self.wc.detach())[0]
        light = None
        with torch.no_grad():
            cam = self.camera()  # parameters without autograd history
        if self.kind == "image":
            light = DirectionalLight(
                tuple(float(v) for v in (self.light_dir / self.light_dir.norm()).detach().tolist()),
                float(torch.exp(self.log_ambient.detach())), float(torch.exp(self.log_diffuse.detach())))
        return FitResult(
            latent=z,
            color_latent=zc,
            scale=self.scale().detach(),
            rotation=self.rotation().detach(),
            translation=self.translation().detach(),
            camera=cam,
            light=light,
            albedo=None if self.albedo is None else self.albedo.detach().clone(),
            vertices=X[0].detach(),
            model_vertices=out.vertices[0].detach(),
            colors=None if out.colors is None else out.colors[0].detach(),
            faces=self.faces,
            losses=losses,
            final_losses=final,
            stage_starts=stage_starts,
            stages=list(stages),
            target_kind=self.kind,
            rotation_representation=self.rotation_kind,
            image_size=self.image_size,
            seconds=seconds,
            weights={k: self.weight(k) for k in final if k != "total"},
            template=self.template,
            target=self.target,
        )


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="fit", unit="it", dynamic_ncols=True)


def _affine_camera(
    model: torch.Tensor, image: torch.Tensor, weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scaled orthographic camera ``p ~ s R[:2] x + b`` from 3D-2D pairs: affine least squares, then the
    nearest scaled rotation (SVD of the 2 x 3 block; the third row is the cross product).

    Shapes: ``model (K, 3)``, ``image (K, 2)`` -> ``s ()``, ``R (3, 3)``, ``b (2,)``.
    """
    dtype = model.dtype
    x = model.detach().double()
    p = image.detach().double()
    w = torch.ones(x.shape[0], dtype=torch.float64, device=x.device) if weights is None else weights.double()
    design = torch.cat([x, torch.ones(x.shape[0], 1, dtype=torch.float64, device=x.device)], 1)  # (K, 4)
    sw = w.sqrt()[:, None]
    sol = torch.linalg.lstsq(design * sw, p * sw).solution  # (4, 2)
    A, b = sol[:3].T, sol[3]  # (2, 3), (2,)
    u, sv, vh = torch.linalg.svd(A, full_matrices=False)  # (2, 2), (2,), (2, 3)
    top = u @ vh  # (2, 3) orthonormal rows
    R = torch.cat([top, torch.linalg.cross(top[0], top[1]).unsqueeze(0)])  # (3, 3)
    s = sv.mean()
    return s.to(dtype), R.to(dtype), b.to(dtype)


def fit(
    decoder: Any,
    target: MeshTarget | PointCloudTarget | LandmarkTarget | ImageTarget,
    *,
    template: Mesh | None = None,
    stages: Sequence[Stage] | None = None,
    prior=None,
    prior_weight: float | None = None,
    weights: Mapping[str, float] | None = None,
    rotation: str = "axis_angle",
    camera: str = "weak_perspective",
    focal: float | None = None,
    init: FitResult | Mapping[str, Any] | None = None,
    light: DirectionalLight | None = None,
    progress: bool = True,
) -> FitResult:
    """Fit a decoder's latent code, a similarity transform and a camera to a target (module docstring).

    Args:
        decoder: a :class:`~mesh_decoder.pca.PCAModel`, a
            :class:`~mesh_decoder.nn.MeshAutoencoder`, a graph or joint decoder (with a
            ``latent_size``), or a :class:`~mesh_decoder.fit.FitDecoder`.
        target: a :class:`MeshTarget`, :class:`PointCloudTarget`, :class:`LandmarkTarget`
            or :class:`ImageTarget`.
        template: the decoder's template mesh (faces, landmarks, UVs). Required for
            scans, landmarks and images; optional for registered meshes. Default ``None``.
        stages: the schedule; default :func:`default_stages` (pose first, then shape).
        prior: a :class:`~mesh_decoder.fit.GaussianPrior` replacing the decoder's own.
            Default ``None``.
        prior_weight: weight of the prior energy; default
            :data:`DEFAULT_PRIOR_WEIGHTS` of the target kind.
        weights: data term weights overriding :data:`DEFAULT_WEIGHTS` (the geometric terms' per squared
            model unit, as those). Default ``None``.
        rotation: ``"axis_angle"`` (default) or ``"6d"``.
        camera: ``"weak_perspective"`` (default) or ``"perspective"`` (landmark and image targets).
        focal: initial focal length in pixels of the perspective camera; default
            ``max(H, W)`` (a 53-degree field of view).
        init: starting values: a previous :class:`FitResult`, or a mapping with some of
            ``latent``, ``color_latent``, ``scale``, ``rotation`` (matrix, axis-angle or
            6D), ``translation``, ``focal``, ``light``, ``albedo``. Missing ones are
            initialised from the target. Default ``None``.
        light: the initial light for image targets. Default
            :class:`~mesh_decoder.render.DirectionalLight`.
        progress: show a tqdm bar with the loss terms. Default ``True``.

    Returns:
        A :class:`FitResult`.
    """
    problem = FitProblem(decoder, target, template=template, prior=prior, prior_weight=prior_weight,
                         weights=weights, rotation=rotation, camera=camera, focal=focal, init=init, light=light)
    return problem.run(stages, progress=progress)
