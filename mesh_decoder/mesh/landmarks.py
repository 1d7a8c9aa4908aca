"""Named facial landmarks of the built-in templates.

The built-in face and head templates are parameterised by *canonical coordinates*
``(s, y)`` in millimetres: ``y`` is the height (``y = 0`` at the eye line, up is
``+y``) and ``s = R0 * theta`` is arc length at the canonical radius ``R0`` around
the vertical axis, ``theta = atan2(x, z)`` (``s = 0`` on the facial midline,
``s > 0`` towards ``+x``). See :mod:`mesh_decoder.mesh.templates`.

Landmarks follow the spirit of the 68-point scheme (Sagonas et al., "300 Faces
In-the-Wild Challenge", 2013): brows, eye corners and lids, nose, mouth, jaw line.
``left``/``right`` are the *subject's*: a face looking towards ``+z`` with ``+y``
up has its left eye at ``+x``.

Each landmark is stored on a template as the index of the vertex nearest to its
canonical position, measured in the parameter domain (which the template UVs map
linearly).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = [
    "FACE_LANDMARKS",
    "MIRROR_PAIRS",
    "SPHERE_LANDMARKS",
    "nearest_vertices",
]

EYE_S = 29.0  # canonical s of the eye centres
EYE_Y = 0.0
EYE_HALF_WIDTH = 13.0
EYE_HALF_HEIGHT = 4.5
MOUTH_Y = -62.5  # line between the lips
MOUTH_HALF_WIDTH = 24.0


def _sided(name: str, s: float, y: float) -> dict[str, tuple[float, float]]:
    """``name_left`` at ``+s`` and ``name_right`` at ``-s``."""
    return {f"{name}_left": (s, y), f"{name}_right": (-s, y)}


#: name -> canonical ``(s, y)`` in mm of the 33 face landmarks.
FACE_LANDMARKS: dict[str, tuple[float, float]] = {
    # brows (6): inner, middle (arch top), outer
    **_sided("brow_inner", 14.0, 13.5),
    **_sided("brow_mid", 29.0, 16.5),
    **_sided("brow_outer", 44.0, 13.5),
    # eyes (8): corners, upper and lower lid centres
    **_sided("eye_outer", EYE_S + EYE_HALF_WIDTH, EYE_Y + 0.5),
    **_sided("eye_inner", EYE_S - EYE_HALF_WIDTH, EYE_Y),
    **_sided("eye_top", EYE_S, EYE_Y + EYE_HALF_HEIGHT),
    **_sided("eye_bottom", EYE_S, EYE_Y - EYE_HALF_HEIGHT),
    # nose (5)
    "nose_bridge": (0.0, 4.0),
    "nose_tip": (0.0, -36.0),
    **_sided("nostril", 13.0, -42.0),
    "subnasale": (0.0, -47.0),
    # mouth (4)
    **_sided("mouth_corner", MOUTH_HALF_WIDTH, MOUTH_Y),
    "upper_lip": (0.0, -57.5),
    "lower_lip": (0.0, -67.5),
    # jaw line (7): from below the ear, over the jaw angle, to the chin
    **_sided("jaw_upper", 80.0, -30.0),
    **_sided("jaw_angle", 70.0, -72.0),
    **_sided("jaw_lower", 42.0, -96.0),
    "chin": (0.0, -104.0),
    # forehead and cheeks (3)
    "forehead": (0.0, 60.0),
    **_sided("cheek", 45.0, -28.0),
}

#: left/right landmark pairs (left name, right name).
MIRROR_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (name, name[: -len("_left")] + "_right") for name in FACE_LANDMARKS if name.endswith("_left")
)

#: name -> unit direction of the icosphere's landmarks (poles and the equator's four
#: axis points). A sphere has no face, so only these six are defined.
SPHERE_LANDMARKS: dict[str, tuple[float, float, float]] = {
    "north_pole": (0.0, 1.0, 0.0),
    "south_pole": (0.0, -1.0, 0.0),
    "front": (0.0, 0.0, 1.0),
    "back": (0.0, 0.0, -1.0),
    "left": (1.0, 0.0, 0.0),
    "right": (-1.0, 0.0, 0.0),
}


def nearest_vertices(points: np.ndarray, targets: Mapping[str, tuple[float, ...]]) -> dict[str, int]:
    """Index of the point nearest to each named target.

    Args:
        points: ``(V, D)`` positions (canonical ``(s, y)`` for the face templates,
            3D unit directions for the sphere).
        targets: name -> ``D`` coordinates.

    Returns:
        name -> vertex index, in the order of ``targets``.

    Shapes:
        ``points (V, D)``, ``targets`` of ``D`` floats -> ``{name: int}``.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"points: expected a non-empty (V, D) array, got shape {points.shape}")
    names = list(targets)
    if not names:
        return {}
    query = np.asarray([targets[n] for n in names], dtype=np.float64)  # (K, D)
    if query.ndim != 2 or query.shape[1] != points.shape[1]:
        raise ValueError(
            f"targets: expected {points.shape[1]} coordinates per landmark, got array of shape {query.shape}"
        )
    if not np.isfinite(points).all():
        raise ValueError("points: expected finite coordinates, got NaN or inf")
    bad = ~np.isfinite(query).all(axis=1)
    if bad.any():
        name = names[int(np.flatnonzero(bad)[0])]
        raise ValueError(f"targets[{name!r}]: expected finite coordinates, got {list(targets[name])}")
    from scipy.spatial import cKDTree  # here, not at the top: importing scipy.spatial costs every command 0.5 s

    _, index = cKDTree(points).query(query)
    return {n: int(i) for n, i in zip(names, index)}
