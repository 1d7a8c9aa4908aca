"""Strict, order-preserving mesh I/O for Wavefront OBJ, Geomview OFF and Stanford PLY.

Registered face data depend on vertex order, so these readers never reorder,
merge, split or drop vertices: the loaded vertex count and order are the file's.
Polygons are fan-triangulated in file order (``(v0, v1, ..., v_{n-1})`` becomes
``(v0, v_i, v_{i+1})`` for ``i = 1 .. n-2``). Every malformed, truncated or
inconsistent file raises :class:`~mesh_decoder.errors.MeshFileError` naming the
file, the line (or PLY element and row) and the reason, stating what was
expected and what was found. Declared counts are checked against the file size
before anything is allocated, so a corrupt header cannot make a reader allocate
gigabytes or loop for hours.

Formats (chosen by the file extension, case-insensitive):

* **OBJ** (Wavefront, "Object Files (.obj)", Appendix B1 of the Advanced
  Visualizer manual): ``v x y z [r g b]``, ``vt u v [w]``, ``f`` with corners
  ``v``, ``v/vt``, ``v/vt/vn`` or ``v//vn``; 1-based indices, negative indices
  count back from the last element defined before the face. ``vn``, ``o``,
  ``g``, ``s``, ``usemtl``, ``mtllib`` and comments are ignored; any other
  statement (``l``, ``p``, curves, ...) is an error rather than silently dropped.
* **OFF** / **COFF** (Geomview): header, ``V F E`` counts, ``V`` vertex lines
  (``x y z`` or, for COFF, ``x y z r g b [a]``), ``F`` face lines
  ``n i_1 ... i_n`` with 0-based indices. ``#`` starts a comment anywhere.
* **PLY** (Greg Turk's polygon file format; ASCII, binary little and big
  endian, parsed by :mod:`plyfile`): ``vertex`` element with ``x, y, z``,
  optional ``red, green, blue`` (integers 0-255 or floats 0-1) and optional
  per-vertex texture coordinates (``u, v`` / ``s, t`` / ``texture_u, texture_v``
  / ``texture_s, texture_t`` / a 2-list ``texcoord``); ``face`` element with a
  ``vertex_indices`` (or ``vertex_index``) list and an optional per-corner
  ``texcoord`` list of ``2 n`` floats. Other properties (normals, alpha,
  quality) and other elements are ignored.

Landmarks (name -> 0-based vertex index) travel in comments, which other readers
of these formats skip: ``# landmark <name> <index>`` lines in OBJ and OFF (written
after an OFF file's faces: OpenMesh and trimesh take a comment between its counts
and its vertices for data; read anywhere) and ``comment landmark <name> <index>``
header lines in PLY. A comment whose first word is ``landmark`` must have exactly
that form.

A UV texture map passed to :func:`save_mesh` is written as a PNG beside the
mesh (``face.obj`` -> ``face.png``) and referenced as viewers expect: OBJ through
a material file (``mtllib face.mtl``, ``usemtl``, ``map_Kd face.png``), PLY
through a ``comment TextureFile face.png`` header line. :func:`load_mesh` skips
both references (the mesh's UVs are read as usual); :func:`load_texture` follows
them, as it does those Blender, MeshLab and PyTorch3D write.

Writers keep float32 precision: text formats print ``%.9g`` of the float32
value (nine significant digits identify every float32), PLY binary stores
float32. So ``np.float32(saved) == np.float32(loaded)`` holds exactly for
positions, UVs and colours, and :meth:`Mesh.content_hash` survives a round
trip. Every file goes through :func:`mesh_decoder._atomic.atomic_write`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from typing import NamedTuple, Sequence

import numpy as np

from .._atomic import atomic_write
from ..errors import MeshFileError, MeshValidationError
from .container import Mesh

__all__ = ["load_mesh", "save_mesh", "load_texture", "texture_file", "texture_paths", "MESH_EXTENSIONS",
           "OBJ_MATERIAL"]

#: File extensions understood by :func:`load_mesh` and :func:`save_mesh`.
MESH_EXTENSIONS = (".obj", ".off", ".ply")


# =============================================================================
# public API
# =============================================================================
def load_mesh(path: str | os.PathLike, *, topology: bool = True) -> Mesh:
    """Load a triangle mesh from an OBJ, OFF or PLY file without reordering anything.

    The format is chosen by the extension (``.obj``, ``.off``, ``.ply``, any
    case). Polygons are fan-triangulated in file order; the vertex count and
    order equal the file's. The result has passed :meth:`Mesh.validate`.

    Args:
        path: the file to read.
        topology: passed to :meth:`Mesh.validate`; ``False`` accepts degenerate,
            duplicate, non-manifold and inconsistently wound faces (a raw scan read
            for its points and normals). Default ``True``.

    Returns:
        A validated :class:`Mesh`.

    Shapes:
        - ``vertices``: ``(V, 3)`` float64, ``V`` = vertices in the file.
        - ``faces``: ``(F, 3)`` int64, ``F`` = sum over polygons of ``n - 2``.
        - ``uv``: ``(T, 2)`` float64 and ``uv_faces``: ``(F, 3)`` int64, or ``None``.
          OBJ keeps its ``vt`` table; PLY per-vertex UVs give ``T = V`` and
          ``uv_faces == faces``; PLY per-corner UVs are merged by value in
          order of first use.
        - ``colors``: ``(V, 3)`` float64 in ``[0, 1]``, or ``None``.

    Raises:
        MeshFileError: unknown extension, or malformed, truncated or
            inconsistent content (including a mesh that fails validation).
        FileNotFoundError: the file does not exist.
    """
    path = os.fspath(path)
    if os.path.isdir(path):  # was 'unknown mesh format ... found no extension' for a folder
        raise MeshFileError(path, "expected a mesh file (.obj, .off or .ply), found a directory")
    fmt = _format_of(path)
    with open(path, "rb") as handle:
        data = handle.read()
    if not data or data.isspace():
        raise MeshFileError(path, f"empty file: expected {fmt.upper()} mesh data, found {len(data)} bytes")
    if fmt == "obj":
        parts = _read_obj(path, data)
    elif fmt == "off":
        parts = _read_off(path, data)
    else:
        parts = _read_ply(path, data)
    return _build_mesh(path, parts, topology)


def save_mesh(mesh: Mesh, path: str | os.PathLike, *, binary: bool | None = None, texture=None) -> None:
    """Write a mesh as OBJ, OFF or PLY (by extension), atomically and at float32 precision.

    Args:
        mesh: a :class:`Mesh`; it must pass :meth:`Mesh.validate`.
        path: the target file; it is replaced only once the new content is
            completely written (see :func:`mesh_decoder._atomic.atomic_write`).
        binary: PLY only: ``True`` or ``None`` (default) writes binary little
            endian, ``False`` writes ASCII. OBJ and OFF are text formats and
            accept only ``None`` or ``False``.
        texture: a UV texture map for a mesh with UVs, or ``None`` (default):
            a torch ``(3, H, W)`` tensor or numpy ``(H, W, 3)`` array, floats in
            ``[0, 1]`` (clipped) or uint8; row 0 is the top of the image (``v = 1``).
            It is written as a PNG beside the mesh, named after it (``face.obj`` ->
            ``face.png``), and referenced the way each format's viewers look for it:
            OBJ through a material file ``face.mtl`` (``mtllib``, ``map_Kd``: read by
            Blender, MeshLab and PyTorch3D's ``load_obj``), PLY through a header
            comment ``TextureFile face.png`` (read by MeshLab). OFF cannot hold UVs.
            All files are written to temporaries first; the texture files replace
            earlier ones only after the mesh file did, so a failure (a full disk,
            Ctrl-C) leaves every earlier file as it was.

    Notes:
        - OBJ stores the UV table and per-corner UV indices exactly, colours as
          ``v x y z r g b`` floats, landmarks as ``# landmark name index``.
        - OFF cannot store UVs: a mesh with UVs raises (save it as OBJ or PLY,
          or drop them with ``mesh.copy(uv=None, uv_faces=None)``). Colours make
          the file COFF with float colours.
        - PLY stores float32 positions and colours. UVs are written per vertex
          (``s, t``) when every vertex has a single UV across its corners, and
          otherwise as the per-corner face property ``texcoord`` (6 floats).

    Shapes:
        Those of :class:`Mesh`: ``vertices (V, 3)``, ``faces (F, 3)``,
        ``uv (T, 2)``, ``uv_faces (F, 3)``, ``colors (V, 3)``.

    Raises:
        TypeError: ``mesh`` is not a :class:`Mesh`.
        MeshFileError: unknown extension, a mesh that fails validation or does
            not fit the format (positions beyond float32 range, colours outside
            ``[0, 1]``, UVs in OFF, landmark names with whitespace, ...), or a
            texture for a mesh without UVs, one that is not an RGB image of finite
            real values, or a file name the reference cannot hold.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a mesh_decoder.mesh.Mesh, got {type(mesh).__name__}")
    path = os.fspath(path)
    fmt = _format_of(path)
    if binary not in (None, True, False):
        raise TypeError(f"binary: expected None, True or False, got {binary!r}")
    if fmt != "ply" and binary:
        raise MeshFileError(path, f"binary=True: {fmt.upper()} is a text format, only PLY can be written as binary")
    _check_savable(mesh, path, fmt)
    image = None if texture is None else _texture_image(mesh, path, fmt, texture)  # (H, W, 3) uint8
    with contextlib.ExitStack() as staged:  # texture files move into place only once the mesh file did
        texture_file = None if image is None else _stage_texture_files(staged, path, fmt, image)
        if fmt == "obj":
            _write_obj(mesh, path, material=texture_file)
        elif fmt == "off":
            _write_off(mesh, path)
        else:
            _write_ply(mesh, path, binary=binary is not False, texture_file=texture_file)


#: The material that a textured OBJ's faces use, defined in its ``.mtl`` file.
OBJ_MATERIAL = "mesh_decoder_texture"


def texture_paths(path: str | os.PathLike) -> tuple[str, str]:
    """The texture PNG and OBJ material file :func:`save_mesh` writes beside the mesh ``path``:
    ``("dir/face.png", "dir/face.mtl")`` for ``dir/face.obj`` (a PLY references only the PNG)."""
    stem = os.path.splitext(os.fspath(path))[0]
    return stem + ".png", stem + ".mtl"


def texture_file(path: str | os.PathLike) -> str | None:
    """The texture map a mesh file references, or ``None`` when it references none.

    OBJ: the ``map_Kd`` of the material most of its faces use (``usemtl``; without
    any, the first material with a ``map_Kd``) in its material files (``mtllib``).
    PLY: a ``comment TextureFile NAME`` header line. OFF: ``None``. Written by
    :func:`save_mesh` with ``texture=``, and by Blender, MeshLab, 3ds Max and
    PyTorch3D's ``save_obj``; read as they write them: keywords in any case, map
    options (``-s 1 1 1``, ``-bm 0.5``, ``-clamp on``, ...) before the name, names
    with spaces or in double quotes, Windows ``\\`` separators, and UTF-8 or
    Latin-1 material files. A name is looked for relative to the file that names
    it, then the mesh file's folder, then as its last part beside the material file
    (an absolute path from another machine).

    Raises:
        MeshFileError: unknown extension, or material files the OBJ names of which
            none is there, naming the first.
        FileNotFoundError: no mesh file at ``path``.
    """
    path = os.fspath(path)
    fmt = _format_of(path)
    folder = os.path.dirname(path)
    if fmt == "off":
        return None
    with open(path, "rb") as handle:
        data = handle.read() if fmt == "obj" else handle.read(1 << 16)  # a PLY's header comes first
    if fmt == "ply":
        header = data.split(b"end_header", 1)[0].decode("latin-1")
        found = re.search(r"^comment[ \t]+texturefile[ \t]+(.+?)[ \t]*\r?$", header, re.M | re.I)
        return None if found is None else _referenced(found.group(1), folder, folder)
    text = _decode_text(data)
    libs = [m.strip() for m in re.findall(r"^[ \t]*mtllib[ \t]+(.+?)[ \t]*$", text, re.M | re.I)]
    if not libs:
        return None
    found, missing = [], []  # the material files there, the names of those that are not
    for lib in libs:
        whole = _referenced(lib, folder, folder, exists=True)  # one name with spaces, or several names
        for name in [lib] if whole else _words(lib):
            mtl = whole or _referenced(name, folder, folder, exists=True)
            (found if mtl else missing).append(mtl or name)
    if not found:
        raise MeshFileError(path, f"mtllib {missing[0]}: expected a material file beside the OBJ, found nothing "
                                  f"at {os.path.join(folder, _unquoted(missing[0]))}")
    materials: dict[str, str] = {}  # material name -> its map_Kd's file, from every material file found
    for mtl in found:
        with open(mtl, "rb") as handle:
            for material, image in _material_maps(_decode_text(handle.read())):
                materials.setdefault(material, _referenced(image, os.path.dirname(mtl), folder))
    if not materials:
        return None
    used = _faces_per_material(text)  # material -> faces, in the OBJ's order
    textured = sorted((m for m in used if m in materials), key=lambda m: -used[m])
    return materials[textured[0]] if textured else next(iter(materials.values()))


def _decode_text(data: bytes) -> str:
    """A text file's bytes as UTF-8 (byte-order mark dropped), else Latin-1 (older Windows exporters)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _unquoted(name: str) -> str:
    name = name.strip()
    return name[1:-1] if len(name) >= 2 and name[0] == name[-1] == '"' else name


def _words(text: str) -> list[str]:
    """Whitespace-separated names, a double-quoted one kept whole."""
    return [a or b for a, b in re.findall(r'"([^"]*)"|(\S+)', text)]


def _referenced(name: str, base: str, mesh_folder: str, exists: bool = False) -> str | None:
    """The file a mesh or material file names: ``name`` (unquoted, ``\\`` as a separator where that finds it)
    relative to ``base``, then to the mesh's folder, then its last part beside ``base``. With ``exists``,
    ``None`` when none is there; else the first candidate when none is."""
    name = _unquoted(name)
    forms = [name] + ([name.replace("\\", "/")] if "\\" in name else [])
    tries = [os.path.join(root, form) for form in forms for root in (base, mesh_folder)]
    tries.append(os.path.join(base, re.split(r"[\\/]", name)[-1]))
    found = next((t for t in tries if os.path.isfile(t)), None)
    return found if found is not None or exists else tries[0]


#: ``map_Kd`` options and how many values each takes (``-o``, ``-s`` and ``-t`` take 1 to 3 numbers).
_MAP_OPTIONS = {"-blendu": 1, "-blendv": 1, "-bm": 1, "-boost": 1, "-cc": 1, "-clamp": 1, "-imfchan": 1, "-mm": 2,
                "-texres": 1, "-type": 1, "-o": 3, "-s": 3, "-t": 3}


def _material_maps(text: str) -> list[tuple[str, str]]:
    """``(material, file name)`` of every ``map_Kd`` in a material file, options skipped."""
    found, material = [], ""
    for line in text.splitlines():
        words = line.split(None, 1)
        if len(words) < 2:
            continue
        key, rest = words[0].lower(), words[1].strip()
        if key == "newmtl":
            material = rest
        elif key == "map_kd":
            name = _map_name(rest)
            if name:
                found.append((material, name))
    return found


def _map_name(rest: str) -> str:
    """The file name of a ``map_Kd`` statement's arguments: after its options, up to a trailing ``# comment``."""
    rest = re.sub(r"\s+#.*$", "", rest)
    words = rest.split(" ")
    i = 0
    while i < len(words) and words[i].lower() in _MAP_OPTIONS:
        most = _MAP_OPTIONS[words[i].lower()]
        i += 1
        taken = 0
        while i < len(words) and taken < most and (taken == 0 or re.fullmatch(r"[-+]?[0-9.eE+-]+", words[i])):
            i, taken = i + 1, taken + 1
    return " ".join(words[i:]).strip()


def _faces_per_material(text: str) -> dict[str, int]:
    """How many ``f`` lines follow each ``usemtl`` (summed per material), in first-use order."""
    counts: dict[str, int] = {}
    marks = list(re.finditer(r"^[ \t]*usemtl[ \t]+(.+?)[ \t]*$", text, re.M | re.I))
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        faces = len(re.findall(r"^[ \t]*f[ \t]", text[mark.end():end], re.M))
        counts[mark.group(1)] = counts.get(mark.group(1), 0) + faces
    return counts


def load_texture(path: str | os.PathLike) -> np.ndarray | None:
    """The texture map a mesh file references (:func:`texture_file`) as an ``(H, W, 3)`` float32 array in
    ``[0, 1]``, row 0 at the top (``v = 1``), or ``None`` when it references none. Images are read with Pillow
    (it comes with matplotlib): PNG (8 or 16 bits), JPEG and the other formats it reads.

    Raises:
        MeshFileError: a referenced material or image file that is not there or cannot be decoded, naming the
            mesh file and the image.
    """
    import torch

    from ..render.render import read_image

    path = os.fspath(path)
    image_path = texture_file(path)
    if image_path is None:
        return None
    if not os.path.isfile(image_path):
        found = "a folder" if os.path.isdir(image_path) else "nothing"
        raise MeshFileError(path, f"expected the texture map it references at {image_path}, found {found} there")
    try:
        image = read_image(image_path, dtype=torch.float32)  # (3, H, W)
    except MeshFileError as exc:
        raise MeshFileError(path, f"its texture map {exc}") from None
    return image.permute(1, 2, 0).numpy()  # (H, W, 3) float32


def _texture_image(mesh: Mesh, path: str, fmt: str, texture) -> np.ndarray:
    """``texture`` as an ``(H, W, 3)`` uint8 array, once the mesh and file name can reference it."""
    if fmt == "off":
        raise MeshFileError(path, "texture: OFF cannot store texture coordinates, so it cannot reference a "
                                  "texture map: save as .obj or .ply")
    if mesh.uv is None:
        raise MeshFileError(path, "texture: expected a mesh with UV coordinates (uv, uv_faces) to map it, found "
                                  "a mesh without them")
    png = os.path.basename(texture_paths(path)[0])
    unsafe = any(ch.isspace() for ch in png) or "#" in png or png.startswith("-")
    if unsafe or (fmt == "ply" and not png.isascii()):
        kind = "an ASCII name" if fmt == "ply" else "a name"
        where = "a PLY header comment" if fmt == "ply" else "OBJ's mtllib and map_Kd"
        raise MeshFileError(path, f"texture: expected a mesh file name its texture file can be referenced by, "
                                  f"{kind} without whitespace or '#' that does not start with '-' ({where}), "
                                  f"found {png!r}")
    for other in texture_paths(path)[: 2 if fmt == "obj" else 1]:
        if os.path.isdir(other):
            raise MeshFileError(path, f"texture: expected {other} to be free for a file, found a folder")
    from ..render.render import to_image_array

    try:
        image = to_image_array(texture)  # (H, W, C) uint8
    except (TypeError, ValueError) as exc:
        raise MeshFileError(path, f"texture: {str(exc).removeprefix('image: ')}") from None
    if image.shape[2] != 3:  # a 2-D array is a one-channel image to to_image_array: say so, with its shape
        shape = tuple(texture.shape)
        layout = "(3, H, W) tensor or (H, W, 3) array" if len(shape) != 2 else "3 channels, not a 2-D array"
        raise MeshFileError(path, f"texture: expected an RGB image ({layout}), found {image.shape[2]} channel"
                                  f"{'s' if image.shape[2] != 1 else ''} in shape {shape}")
    return image


def _stage_texture_files(staged: contextlib.ExitStack, path: str, fmt: str, image: np.ndarray) -> str:
    """Write the texture PNG (and for OBJ its material file) beside ``path`` into temporaries that ``staged``
    renames into place when it closes; returns the name the mesh file references: the ``.mtl`` for OBJ, the
    ``.png`` for PLY."""
    from ..render.render import encode_png

    png, mtl = texture_paths(path)
    staged.enter_context(atomic_write(png, "wb")).write(encode_png(image))
    if fmt == "ply":
        return os.path.basename(png)
    lines = [f"# mesh_decoder material: the UV texture of {os.path.basename(path)}", f"newmtl {OBJ_MATERIAL}",
             "Ka 1 1 1", "Kd 1 1 1", "Ks 0 0 0", "illum 1", f"map_Kd {os.path.basename(png)}"]
    staged.enter_context(atomic_write(mtl, "wb")).write(("\n".join(lines) + "\n").encode("utf-8"))
    return os.path.basename(mtl)


# =============================================================================
# shared helpers
# =============================================================================
class _Parts(NamedTuple):
    """Raw arrays parsed from a file, before building the Mesh."""

    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64
    uv: np.ndarray | None  # (T, 2) float64
    uv_faces: np.ndarray | None  # (F, 3) int64
    colors: np.ndarray | None  # (V, 3) float64 in [0, 1]
    landmarks: dict  # name -> (vertex index, line or location)


def _format_of(path: str) -> str:
    """``"obj"``, ``"off"`` or ``"ply"`` from the extension (any case)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in MESH_EXTENSIONS:
        found = repr(ext) if ext else "no extension"
        raise MeshFileError(path, f"unknown mesh format: expected extension one of {', '.join(MESH_EXTENSIONS)}, found {found}")
    return ext[1:]


def _build_mesh(path: str, parts: _Parts, topology: bool = True) -> Mesh:
    """Range-check landmarks, build the Mesh and validate it, naming the file on failure."""
    V = parts.vertices.shape[0]
    if V == 0:
        raise MeshFileError(path, "no vertices: expected at least 3 vertices and 1 face, found 0 vertices")
    if parts.faces.shape[0] == 0:
        raise MeshFileError(path, f"no faces: expected at least 1 face, found 0 (point clouds are not supported; V={V})")
    landmarks = {}
    for name, (index, where) in parts.landmarks.items():
        if not 0 <= index < V:
            raise MeshFileError(path, f"landmark {_clip(name)}: expected a vertex index in [0, {V}), found {index}", where)
        landmarks[name] = index
    try:
        mesh = Mesh(
            vertices=parts.vertices,
            faces=parts.faces,
            uv=parts.uv,
            uv_faces=parts.uv_faces,
            colors=parts.colors,
            landmarks=landmarks,
        )
        return mesh.validate(topology)
    except MeshValidationError as exc:  # indices as Mesh has them, not as the file numbers them
        raise MeshFileError(path, f"invalid mesh: {exc} (vertex and face indices count from 0, in file order)") \
            from exc


def _text_lines(path: str, data: bytes) -> list[str]:
    """Decode a text mesh file into lines (any of LF, CRLF, CR endings).

    Bytes that are not UTF-8 survive as surrogate escapes, so they are
    reported as non-numeric tokens where they matter and ignored in comments.
    """
    nul = data.find(b"\x00")
    if nul >= 0:  # offset in the file; lines end at LF, CRLF or a lone CR, as below
        line = len(re.findall(rb"\r\n|\r|\n", data[:nul])) + 1
        raise MeshFileError(path, f"binary data (NUL byte at offset {nul}) in a text mesh format", line)
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark
        data = data[3:]
    text = data.decode("utf-8", errors="surrogateescape")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def _clip(text: str, limit: int = 40) -> str:
    """``repr`` of a token for an error message, shortened if long."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _plain(text: str) -> bool:
    """Whether numeric text avoids what Python's ``float``/``int`` accept beyond file syntax.

    They take underscores (``"1_5"`` is 15) and non-ASCII digits (``"\u0663"`` is 3);
    mesh files allow neither. A cheap test, so readers run it on whole blocks of numbers.
    """
    return text.isascii() and "_" not in text


def _strict_int(text: str) -> int:
    """``int(text)`` for file syntax only (see :func:`_plain`); ``ValueError`` otherwise."""
    if not _plain(text):
        raise ValueError(text)
    return int(text)


def _strict_float(text: str) -> float:
    """``float(text)`` for file syntax only (see :func:`_plain`); ``ValueError`` otherwise."""
    if not _plain(text):
        raise ValueError(text)
    return float(text)


def _parse_landmark(path: str, comment: str, where, out: dict) -> None:
    """Parse ``landmark <name> <index>`` from a comment's text (without the comment marker)."""
    fields = comment.split()
    if not fields or fields[0] != "landmark":
        return
    if len(fields) != 3:
        raise MeshFileError(
            path, f"landmark comment: expected 'landmark <name> <vertex index>', found {_clip(comment.strip())}", where
        )
    name, token = fields[1], fields[2]
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise MeshFileError(path, f"landmark name {_clip(name)}: expected UTF-8 text", where) from None
    try:
        index = _strict_int(token)
    except ValueError:
        raise MeshFileError(path, f"landmark {_clip(name)}: expected an integer vertex index, found {_clip(token)}", where) from None
    if name in out:
        raise MeshFileError(path, f"landmark {_clip(name)} defined twice (first at line {out[name][1]})", where)
    out[name] = (index, where)


def _to_floats(path: str, rows: Sequence[Sequence[str]], lines: Sequence, what: str) -> np.ndarray:
    """Parse equal-length token rows into a ``(N, K)`` float64 array with finite values.

    ``lines[i]`` locates ``rows[i]`` in error messages.
    """
    n = len(rows)
    k = len(rows[0]) if n else 0
    flat = [tok for row in rows for tok in row]  # (N*K,)
    try:
        if not _plain("".join(flat)):
            raise ValueError("not plain")
        values = np.array(list(map(float, flat)), dtype=np.float64).reshape(n, k)  # (N, K)
    except ValueError:
        for row, where in zip(rows, lines):
            for tok in row:
                try:
                    _strict_float(tok)
                except ValueError:
                    raise MeshFileError(path, f"{what}: expected a number, found {_clip(tok)}", where) from None
        raise  # pragma: no cover - the loop above always finds the culprit
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        j = int(np.flatnonzero(~np.isfinite(values[i]))[0])  # the first value that is not finite: named
        raise MeshFileError(path, f"{what}: expected finite numbers, found {_clip(rows[i][j])} (value {j + 1} of "
                                  f"{k}) in {_clip(' '.join(rows[i]))}", lines[i])
    return values


def _to_ints(path: str, tokens: Sequence[str], where_of, what: str) -> np.ndarray:
    """Parse integer tokens into an int64 array; ``where_of(i)`` locates token ``i``."""
    try:
        if not _plain("".join(tokens)):
            raise ValueError("not plain")
        return np.array(list(map(int, tokens)), dtype=np.int64)
    except (ValueError, OverflowError):
        for i, tok in enumerate(tokens):
            try:
                value = _strict_int(tok)
            except ValueError:
                raise MeshFileError(path, f"{what}: expected an integer, found {_clip(tok)}", where_of(i)) from None
            if not -(2**62) < value < 2**62:
                raise MeshFileError(
                    path, f"{what}: expected an index below 2**62 in magnitude, found {_clip(tok)}", where_of(i)
                ) from None
        raise  # pragma: no cover


def _check_colors(path: str, colors: np.ndarray, lines: Sequence, what: str) -> None:
    """Colours ``(N, 3)`` must lie in ``[0, 1]``; ``lines[i]`` locates row ``i``."""
    bad = ((colors < 0.0) | (colors > 1.0)).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        eight_bit = " (8-bit colours? divide them by 255)" if float(colors.max()) > 1.0 and colors.min() >= 0.0 and \
            float(colors.max()) <= 255.0 else ""
        raise MeshFileError(path, f"{what}: expected colour values in [0, 1], found {colors[i].tolist()}{eight_bit}",
                            lines[i])


def _fan_corners(sizes: np.ndarray) -> np.ndarray:
    """Fan triangulation of consecutive polygons, as indices into their flat corner list.

    Polygon ``p`` with ``n = sizes[p]`` corners starting at flat offset ``o``
    yields triangles ``(o, o + i, o + i + 1)`` for ``i = 1 .. n - 2``, in order.

    Shapes:
        ``sizes (P,)`` int64 with every entry >= 3 -> ``(sum(sizes - 2), 3)`` int64.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    offsets = np.cumsum(sizes) - sizes  # (P,) first corner of each polygon
    ntri = sizes - 2  # (P,)
    start = np.repeat(offsets, ntri)  # (T,)
    step = np.arange(start.shape[0], dtype=np.int64) - np.repeat(np.cumsum(ntri) - ntri, ntri) + 1  # (T,) i = 1..n-2
    return np.stack([start, start + step, start + step + 1], axis=1)  # (T, 3)


def _polygon_of(sizes: np.ndarray):
    """Map a flat corner index to the index of its polygon."""
    ends = np.cumsum(sizes)
    return lambda corner: int(np.searchsorted(ends, corner, side="right"))


# =============================================================================
# OBJ
# =============================================================================
_OBJ_IGNORED = frozenset({"vn", "o", "g", "s", "usemtl", "mtllib"})


#: The first line :func:`save_mesh` writes in an OBJ file, with the counts it holds.
_OBJ_HEADER = re.compile(r"# mesh_decoder OBJ: (\d+) vertices, (\d+) triangles")


def _read_obj(path: str, data: bytes) -> _Parts:
    """Parse OBJ bytes: the bulk path when it applies, else the careful line-by-line reader."""
    lines = _text_lines(path, data)
    parts = _read_obj_fast(path, lines)
    parts = parts if parts is not None else _read_obj_careful(path, lines)
    # OBJ has no counts of its own: a file of save_mesh's cut at a line end read as a smaller, valid mesh
    header = _OBJ_HEADER.fullmatch(lines[0].strip())
    if header is not None:
        want = int(header[1]), int(header[2])
        found = int(parts.vertices.shape[0]), int(parts.faces.shape[0])
        if want != found:
            raise MeshFileError(
                path, f"expected the {want[0]} vertices and {want[1]} triangles its header comment announces, "
                      f"found {found[0]} and {found[1]} (truncated or edited? if it was edited on purpose, delete "
                      "that comment)", 1)
    return parts


_DELETE_DIGITS = str.maketrans("", "", "0123456789")


def _read_obj_fast(path: str, lines: list[str]) -> _Parts | None:
    """Bulk parse of a plain, well-formed OBJ; ``None`` when anything is unusual.

    Handles ``v x y z [r g b]``, ``vt u v``, ``f`` polygons with positive
    indices in one corner style, and the ignored statements. Everything else
    (negative indices, trailing comments, ``vt u v w``, any error) returns
    ``None`` and :func:`_read_obj_careful` decides line by line, so the two
    always agree on files this path accepts (the tests check it).
    """
    v_lines: list[str] = []
    vt_lines: list[str] = []
    f_lines: list[str] = []
    vn_count = 0
    landmarks: dict = {}
    for raw in lines:
        head = raw[:2]
        if head == "v ":
            v_lines.append(raw)
        elif head == "f ":
            f_lines.append(raw)
        elif head == "vt":
            vt_lines.append(raw)
        else:
            stripped = raw.strip()
            if not stripped:
                continue
            if stripped[0] == "#":
                try:
                    _parse_landmark(path, stripped[1:], None, landmarks)
                except MeshFileError:
                    return None
                continue
            key = stripped.split(None, 1)[0]
            if key not in _OBJ_IGNORED:
                return None
            vn_count += key == "vn"
    if not v_lines or not f_lines:
        return None

    block = _bulk_rows(v_lines, "v", (4, 7))
    if block is None:
        return None
    vertices = block[:, :3]  # (V, 3)
    colors = None
    if block.shape[1] == 6:
        colors = block[:, 3:]  # (V, 3)
        if ((colors < 0) | (colors > 1)).any():
            return None
    V = vertices.shape[0]
    uv = None
    if vt_lines:
        uv = _bulk_rows(vt_lines, "vt", (3,))  # (T, 2)
        if uv is None:
            return None

    P = len(f_lines)
    tokens = " ".join(f_lines).split()
    if len(tokens) == 4 * P and tokens[::4].count("f") == P:  # all triangles
        sizes = np.full(P, 3, dtype=np.int64)
        del tokens[::4]
    else:
        starts = [i for i, tok in enumerate(tokens) if tok == "f"]
        if len(starts) != P:
            return None
        starts.append(len(tokens))
        sizes = np.diff(np.asarray(starts, dtype=np.int64)) - 1  # (P,)
        if (sizes < 3).any():
            return None
        tokens = [tok for tok in tokens if tok != "f"]
    C = len(tokens)
    joined = " ".join(tokens)  # corners separated by single spaces
    digits = joined.replace("/", "").replace(" ", "")
    if not (digits.isascii() and digits.isdigit()):  # positive decimal indices only
        return None
    separators = tokens[0].translate(_DELETE_DIGITS)  # "", "/" or "//"
    if joined.translate(_DELETE_DIGITS) != " ".join([separators] * C):  # every corner has the same style
        return None
    doubles = joined.count("//")
    if separators == "":
        width, has_vt, has_vn = 1, False, False
    elif separators == "/":
        width, has_vt, has_vn = 2, True, False
    elif doubles == 0:
        width, has_vt, has_vn = 3, True, True
    elif doubles == C:
        width, has_vt, has_vn = 2, False, True
        joined = joined.replace("//", "/")
    else:
        return None
    if max(map(len, tokens)) > 18:  # keep every index below 10**18: no int64 overflow
        return None
    # an empty index ("1/", "//3") yields fewer numbers than C * width
    idx = np.fromstring(joined.replace("/", " "), dtype=np.int64, sep=" ")  # (C*width,)
    if idx.size != C * width:
        return None
    idx = idx.reshape(C, width) - 1  # (C, width) 0-based
    if (idx[:, 0] < 0).any() or (idx[:, 0] >= V).any():
        return None
    if has_vt != (uv is not None):
        return None
    if has_vt and ((idx[:, 1] < 0).any() or (idx[:, 1] >= uv.shape[0]).any()):
        return None
    if has_vn and ((idx[:, -1] < 0).any() or (idx[:, -1] >= vn_count).any()):
        return None
    if any(not 0 <= index < V for index, _ in landmarks.values()):
        return None
    corners = _fan_corners(sizes)  # (F, 3)
    faces = idx[:, 0][corners]  # (F, 3)
    uv_faces = idx[:, 1][corners] if has_vt else None  # (F, 3)
    return _Parts(np.ascontiguousarray(vertices), faces, uv, uv_faces, colors, landmarks)


def _bulk_rows(lines: list[str], keyword: str, widths: tuple) -> np.ndarray | None:
    """Parse ``keyword a b c ...`` lines with one common field count in bulk.

    Returns the ``(N, width - 1)`` float64 values, or ``None`` if the lines do
    not all have the same allowed width, or a value is not a finite number.
    """
    n = len(lines)
    text = " ".join(lines)
    if not _plain(text):
        return None
    tokens = text.split()  # (N*width,)
    width = len(tokens) // n
    if width not in widths or len(tokens) != width * n or tokens[::width].count(keyword) != n:
        return None
    del tokens[::width]  # drop the keywords: (N*(width-1),)
    try:
        values = np.array(list(map(float, tokens)), dtype=np.float64).reshape(n, width - 1)  # (N, width-1)
    except ValueError:
        return None
    if not np.isfinite(values).all():
        return None
    return values


def _read_obj_careful(path: str, lines: list[str]) -> _Parts:
    """Line-by-line OBJ parse with precise errors; the reference for :func:`_read_obj_fast`."""
    v_rows: list[list[str]] = []
    v_lines: list[int] = []
    vt_rows: list[list[str]] = []
    vt_lines: list[int] = []
    vn_count = 0
    f_rows: list[list[str]] = []
    f_lines: list[int] = []
    f_before: list[tuple[int, int, int]] = []  # (#v, #vt, #vn) defined before each face
    f_slash = False
    landmarks: dict = {}

    for ln, raw in enumerate(lines, 1):
        hash_at = raw.find("#")
        if hash_at >= 0:
            if not raw[:hash_at].strip():
                _parse_landmark(path, raw[hash_at + 1 :], ln, landmarks)
                continue
            raw = raw[:hash_at]
        fields = raw.split()
        if not fields:
            continue
        key = fields[0]
        if key == "v":
            v_rows.append(fields)
            v_lines.append(ln)
        elif key == "f":
            f_rows.append(fields)
            f_lines.append(ln)
            f_before.append((len(v_rows), len(vt_rows), vn_count))
            f_slash = f_slash or "/" in raw
        elif key == "vt":
            vt_rows.append(fields)
            vt_lines.append(ln)
        elif key == "vn":
            vn_count += 1
        elif key not in _OBJ_IGNORED:
            hint = {"l": " (a line element, as a wireframe export writes: export the faces alone)",
                    "p": " (a point element: export the faces alone)",
                    "vp": " (a free-form curve or surface parameter: export a triangle mesh)"}.get(key, "")
            raise MeshFileError(
                path,
                f"unsupported OBJ statement {_clip(key)}: expected one of v, vt, vn, f, o, g, s, usemtl, mtllib or a "
                f"# comment{hint}",
                ln,
            )

    vertices, colors = _obj_vertices(path, v_rows, v_lines)
    uv = _obj_texcoords(path, vt_rows, vt_lines)
    faces, uv_faces = _obj_faces(path, f_rows, f_lines, f_before, f_slash, vertices.shape[0], len(vt_rows), vn_count)
    if uv is not None and uv_faces is None and faces.shape[0]:
        raise MeshFileError(
            path, f"found {uv.shape[0]} 'vt' texture coordinates but no face uses them: expected 'f v/vt' corners"
        )
    if uv_faces is None:
        uv = None
    return _Parts(vertices, faces, uv, uv_faces, colors, landmarks)


def _obj_vertices(path, rows, lines):
    """``v`` rows -> positions ``(V, 3)`` and colours ``(V, 3)`` or None, all rows of one width."""
    if not rows:
        return np.zeros((0, 3)), None
    lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))  # (V,)
    odd = np.flatnonzero((lens != 4) & (lens != 7))
    if odd.size:
        i = int(odd[0])
        raise MeshFileError(
            path, f"vertex: expected 3 values (x y z) or 6 (x y z r g b) after 'v', found {int(lens[i]) - 1}", lines[i]
        )
    mixed = np.flatnonzero(lens != lens[0])
    if mixed.size:
        i = int(mixed[0])
        has = "has" if lens[i] == 7 else "has no"
        other = "do not" if lens[i] == 7 else "do"
        raise MeshFileError(
            path, f"vertex {has} colour but earlier vertices {other} (line {lines[0]}): expected all or none", lines[i]
        )
    values = _to_floats(path, [r[1:] for r in rows], lines, "vertex")  # (V, 3 or 6)
    colors = None
    if values.shape[1] == 6:
        colors = values[:, 3:6]  # (V, 3)
        _check_colors(path, colors, lines, "vertex colour")
    return np.ascontiguousarray(values[:, :3]), colors  # (V, 3)


def _obj_texcoords(path, rows, lines):
    """``vt`` rows -> ``(T, 2)`` UVs (an optional third value is checked and ignored), or None."""
    if not rows:
        return None
    lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))  # (T,)
    odd = np.flatnonzero((lens != 3) & (lens != 4))
    if odd.size:
        i = int(odd[0])
        raise MeshFileError(
            path, f"texture coordinate: expected 2 values (u v) or 3 (u v w) after 'vt', found {int(lens[i]) - 1}", lines[i]
        )
    uv = _to_floats(path, [r[1:3] for r in rows], lines, "texture coordinate")  # (T, 2)
    for i in np.flatnonzero(lens == 4):  # the optional w is ignored but must be a number
        _to_floats(path, [rows[i][3:4]], [lines[i]], "texture coordinate")
    return uv


def _obj_faces(path, rows, lines, before, has_slash, V, T, N):
    """``f`` rows -> fan-triangulated ``faces (F, 3)`` and ``uv_faces (F, 3)`` or None.

    ``before[p]`` counts the ``v``, ``vt``, ``vn`` lines defined before face
    ``p`` (for negative indices); ``V``, ``T``, ``N`` are the file's totals.
    """
    if not rows:
        return np.zeros((0, 3), dtype=np.int64), None
    sizes = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)) - 1  # (P,)
    small = np.flatnonzero(sizes < 3)
    if small.size:
        i = int(small[0])
        raise MeshFileError(path, f"face: expected at least 3 vertices, found {int(sizes[i])}", lines[i])
    polygon_of = _polygon_of(sizes)
    where = lambda corner: lines[polygon_of(corner)]  # noqa: E731

    vt_tokens = None
    vn_tokens: list[str] = []
    vn_corners: list[int] = []
    if not has_slash:
        v_tokens = [tok for row in rows for tok in row[1:]]  # (C,)
    else:
        v_tokens = []
        vt_list: list[str] = []
        with_vt = None  # whether this file's faces carry vt indices
        corner = 0
        for row, ln in zip(rows, lines):
            face_vt = None
            for tok in row[1:]:
                sub = tok.split("/")
                n = len(sub)
                if n > 3 or sub[0] == "" or (n == 2 and sub[1] == "") or (n == 3 and sub[2] == ""):
                    raise MeshFileError(
                        path, f"face corner: expected 'v', 'v/vt', 'v/vt/vn' or 'v//vn', found {_clip(tok)}", ln
                    )
                corner_vt = n >= 2 and sub[1] != ""
                if face_vt is None:
                    face_vt = corner_vt
                elif corner_vt != face_vt:
                    raise MeshFileError(
                        path,
                        f"face corners mix with and without texture index: expected all or none, found {_clip(' '.join(row[1:]))}",
                        ln,
                    )
                v_tokens.append(sub[0])
                if corner_vt:
                    vt_list.append(sub[1])
                if n == 3:
                    vn_tokens.append(sub[2])
                    vn_corners.append(corner)
                corner += 1
            if with_vt is None:
                with_vt = face_vt
            elif face_vt != with_vt:
                state = "has" if face_vt else "has no"
                raise MeshFileError(
                    path,
                    f"face {state} texture indices but the first face (line {lines[0]}) "
                    f"{'does not' if face_vt else 'does'}: expected all faces with 'v/vt' or none",
                    ln,
                )
        if with_vt:
            vt_tokens = vt_list

    counts = np.asarray(before, dtype=np.int64)  # (P, 3) elements defined before each face
    v_idx = _resolve_obj(path, v_tokens, np.repeat(counts[:, 0], sizes), V, where, "vertex")  # (C,)
    corners = _fan_corners(sizes)  # (F, 3)
    faces = v_idx[corners]  # (F, 3)
    uv_faces = None
    if vt_tokens is not None:
        vt_idx = _resolve_obj(path, vt_tokens, np.repeat(counts[:, 1], sizes), T, where, "texture")  # (C,)
        uv_faces = vt_idx[corners]  # (F, 3)
    if vn_tokens:
        vn_before = np.repeat(counts[:, 2], sizes)[np.asarray(vn_corners)]  # (C_n,)
        _resolve_obj(path, vn_tokens, vn_before, N, lambda i: where(vn_corners[i]), "normal")
    return faces, uv_faces


def _resolve_obj(path, tokens, defined_before, total, where, what):
    """1-based / negative OBJ indices -> 0-based, checked against ``total`` elements.

    Shapes: ``tokens (C,)``, ``defined_before (C,)`` -> ``(C,)`` int64.
    """
    raw = _to_ints(path, tokens, where, f"face {what} index")  # (C,)
    idx = np.where(raw > 0, raw - 1, defined_before + raw)  # (C,)
    bad = np.flatnonzero((raw == 0) | (idx < 0) | (idx >= total))
    if bad.size:
        i = int(bad[0])
        r = int(raw[i])
        keyword = {"vertex": "v", "texture": "vt", "normal": "vn"}[what]
        if r == 0:
            reason = f"face {what} index 0 is invalid: OBJ indices start at 1 (or count back from -1)"
        elif total == 0:  # 'expected 1..0' said it backwards
            reason = f"face {what} index {r}: the file has no '{keyword}' lines for it to refer to"
        elif r > 0:
            reason = f"face {what} index {r} out of range: expected 1..{total} (file has {total} {what} entries)"
        else:
            reason = (
                f"face {what} index {r} out of range: only {int(defined_before[i])} {what} entries "
                f"are defined before this face (file has {total})"
            )
        raise MeshFileError(path, reason, where(i))
    return idx


def _write_obj(mesh: Mesh, path: str, *, material: str | None = None) -> None:
    """OBJ text: landmark comments, ``mtllib`` (``material``: the ``.mtl`` file name, or ``None``), ``v``
    (with colours), ``vt``, ``usemtl``, 1-based ``f``."""
    header = [f"# mesh_decoder OBJ: {mesh.num_vertices} vertices, {mesh.num_faces} triangles"]
    header += [f"# landmark {name} {index}" for name, index in mesh.landmarks.items()]
    if material is not None:
        header.append(f"mtllib {material}")
    with atomic_write(path, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("utf-8"))
        handle.write(_vertex_rows(mesh, "v "))
        if mesh.uv is None:
            handle.write(_format_rows("f %d %d %d", mesh.faces + 1))
        else:
            handle.write(_format_rows("vt %.9g %.9g", mesh.uv.astype(np.float32)))
            if material is not None:
                handle.write(f"usemtl {OBJ_MATERIAL}\n".encode("ascii"))
            corners = np.stack([mesh.faces + 1, mesh.uv_faces + 1], axis=2).reshape(-1, 6)  # (F, 3, 2) -> (F, 6)
            handle.write(_format_rows("f %d/%d %d/%d %d/%d", corners))


def _vertex_rows(mesh: Mesh, prefix: str) -> bytes:
    """One ``prefix x y z`` line per vertex, with ``r g b`` after it when the mesh has colours."""
    rows = mesh.vertices.astype(np.float32)  # (V, 3)
    if mesh.colors is not None:
        rows = np.concatenate([rows, mesh.colors.astype(np.float32)], axis=1)  # (V, 6)
    return _format_rows(prefix + " ".join(["%.9g"] * rows.shape[1]), rows)


def _format_rows(fmt: str, rows: np.ndarray) -> bytes:
    """One ``fmt % row`` line per row (float32 rows print their float32 value)."""
    line = fmt + "\n"
    return "".join([line % tuple(r) for r in rows.tolist()]).encode("ascii")


# =============================================================================
# OFF
# =============================================================================
def _read_off(path: str, data: bytes) -> _Parts:
    """Parse OFF bytes: the bulk path when it applies, else the careful line-by-line reader."""
    lines = _text_lines(path, data)
    parts = _read_off_fast(path, lines)
    return parts if parts is not None else _read_off_careful(path, lines)


_OFF_VERTEX_BLOCK = {
    k: re.compile(r"(?:[ \t]*\S+(?:[ \t]+\S+){%d}[ \t]*\n)*" % (k - 1)) for k in (3, 6)
}
_OFF_TRIANGLE_BLOCK = re.compile(r"(?:[ \t]*3(?:[ \t]+[0-9]{1,18}){3}[ \t]*\n)*")


def _read_off_fast(path: str, lines: list[str]) -> _Parts | None:
    """Bulk parse of a plain OFF/COFF with triangles and float colours; ``None`` otherwise.

    Anything unusual (counts on the header line, comments between data lines,
    polygons, integer colours, alpha, any error) returns ``None`` and
    :func:`_read_off_careful` decides, so both agree where this path accepts.
    """
    n = len(lines)
    landmarks: dict = {}
    records: list[str] = []
    i = 0
    while i < n:  # header and counts, then the comments before the first data line
        stripped = lines[i].strip()
        if stripped and stripped[0] != "#":
            if len(records) == 2:
                break
            if "#" in stripped:
                return None
            records.append(stripped)
        elif stripped:
            try:
                _parse_landmark(path, stripped[1:], None, landmarks)
            except MeshFileError:
                return None
        i += 1
    if len(records) != 2 or records[0] not in ("OFF", "COFF"):
        return None
    counts = records[1].split()
    if len(counts) != 3 or not all(c.isascii() and c.isdigit() for c in counts):
        return None
    nv, nf = int(counts[0]), int(counts[1])
    end = n
    while end > i and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    for line in lines[end:]:  # the comments after the data, where save_mesh puts the landmarks
        if line.strip():
            try:
                _parse_landmark(path, line.strip()[1:], None, landmarks)
            except MeshFileError:
                return None
    if nv == 0 or nf == 0 or end - i != nv + nf:
        return None
    width = 6 if records[0] == "COFF" else 3
    vblock = "\n".join(lines[i : i + nv]) + "\n"
    fblock = "\n".join(lines[i + nv : end]) + "\n"
    if "#" in vblock or "#" in fblock or not _plain(vblock):
        return None
    if not _OFF_VERTEX_BLOCK[width].fullmatch(vblock) or not _OFF_TRIANGLE_BLOCK.fullmatch(fblock):
        return None
    try:
        values = np.array(list(map(float, vblock.split())), dtype=np.float64).reshape(nv, width)  # (V, width)
    except ValueError:
        return None
    if not np.isfinite(values).all():
        return None
    colors = values[:, 3:] if width == 6 else None  # (V, 3)
    if colors is not None and ((colors < 0) | (colors > 1)).any():
        return None
    tri = np.fromstring(fblock, dtype=np.int64, sep=" ")  # (F*4,)
    if tri.size != 4 * nf:
        return None
    faces = tri.reshape(nf, 4)[:, 1:]  # (F, 3)
    if (faces >= nv).any():
        return None
    if any(not 0 <= index < nv for index, _ in landmarks.values()):
        return None
    return _Parts(np.ascontiguousarray(values[:, :3]), np.ascontiguousarray(faces), None, None, colors, landmarks)


def _read_off_careful(path: str, lines: list[str]) -> _Parts:
    """Line-by-line OFF parse with precise errors; the reference for :func:`_read_off_fast`."""
    records: list[tuple[int, list[str]]] = []  # (line, fields) of every non-comment line
    landmarks: dict = {}
    for ln, raw in enumerate(lines, 1):
        hash_at = raw.find("#")
        if hash_at >= 0:
            if not raw[:hash_at].strip():
                _parse_landmark(path, raw[hash_at + 1 :], ln, landmarks)
            raw = raw[:hash_at]
        fields = raw.split()
        if fields:
            records.append((ln, fields))
    if not records:
        raise MeshFileError(path, "no OFF header: expected 'OFF' or 'COFF', found only comments or blank lines")

    ln, head = records[0]
    keyword = head[0]
    if keyword not in ("OFF", "COFF"):
        if keyword.endswith("OFF"):
            reason = f"unsupported OFF variant {_clip(keyword)}: expected 'OFF' or 'COFF'"
        else:
            reason = f"not an OFF file: expected the header 'OFF' or 'COFF', found {_clip(' '.join(head))}"
        raise MeshFileError(path, reason, ln)
    colored = keyword == "COFF"
    if len(head) > 1:  # counts on the header line ("OFF 8 6 0")
        counts_ln, counts = ln, head[1:]
        body = records[1:]
    elif len(records) > 1:
        counts_ln, counts = records[1]
        body = records[2:]
    else:
        raise MeshFileError(path, "truncated OFF file: expected a counts line 'V F E' after the header", ln)
    if len(counts) != 3:
        raise MeshFileError(path, f"OFF counts: expected 3 integers 'V F E', found {_clip(' '.join(counts))}", counts_ln)
    try:
        nv, nf, _ = (_strict_int(c) for c in counts)
    except ValueError:
        raise MeshFileError(path, f"OFF counts: expected 3 integers 'V F E', found {_clip(' '.join(counts))}", counts_ln) from None
    if nv < 0 or nf < 0:
        raise MeshFileError(path, f"OFF counts: expected non-negative counts, found V={nv}, F={nf}", counts_ln)
    if nv + nf > len(body):
        raise MeshFileError(
            path,
            f"truncated OFF file: header declares {nv} vertices and {nf} faces ({nv + nf} lines), "
            f"found {len(body)} data lines",
            counts_ln,
        )
    if nv + nf < len(body):
        ln_extra = body[nv + nf][0]
        raise MeshFileError(
            path,
            f"OFF counts mismatch: header declares {nv} vertices and {nf} faces ({nv + nf} lines), "
            f"found {len(body)} data lines",
            ln_extra,
        )

    v_records = body[:nv]
    f_records = body[nv:]
    vertices, colors = _off_vertices(path, v_records, colored)
    faces = _off_faces(path, f_records, nv)
    return _Parts(vertices, faces, None, None, colors, landmarks)


def _off_vertices(path, records, colored):
    """Vertex records -> positions ``(V, 3)`` and colours ``(V, 3)`` (COFF) or None."""
    if not records:
        return np.zeros((0, 3)), None
    v_lines = [ln for ln, _ in records]
    rows = [fields for _, fields in records]
    lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))  # (V,)
    if colored:
        odd = np.flatnonzero((lens != 6) & (lens != 7))
        expected = "6 (x y z r g b) or 7 (x y z r g b a)"
    else:
        odd = np.flatnonzero(lens != 3)
        expected = "3 (x y z; use a COFF header for colours)"
    if odd.size:
        i = int(odd[0])
        raise MeshFileError(path, f"OFF vertex: expected {expected} values, found {int(lens[i])}", v_lines[i])
    values = _to_floats(path, [r[:6] for r in rows], v_lines, "OFF vertex")  # (V, 3 or 6)
    for i in np.flatnonzero(lens == 7):  # alpha is ignored but must be a number
        _to_floats(path, [rows[i][6:7]], [v_lines[i]], "OFF vertex alpha")
    colors = None
    if colored:
        colors = values[:, 3:6]  # (V, 3)
        if colors.max() > 1.0 and np.all(colors == np.round(colors)):
            # Geomview allows integer colours 0..255
            bad = np.flatnonzero(((colors < 0) | (colors > 255)).any(axis=1))
            if bad.size:
                i = int(bad[0])
                raise MeshFileError(
                    path, f"OFF vertex colour: expected integers in [0, 255], found {colors[i].tolist()}", v_lines[i]
                )
            colors = colors / 255.0
        else:
            _check_colors(path, colors, v_lines, "OFF vertex colour")
    return np.ascontiguousarray(values[:, :3]), colors  # (V, 3)


def _off_faces(path, records, V):
    """Face records ``n i_1 .. i_n`` -> fan-triangulated ``(F, 3)`` 0-based faces."""
    if not records:
        return np.zeros((0, 3), dtype=np.int64)
    f_lines = [ln for ln, _ in records]
    rows = [fields for _, fields in records]
    sizes = _to_ints(path, [r[0] for r in rows], lambda i: f_lines[i], "OFF face size")  # (P,)
    small = np.flatnonzero(sizes < 3)
    if small.size:
        i = int(small[0])
        raise MeshFileError(path, f"OFF face: expected at least 3 vertices, found {int(sizes[i])}", f_lines[i])
    lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)) - 1  # (P,)
    odd = np.flatnonzero(lens != sizes)
    if odd.size:
        i = int(odd[0])
        raise MeshFileError(
            path,
            f"OFF face: expected {int(sizes[i])} vertex indices after the size {int(sizes[i])} "
            f"(face colours are not supported), found {int(lens[i])} values",
            f_lines[i],
        )
    polygon_of = _polygon_of(sizes)
    where = lambda corner: f_lines[polygon_of(corner)]  # noqa: E731
    idx = _to_ints(path, [tok for r in rows for tok in r[1:]], where, "OFF face vertex index")  # (C,)
    bad = np.flatnonzero((idx < 0) | (idx >= V))
    if bad.size:
        i = int(bad[0])
        raise MeshFileError(
            path, f"OFF face: vertex index {int(idx[i])} out of range: expected 0..{V - 1} (V={V})", where(i)
        )
    return idx[_fan_corners(sizes)]  # (F, 3)


def _write_off(mesh: Mesh, path: str) -> None:
    """OFF (or COFF with float colours) text with landmark comments at the end: OpenMesh and trimesh read
    a comment between the counts and the vertices as data (no faces, or an error)."""
    keyword = "OFF" if mesh.colors is None else "COFF"
    header = [keyword, f"{mesh.num_vertices} {mesh.num_faces} 0"]
    footer = [f"# landmark {name} {index}" for name, index in mesh.landmarks.items()]
    with atomic_write(path, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("utf-8"))
        handle.write(_vertex_rows(mesh, ""))
        handle.write(_format_rows("3 %d %d %d", mesh.faces))
        if footer:
            handle.write(("\n".join(footer) + "\n").encode("utf-8"))


# =============================================================================
# PLY
# =============================================================================
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_PLY_FORMATS = {"ascii": "=", "binary_little_endian": "<", "binary_big_endian": ">"}
_PLY_VERTEX_UV = (("u", "v"), ("s", "t"), ("texture_u", "texture_v"), ("texture_s", "texture_t"))
_PLY_FACE_LISTS = ("vertex_indices", "vertex_index")


class _PlyProp(NamedTuple):
    name: str
    dtype: str  # numpy kind+size of the values, e.g. "f4"
    len_dtype: str | None  # list length type, None for a scalar property
    line: int


class _PlyElement(NamedTuple):
    name: str
    count: int
    props: dict  # name -> _PlyProp, in file order
    line: int


class _PlyHeader(NamedTuple):
    fmt: str
    elements: list
    comments: list  # (text, line)
    body_offset: int
    num_lines: int  # lines up to and including end_header


def _parse_ply_header(path: str, data: bytes) -> _PlyHeader:
    """Parse and check a PLY header before any body data is read.

    The declared element counts are checked against the bytes after the
    header (binary: the fixed bytes per element; ASCII: at least two bytes per
    property value), so a corrupt count fails here instead of allocating.
    """
    if data[:3] != b"ply":
        raise MeshFileError(path, f"not a PLY file: expected the magic line 'ply', found {data[:16]!r}", 1)
    if data[3:5] == b"\r\n":
        nl = b"\r\n"
    elif data[3:4] in (b"\n", b"\r"):
        nl = data[3:4]
    else:
        raise MeshFileError(path, f"not a PLY file: expected 'ply' followed by a line break, found {data[:16]!r}", 1)
    start = 3 + len(nl)
    marker = nl + b"end_header" + nl
    end = data.find(marker, start - len(nl))
    if end < 0:
        raise MeshFileError(path, "truncated or corrupt PLY header: expected an 'end_header' line, found none")
    header = data[start:end] if end >= start else b""
    try:
        text = header.decode("ascii")
    except UnicodeDecodeError as exc:
        line = header.count(nl, 0, exc.start) + 2
        raise MeshFileError(path, f"PLY header: expected ASCII text, found byte {header[exc.start]:#04x}", line) from None
    lines = text.split(nl.decode("ascii")) if text else []
    num_lines = len(lines) + 2

    fmt = None
    elements: list[_PlyElement] = []
    comments: list[tuple[str, int]] = []
    for ln, line in enumerate(lines, 2):
        stripped = line.strip()
        if not stripped:
            continue
        key = stripped.split(None, 1)[0]
        fields = stripped.split()[1:]
        if key == "comment":
            comments.append((stripped[len(key) + 1 :], ln))
        elif key == "obj_info":
            continue
        elif key == "format":
            if fmt is not None or elements:
                raise MeshFileError(path, "PLY header: expected a single 'format' line before the elements", ln)
            if len(fields) != 2 or fields[0] not in _PLY_FORMATS or fields[1] != "1.0":
                raise MeshFileError(
                    path,
                    "PLY header: expected 'format ascii|binary_little_endian|binary_big_endian 1.0', "
                    f"found {_clip(stripped)}",
                    ln,
                )
            fmt = fields[0]
        elif key == "element":
            if fmt is None:
                raise MeshFileError(path, "PLY header: expected the 'format' line before the first element", ln)
            if len(fields) != 2:
                raise MeshFileError(path, f"PLY header: expected 'element <name> <count>', found {_clip(stripped)}", ln)
            try:
                count = _strict_int(fields[1])
            except ValueError:
                count = -1
            if count < 0:
                raise MeshFileError(
                    path, f"PLY header: expected a non-negative element count, found {_clip(fields[1])}", ln
                )
            if any(e.name == fields[0] for e in elements):
                raise MeshFileError(path, f"PLY header: element {fields[0]!r} declared twice", ln)
            elements.append(_PlyElement(fields[0], count, {}, ln))
        elif key == "property":
            if not elements:
                raise MeshFileError(path, "PLY header: expected an 'element' line before the first property", ln)
            props = elements[-1].props
            if len(fields) == 4 and fields[0] == "list":
                len_type, val_type, name = fields[1:]
                if len_type not in _PLY_TYPES or _PLY_TYPES[len_type][0] == "f" or val_type not in _PLY_TYPES:
                    raise MeshFileError(
                        path, f"PLY header: expected 'property list <int type> <type> <name>', found {_clip(stripped)}", ln
                    )
                prop = _PlyProp(name, _PLY_TYPES[val_type], _PLY_TYPES[len_type], ln)
            elif len(fields) == 2 and fields[0] in _PLY_TYPES:
                prop = _PlyProp(fields[1], _PLY_TYPES[fields[0]], None, ln)
            else:
                raise MeshFileError(
                    path,
                    f"PLY header: expected 'property <type> <name>' with type one of {', '.join(_PLY_TYPES)}, "
                    f"found {_clip(stripped)}",
                    ln,
                )
            if prop.name in props:
                raise MeshFileError(
                    path, f"PLY header: property {prop.name!r} declared twice in element {elements[-1].name!r}", ln
                )
            props[prop.name] = prop
        else:
            raise MeshFileError(
                path,
                "PLY header: expected one of format, comment, obj_info, element, property, end_header; "
                f"found {_clip(key)}",
                ln,
            )
    if fmt is None:
        raise MeshFileError(path, "PLY header: expected a 'format' line, found none")

    body_offset = end + len(marker)
    body = len(data) - body_offset
    binary = fmt != "ascii"
    need = 0
    for el in elements:
        if binary:  # fixed bytes: scalars plus each list's length field
            per = sum(int(p.len_dtype[1] if p.len_dtype else p.dtype[1]) for p in el.props.values())
        else:  # at least one character and one separator per value, one line per element
            per = max(1, 2 * len(el.props))
        need += el.count * per
        if el.count > body + 1 or need > body + (0 if binary else 1):
            raise MeshFileError(
                path,
                f"truncated PLY file or corrupt count: header declares {el.count} {el.name!r} elements, "
                f"needing at least {need} bytes after the header, found {body}",
                el.line,
            )
    return _PlyHeader(fmt, elements, comments, body_offset, num_lines)


def _ply_structure(path: str, header: _PlyHeader):
    """Check the header names a usable vertex and face element; return (vertex, face) elements."""
    by_name = {e.name: e for e in header.elements}
    vertex = by_name.get("vertex")
    if vertex is None:
        raise MeshFileError(path, f"PLY: expected a 'vertex' element, found {[e.name for e in header.elements]}")
    for axis in ("x", "y", "z"):
        prop = vertex.props.get(axis)
        if prop is None or prop.len_dtype is not None:
            raise MeshFileError(
                path, f"PLY vertex element: expected scalar properties x, y, z, found {list(vertex.props)}", vertex.line
            )
    colours = [c for c in ("red", "green", "blue") if c in vertex.props]
    if colours and len(colours) != 3:
        raise MeshFileError(
            path, f"PLY vertex element: expected all of red, green, blue or none, found only {colours}", vertex.line
        )
    for c in colours:
        if vertex.props[c].len_dtype is not None:
            raise MeshFileError(path, f"PLY vertex property {c!r}: expected a scalar, found a list", vertex.props[c].line)
    face = by_name.get("face")
    if face is None:
        raise MeshFileError(path, "PLY: expected a 'face' element (point clouds are not supported), found none")
    names = [n for n in _PLY_FACE_LISTS if n in face.props]
    if len(names) != 1:
        raise MeshFileError(
            path,
            f"PLY face element: expected one list property 'vertex_indices' or 'vertex_index', found {list(face.props)}",
            face.line,
        )
    prop = face.props[names[0]]
    if prop.len_dtype is None or prop.dtype[0] == "f":
        raise MeshFileError(path, f"PLY face property {prop.name!r}: expected a list of integers", prop.line)
    tc = face.props.get("texcoord")
    if tc is not None and tc.len_dtype is None:
        raise MeshFileError(path, "PLY face property 'texcoord': expected a list of floats, found a scalar", tc.line)
    return vertex, face


class _BoundedFile(io.FileIO):
    """A file whose ``read(n)`` never asks for more than the bytes left.

    :mod:`plyfile` reads a list of ``n`` values with ``read(n * size)``, and a
    plain file object allocates the requested size up front, so a corrupt list
    length would otherwise try to allocate gigabytes.
    """

    def __init__(self, path: str):
        super().__init__(path, "r")
        self._size = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size >= 0:
            size = min(size, max(self._size - self.tell(), 0))
        return super().read(size)


def _ply_where(header: _PlyHeader, name: str, row: int) -> int | str:
    """Locate a row of an element: the line number in ASCII (one element per line), else a description."""
    if header.fmt != "ascii":
        return f"element {name!r} row {row}"
    before = 0
    for el in header.elements:
        if el.name == name:
            break
        before += el.count
    return header.num_lines + before + row + 1


def _plyfile_error(path: str, exc: Exception, header: _PlyHeader, data: bytes | None = None) -> MeshFileError:
    """Turn a plyfile exception into a MeshFileError naming the element, row and line."""
    import plyfile

    if isinstance(exc, plyfile.PlyElementParseError):
        name = exc.element.name if exc.element is not None else "?"
        reason = f"PLY element {name!r}"
        if exc.row is not None:
            reason += f" row {exc.row}"
        if exc.prop is not None:
            reason += f" property {exc.prop.name!r}"
        reason += f": {exc.message}"
        where = None
        if exc.row is not None and exc.element is not None:
            where = _ply_where(header, name, exc.row)
        return MeshFileError(path, reason, where)
    if isinstance(exc, plyfile.PlyHeaderParseError):
        return MeshFileError(path, f"PLY header: {exc.message}", exc.line if isinstance(exc.line, int) else None)
    if isinstance(exc, OverflowError) and header.fmt == "ascii" and data is not None:
        found = _ascii_ply_out_of_range(path, data, header)
        if found is not None:
            return found
    return MeshFileError(path, f"malformed PLY data: {type(exc).__name__}: {exc}")


_INTEGER = re.compile(r"[+-]?\d+")


def _ascii_ply_out_of_range(path: str, data: bytes, header: _PlyHeader) -> MeshFileError | None:
    """The first integer of an ASCII PLY body beyond its declared type's range (``300`` as a ``uchar``), named
    with its line, element, row and property; ``None`` when there is none (one row per line, as written)."""
    lines = data[header.body_offset:].decode("ascii", errors="replace").splitlines()
    rows = ((el, row) for el in header.elements for row in range(el.count))
    for ln, ((el, row), line) in enumerate(zip(rows, lines), header.num_lines + 1):
        tokens, at = line.split(), 0
        for prop in el.props.values():
            parts = [("a list length", prop.len_dtype, 1)] if prop.len_dtype is not None else []
            count = int(tokens[at]) if parts and at < len(tokens) and _INTEGER.fullmatch(tokens[at]) else 1
            for what, dtype, n in parts + [("values", prop.dtype, count)]:
                info = np.iinfo(np.dtype(dtype)) if dtype[0] in "iu" else None
                token = None if info is None else next((t for t in tokens[at:at + n] if _INTEGER.fullmatch(t)
                                                        and not info.min <= int(t) <= info.max), None)
                if token is not None:
                    return MeshFileError(path, f"PLY element {el.name!r} row {row} property {prop.name!r}: expected "
                                               f"{what} of type {np.dtype(dtype)} ({info.min} to {info.max}), found "
                                               f"{token}", ln)
                at += n
    return None


@contextlib.contextmanager
def _quiet():
    """Silence numpy's warnings while plyfile parses bad content (``1e999`` -> inf, empty lists).

    The values are checked afterwards and reported with their row.
    """
    with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _plyfile_read(path: str, data: bytes, header: _PlyHeader):
    """Read all elements with plyfile; returns ``{element: {property: array}}``.

    Binary files whose list properties have the usual lengths (triangles, 6
    texture coordinates) are memory-mapped; anything else is read from memory.
    """
    import plyfile

    def collect(ply):
        # copy out of any memory map; list properties stay object arrays or (N, n) arrays
        return {el.name: {p.name: np.array(el.data[p.name]) for p in el.properties} for el in ply.elements}

    binary = header.fmt != "ascii"
    if binary:
        guess: dict = {}
        fast = True
        for el in header.elements:
            for p in el.props.values():
                if p.len_dtype is None:
                    continue
                if p.name in _PLY_FACE_LISTS:
                    guess.setdefault(el.name, {})[p.name] = 3
                elif p.name == "texcoord":
                    guess.setdefault(el.name, {})[p.name] = 6 if el.name == "face" else 2
                else:
                    fast = False
        if fast:
            try:
                with _BoundedFile(path) as handle, _quiet():
                    ply = plyfile.PlyData.read(handle, mmap="c", known_list_len=guess)
                    arrays = collect(ply)
                    consumed = handle.tell()
                    size = handle._size
                del ply
                if size == len(data):
                    return arrays, consumed
            except MemoryError:
                raise
            except Exception:  # noqa: BLE001 - any failure: re-read from memory for the real error
                pass

    stream = io.BytesIO(data)
    try:
        with _quiet():
            ply = plyfile.PlyData.read(stream, mmap=False)
        arrays = collect(ply)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - plyfile raises many types for bad content
        raise _plyfile_error(path, exc, header, data) from exc
    return arrays, stream.tell() if binary else None


def _ply_list(path, column: np.ndarray, what: str, where_of):
    """Lengths and flat values of a plyfile list column (object array or ``(N, n)`` array).

    Shapes: ``column (N,)`` of arrays or ``(N, n)`` -> ``lengths (N,)``, ``values (sum(lengths),)``.
    """
    if column.dtype != object:
        n = column.shape[1] if column.ndim == 2 else 1
        return np.full(column.shape[0], n, dtype=np.int64), column.reshape(-1)  # (N,), (N*n,)
    lengths = np.fromiter(map(len, column), dtype=np.int64, count=column.shape[0])  # (N,)
    if column.shape[0] == 0:
        return lengths, np.zeros(0)
    return lengths, np.concatenate([np.asarray(c).reshape(-1) for c in column])  # (sum(lengths),)


def _read_ply(path: str, data: bytes) -> _Parts:
    """Check the header, read the body with plyfile, then interpret and check the properties."""
    header = _parse_ply_header(path, data)
    vertex_el, face_el = _ply_structure(path, header)
    if header.fmt == "ascii":
        body = data[header.body_offset :]
        try:
            body.decode("ascii")
        except UnicodeDecodeError as exc:
            line = header.num_lines + 1 + len(re.findall(rb"\r\n|\r|\n", body[: exc.start]))
            raise MeshFileError(
                path, f"PLY ascii body: expected ASCII text, found byte {body[exc.start]:#04x}", line
            ) from None
        bad = body.find(b"_")  # plyfile's number parsing would take "1_5" as 15
        if bad >= 0:
            line = header.num_lines + 1 + len(re.findall(rb"\r\n|\r|\n", body[:bad]))
            start = max(body.rfind(c, 0, bad) for c in (b" ", b"\t", b"\n", b"\r")) + 1
            token = re.compile(rb"\S*").match(body, start).group().decode("ascii")
            raise MeshFileError(path, f"PLY ascii body: expected a number, found {_clip(token)}", line)
    arrays, consumed = _plyfile_read(path, data, header)

    # --- trailing data: counts must describe the whole file
    if consumed is not None:
        rest = data[consumed:]
        if rest.strip(b" \t\r\n"):
            raise MeshFileError(
                path,
                f"PLY body longer than declared: {len(rest)} bytes after the declared elements "
                f"({', '.join(f'{e.count} {e.name}' for e in header.elements)})",
            )
    else:
        body_lines = re.split(r"\r\n|\r|\n", data[header.body_offset :].decode("ascii", errors="replace"))
        total = sum(e.count for e in header.elements)
        for j, line in enumerate(body_lines[total:]):
            if line.strip():
                raise MeshFileError(
                    path,
                    f"PLY body longer than declared: expected {total} element lines after the header, "
                    f"found more ({_clip(line.strip())})",
                    header.num_lines + total + j + 1,
                )

    def where(element: _PlyElement, row: int):
        return _ply_where(header, element.name, row)

    # --- vertices
    va = arrays["vertex"]
    V = vertex_el.count
    vertices = np.stack([va[a].astype(np.float64) for a in ("x", "y", "z")], axis=1).reshape(V, 3)  # (V, 3)
    bad = np.flatnonzero(~np.isfinite(vertices).all(axis=1))
    if bad.size:
        i = int(bad[0])
        raise MeshFileError(path, f"PLY vertex: expected finite x y z, found {vertices[i].tolist()}", where(vertex_el, i))

    colors = None
    if "red" in vertex_el.props:
        raw = np.stack([va[c] for c in ("red", "green", "blue")], axis=1).reshape(V, 3)  # (V, 3)
        integer = vertex_el.props["red"].dtype[0] != "f"
        colors = raw.astype(np.float64)
        lo, hi = (0.0, 255.0) if integer else (0.0, 1.0)
        bad = np.flatnonzero((~np.isfinite(colors) | (colors < lo) | (colors > hi)).any(axis=1))
        if bad.size:
            i = int(bad[0])
            kind = "integer colours in [0, 255]" if integer else "float colours in [0, 1]"
            raise MeshFileError(path, f"PLY vertex: expected {kind}, found {raw[i].tolist()}", where(vertex_el, i))
        if integer:
            colors = colors / 255.0

    vertex_uv = None
    for su, sv in _PLY_VERTEX_UV:
        if su in vertex_el.props and sv in vertex_el.props:
            if vertex_el.props[su].len_dtype or vertex_el.props[sv].len_dtype:
                raise MeshFileError(path, f"PLY vertex properties {su!r}, {sv!r}: expected scalars, found a list")
            vertex_uv = np.stack([va[su], va[sv]], axis=1).astype(np.float64).reshape(V, 2)  # (V, 2)
            break
    if vertex_uv is None and "texcoord" in vertex_el.props:
        prop = vertex_el.props["texcoord"]
        if prop.len_dtype is None:
            raise MeshFileError(path, "PLY vertex property 'texcoord': expected a list of 2 floats, found a scalar")
        lengths, flat = _ply_list(path, va["texcoord"], "texcoord", None)
        odd = np.flatnonzero(lengths != 2)
        if odd.size:
            i = int(odd[0])
            raise MeshFileError(
                path, f"PLY vertex 'texcoord': expected 2 values, found {int(lengths[i])}", where(vertex_el, i)
            )
        vertex_uv = flat.astype(np.float64).reshape(V, 2)  # (V, 2)
    if vertex_uv is not None:
        bad = np.flatnonzero(~np.isfinite(vertex_uv).all(axis=1))
        if bad.size:
            i = int(bad[0])
            raise MeshFileError(
                path, f"PLY vertex texture coordinate: expected finite values, found {vertex_uv[i].tolist()}",
                where(vertex_el, i),
            )

    # --- faces
    fa = arrays["face"]
    list_name = next(n for n in _PLY_FACE_LISTS if n in face_el.props)
    sizes, flat = _ply_list(path, fa[list_name], list_name, None)  # (P,), (C,)
    small = np.flatnonzero(sizes < 3)
    if small.size:
        i = int(small[0])
        raise MeshFileError(path, f"PLY face: expected at least 3 vertices, found {int(sizes[i])}", where(face_el, i))
    idx = flat.astype(np.int64)  # (C,)
    bad = np.flatnonzero((idx < 0) | (idx >= V))
    if bad.size:
        i = int(bad[0])
        p = _polygon_of(sizes)(i)
        raise MeshFileError(
            path, f"PLY face: vertex index {int(idx[i])} out of range: expected 0..{V - 1} (V={V})", where(face_el, p)
        )
    corners = _fan_corners(sizes)  # (F, 3)
    faces = idx[corners]  # (F, 3)

    uv = uv_faces = None
    if "texcoord" in face_el.props:
        lengths, tc = _ply_list(path, fa["texcoord"], "texcoord", None)
        odd = np.flatnonzero(lengths != 2 * sizes)
        if odd.size:
            i = int(odd[0])
            raise MeshFileError(
                path,
                f"PLY face 'texcoord': expected {2 * int(sizes[i])} values (u v per corner), found {int(lengths[i])}",
                where(face_el, i),
            )
        corner_uv = tc.astype(np.float64).reshape(-1, 2)  # (C, 2)
        bad = np.flatnonzero(~np.isfinite(corner_uv).all(axis=1))
        if bad.size:
            p = _polygon_of(sizes)(int(bad[0]))
            raise MeshFileError(path, "PLY face 'texcoord': expected finite values, found NaN or inf", where(face_el, p))
        uv, corner_id = _merge_rows(corner_uv)  # (T, 2), (C,)
        uv_faces = corner_id[corners]  # (F, 3)
    elif vertex_uv is not None:
        uv, uv_faces = vertex_uv, faces.copy()

    landmarks: dict = {}
    for text, ln in header.comments:
        _parse_landmark(path, text, ln, landmarks)
    return _Parts(vertices, faces, uv, uv_faces, colors, landmarks)


def _merge_rows(rows: np.ndarray):
    """Unique rows in order of first occurrence, and each row's index into them.

    Shapes: ``rows (C, 2)`` -> ``unique (T, 2)``, ``index (C,)``.
    """
    rows = rows + 0.0  # -0.0 -> 0.0: equal values share one entry
    C = rows.shape[0]
    order = np.argsort(rows[:, 0] + 1j * rows[:, 1], kind="stable")  # (C,) by column 0, then 1 (complex order)
    srt = rows[order]  # (C, 2)
    new = np.ones(C, dtype=bool)
    new[1:] = (srt[1:] != srt[:-1]).any(axis=1)  # (C,) starts of runs of equal rows
    group = np.empty(C, dtype=np.int64)
    group[order] = np.cumsum(new) - 1  # (C,) run of each row
    first = np.minimum.reduceat(order, np.flatnonzero(new))  # (T,) first occurrence of each run
    by_use = np.argsort(first, kind="stable")  # (T,) runs in order of first use
    rank = np.empty_like(by_use)
    rank[by_use] = np.arange(by_use.shape[0])
    return rows[first[by_use]], rank[group]


def _write_ply(mesh: Mesh, path: str, *, binary: bool, texture_file: str | None = None) -> None:
    """PLY, binary little endian or ASCII: float32 vertex data, int32 triangle lists, landmark comments and
    (``texture_file``: the PNG's name, or ``None``) a ``TextureFile`` comment."""
    V, F = mesh.num_vertices, mesh.num_faces
    if max(V, 1) > np.iinfo(np.int32).max:
        raise MeshFileError(path, f"PLY: expected fewer than 2**31 vertices for int32 indices, found {V}")
    v_cols = [("x", mesh.vertices[:, 0]), ("y", mesh.vertices[:, 1]), ("z", mesh.vertices[:, 2])]
    if mesh.colors is not None:
        v_cols += [(c, mesh.colors[:, k]) for k, c in enumerate(("red", "green", "blue"))]
    corner_uv = None
    if mesh.uv is not None:
        per_vertex = _uv_per_vertex(mesh)
        if per_vertex is not None:
            v_cols += [("s", per_vertex[:, 0]), ("t", per_vertex[:, 1])]
        else:
            corner_uv = mesh.uv[mesh.uv_faces].reshape(F, 6)  # (F, 3, 2) -> (F, 6)

    lines = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", "comment written by mesh_decoder"]
    if texture_file is not None:
        lines.append(f"comment TextureFile {texture_file}")
    lines += [f"comment landmark {name} {index}" for name, index in mesh.landmarks.items()]
    lines.append(f"element vertex {V}")
    lines += [f"property float {name}" for name, _ in v_cols]
    lines.append(f"element face {F}")
    lines.append("property list uchar int vertex_indices")
    if corner_uv is not None:
        lines.append("property list uchar float texcoord")
    lines.append("end_header")
    head = ("\n".join(lines) + "\n").encode("ascii")

    vdata = np.stack([col for _, col in v_cols], axis=1).astype(np.float32)  # (V, K)
    with atomic_write(path, "wb") as handle:
        handle.write(head)
        if binary:
            handle.write(vdata.astype("<f4").tobytes())  # (V, K) row-major = one record per vertex
            fields = [("n", "u1"), ("vertex_indices", "<i4", (3,))]
            if corner_uv is not None:
                fields += [("m", "u1"), ("texcoord", "<f4", (6,))]
            rec = np.empty(F, dtype=np.dtype(fields))  # packed records, the PLY list layout
            rec["n"] = 3
            rec["vertex_indices"] = mesh.faces
            if corner_uv is not None:
                rec["m"] = 6
                rec["texcoord"] = corner_uv
            handle.write(rec.tobytes())
        else:
            handle.write(_format_rows(" ".join(["%.9g"] * vdata.shape[1]), vdata))
            if corner_uv is None:
                handle.write(_format_rows("3 %d %d %d", mesh.faces))
            else:
                cols = np.concatenate([mesh.faces.astype(np.float64), corner_uv.astype(np.float32)], axis=1)  # (F, 9)
                handle.write(_format_rows("3 %d %d %d 6" + " %.9g" * 6, cols))


def _uv_per_vertex(mesh: Mesh) -> np.ndarray | None:
    """The ``(V, 2)`` per-vertex UVs if every vertex has one UV across its corners, else None.

    Vertices no face uses get ``(0, 0)``.
    """
    corner = mesh.uv[mesh.uv_faces]  # (F, 3, 2)
    per_vertex = np.zeros((mesh.num_vertices, 2))
    per_vertex[mesh.faces.reshape(-1)] = corner.reshape(-1, 2)  # last write wins
    if np.array_equal(per_vertex[mesh.faces], corner):
        return per_vertex
    return None


# =============================================================================
# save checks
# =============================================================================
def _check_savable(mesh: Mesh, path: str, fmt: str) -> None:
    """Refuse, before anything is written, a mesh the file could not represent faithfully."""
    try:
        mesh.validate()
    except MeshValidationError as exc:
        raise MeshFileError(path, f"refusing to write an invalid mesh: {exc}") from exc
    with np.errstate(over="ignore"):
        for name, arr in (("vertices", mesh.vertices), ("uv", mesh.uv), ("colors", mesh.colors)):
            if arr is not None and not np.isfinite(arr.astype(np.float32)).all():
                raise MeshFileError(path, f"{name}: expected values within float32 range, found {np.abs(arr).max()}")
    if fmt == "off" and mesh.uv is not None:
        raise MeshFileError(
            path,
            "OFF cannot store texture coordinates: save as .obj or .ply, "
            "or drop them with mesh.copy(uv=None, uv_faces=None)",
        )
    for name in mesh.landmarks:
        if not name or any(ch.isspace() for ch in name) or "\x00" in name:
            raise MeshFileError(path, f"landmark name {name!r}: expected a non-empty name without whitespace")
        if fmt == "ply" and not name.isascii():
            raise MeshFileError(path, f"landmark name {name!r}: PLY header comments must be ASCII")
        if not name.isprintable():
            raise MeshFileError(path, f"landmark name {name!r}: expected printable characters")
