"""The ``mesh-decoder`` command. Thin: parses arguments and calls library functions.

Argument errors and bad files print one line to stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np

from . import __version__
from ._checks import (MAX_SEED, check_output_path, check_suffix, check_threads, error_line, int_argument, load_npy,
                      real_argument)
from ._random import standard_normal_rows
from .errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .hierarchy import MeshHierarchy
    from .mesh import Mesh
    from .nn import MeshAutoencoder
    from .nn.texture import TexelGather

__all__ = ["main", "build_parser"]


class _CLIError(UsageError):
    """A usage error, printed as one line (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise _CLIError(f"{self.prog}: {message}")


def _parse_vertices(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer vertex count, got {value!r}") from None
    return n


# --------------------------------------------------------------------------- template
def _add_template(sub) -> None:
    p = sub.add_parser("template", help="write a built-in template mesh, or summarise it or a mesh file")
    p.add_argument("mesh", nargs="?", metavar="MESH",
                   help="a mesh file of your own to summarise with --info (instead of a built-in template)")
    p.add_argument("--kind", choices=("face", "head", "sphere"), default=None, help="default: face")
    p.add_argument("--vertices", type=_parse_vertices, default=None,
                   help="vertex count (default 5023): exact for face and head (500 to 100,000); sphere: the "
                        "smallest icosphere with at least this many (1 to 163,842)")
    p.add_argument("--seed", type=int_argument(0, MAX_SEED), default=None,
                   help="placement of the face's and head's vertices (default: 0; a sphere has none to vary)")
    p.add_argument("--info", action="store_true", help="print a summary instead of (or as well as) writing")
    p.add_argument("-o", "--output", help="output mesh (.obj or .ply; OFF cannot store the template's UVs)")
    p.set_defaults(func=_run_template)


def _build_template(args):
    from .mesh.templates import MAX_VERTICES, MIN_VERTICES, icosphere_vertex_count, template

    kind = args.kind or "face"
    vertices = 5023 if args.vertices is None else args.vertices
    low, high = (1, icosphere_vertex_count(7)) if kind == "sphere" else (MIN_VERTICES, MAX_VERTICES)
    if not low <= vertices <= high:
        raise _CLIError(f"mesh-decoder template: --vertices: expected an integer in [{low}, {high}] for "
                        f"--kind {kind}, got {vertices}")
    return template(kind=kind, num_vertices=vertices, seed=args.seed or 0)


def _run_template(args) -> int:
    if args.mesh is not None:  # a user's own template, summarised as the built-in ones are
        given = [name for name, value in (("--kind", args.kind), ("--vertices", args.vertices),
                                          ("--seed", args.seed), ("-o/--output", args.output)) if value is not None]
        if not args.info or given:
            raise _CLIError(f"mesh-decoder template {args.mesh}: a mesh file is only summarised: expected --info "
                            f"alone, got {' '.join(given) if given else 'no --info'}")
    elif not args.info and not args.output:
        raise _CLIError("mesh-decoder template: give -o/--output PATH, --info, or both")
    if args.output:
        check_output_path(args.output, "-o/--output")
        ext = os.path.splitext(args.output)[1].lower()
        if ext not in (".obj", ".ply"):
            why = ("OFF cannot store the template's texture coordinates" if ext == ".off" else
                   f"got {repr(ext) if ext else 'no extension'}")
            raise _CLIError(f"mesh-decoder template: -o/--output {args.output}: expected .obj or .ply, {why}")
    mesh = _load_template(args.mesh) if args.mesh is not None else _build_template(args)
    if args.output:
        from .mesh.io import save_mesh

        save_mesh(mesh, args.output)
        print(f"wrote {args.output}: {mesh.num_vertices} vertices, {mesh.num_faces} faces")
    if args.info:
        from .mesh.templates import template_info

        info = template_info(mesh)
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {_fmt(value)}")
    return 0


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


# -------------------------------------------------------------------------- hierarchy
def _add_hierarchy(sub) -> None:
    p = sub.add_parser("hierarchy", help="build a mesh hierarchy and print its levels")
    _add_threads(p)
    p.add_argument("template", nargs="?", help="template mesh file (default: the built-in 5,023-vertex face)")
    p.add_argument("--factors", type=real_argument(1, inclusive=False), nargs="+", default=[4, 4, 4, 4],
                   help="down-sampling factor per level, each a real number > 1 (default: 4 4 4 4)")
    p.add_argument("--spiral-length", "--spiral-lengths", type=int_argument(1), nargs="+", default=[9],
                   help="vertices per spiral, one for every level or one per level (default: 9)")
    p.add_argument("--dilation", "--dilations", type=int_argument(1), nargs="+", default=[1],
                   help="spiral dilation, one for every level or one per level (default: 1)")
    from .mesh.uv import MAX_MAP_SIZE

    p.add_argument("--texture-size", type=int_argument(0, MAX_MAP_SIZE), default=256,
                   help=f"UV texel map size (0: none; at most {MAX_MAP_SIZE}; default: 256)")
    p.add_argument("--allow-uv-overlap", action="store_true",
                   help="let UV triangles overlap in the texel map (mirrored or stacked islands: the lowest face "
                        "colours a shared texel); without it an overlap is an error")
    p.add_argument("-o", "--output", help="write the hierarchy (.npz)")
    p.set_defaults(func=_run_hierarchy)


def _load_template(path: str | None):
    if path is None:
        from .mesh.templates import face_template

        return face_template()
    from .mesh.io import load_mesh

    return load_mesh(path)


def _one_or_many(values: list[int]):
    return values[0] if len(values) == 1 else tuple(values)


def _require_suffix(command: str, path: str, suffix: str, why: str) -> None:
    """Refuse an ``-o/--output`` of ``command`` whose name does not end in ``suffix``, before any work."""
    if not path.lower().endswith(suffix):
        raise _CLIError(f"mesh-decoder {command}: -o/--output {path}: expected a file name ending in {suffix} "
                        f"({why})")


def _run_hierarchy(args) -> int:
    if args.output:
        check_output_path(args.output, "-o/--output")
        _require_suffix("hierarchy", args.output, ".npz", "the hierarchy is written as an .npz archive")
    levels = len(args.factors) + 1
    for option, values in (("--spiral-length", args.spiral_length), ("--dilation", args.dilation)):
        if len(values) not in (1, levels):
            raise _CLIError(f"{option} {' '.join(map(str, values))}: expected one value for every level or "
                            f"{levels} (one per level: --factors gives {levels - 1} below the template), "
                            f"got {len(values)}")
    mesh = _load_template(args.template)
    from .errors import HierarchyError, MeshValidationError, UVOverlapError
    from .hierarchy import build_hierarchy, hierarchy_table, save_hierarchy
    from .hierarchy.decimate import level_sizes

    where = args.template if args.template is not None else "the built-in template"
    try:
        level_sizes(mesh.num_vertices, tuple(args.factors))
    except HierarchyError as exc:
        raise HierarchyError(f"--factors {' '.join(f'{f:g}' for f in args.factors)}: {where} has "
                             f"{mesh.num_vertices} vertices: {exc}; give fewer or smaller factors") from None
    try:
        h = build_hierarchy(
            mesh,
            factors=tuple(args.factors),
            spiral_lengths=_one_or_many(args.spiral_length),
            dilations=_one_or_many(args.dilation),
            texture_size=args.texture_size or None,
            allow_uv_overlap=args.allow_uv_overlap,
        )
    except UVOverlapError as exc:  # the options of this command, not build_hierarchy's arguments
        raise UVOverlapError(f"{where}: {exc.problem}", "fix the UVs, pass --allow-uv-overlap (the lowest face "
                             "colours a shared texel) or build without a texel map: --texture-size 0") from None
    except MeshValidationError as exc:  # the mesh cannot be decimated (a vertex in no face, ...): name the file
        raise MeshValidationError(f"{where}: {exc}") from None
    except HierarchyError as exc:  # the decimation failed on this mesh: name it
        raise HierarchyError(f"{where}: {exc}") from None
    rows = hierarchy_table(h)
    _print_table(rows)
    if h.texel_map is not None:  # the table has no column for it
        (th, tw), covered = h.texel_map.size, float(h.texel_map.mask.float().mean())
        auto = " (the template has no UVs: automatic ones, mesh_decoder.mesh.uv.ensure_uv)" if mesh.uv is None else ""
        print(f"texel map: {th} x {tw}, {covered:.1%} of the texels inside a UV triangle{auto}")
    if args.output:
        save_hierarchy(h, args.output)
        print(f"wrote {args.output}")
    return 0


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(rows[0])
    cells = [[_fmt(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.rjust(w) for k, w in zip(keys, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))


# ------------------------------------------------------------------------------ bench
def _add_bench(sub) -> None:
    from .bench.harness import add_bench_arguments

    p = sub.add_parser("bench", help="decoding throughput benchmark")
    add_bench_arguments(p)
    p.set_defaults(func=_run_bench)


def _run_bench(args) -> int:
    from .bench.harness import run_from_args

    return int(run_from_args(args) or 0)  # it checks --output-dir before any work


# ------------------------------------------------------------------- train, evaluate
def _add_train(sub) -> None:
    from .train import add_train_arguments, run_train

    p = sub.add_parser(
        "train", help="train a mesh autoencoder from a YAML/JSON config",
        epilog="The run folder gets checkpoint.safetensors and history.csv (per epoch: training loss, learning "
               "rate, speed, and the held-out faces' loss and mean vertex error every training.validate_every "
               "epochs; both rewritten every training.checkpoint_every epochs), config.yaml, then "
               "model.safetensors, decoder.safetensors and hierarchy.npz. Every config key and its default: "
               "python -c 'import mesh_decoder.train.config as c; print(c.__doc__)'")
    _add_threads(p)
    add_train_arguments(p)
    p.set_defaults(func=run_train)


def _add_evaluate(sub) -> None:
    from .train import add_evaluate_arguments, run_evaluate

    p = sub.add_parser("evaluate", help="COMA-protocol evaluation of a trained model beside PCA")
    _add_threads(p)
    add_evaluate_arguments(p)
    p.set_defaults(func=run_evaluate)


# --------------------------------------------------------------------------- render, sample
_CHECKPOINT_HELP = "a training run folder, model.safetensors or checkpoint.safetensors"
#: What render and sample take, as their errors say it.
_MODEL_INPUTS = ("a training run folder, its model.safetensors or checkpoint.safetensors, or a decoder, autoencoder "
                 "or PCA model file")
_DEFAULT_FACES, _DEFAULT_SEED = 16, 0


def _add_render(sub) -> None:
    p = sub.add_parser("render", help="sample a model's latent prior and render a grid of faces")
    _add_threads(p)
    _add_model_arguments(p, "rendered")
    p.add_argument("--n", type=int_argument(1), default=_DEFAULT_FACES,
                   help=f"number of faces (default {_DEFAULT_FACES})")
    p.add_argument("--seed", type=int_argument(0, MAX_SEED), default=_DEFAULT_SEED,
                   help=f"seed of the sampling; sample with the same seed writes the same faces, the first k of "
                        f"them for any --n k or more (default {_DEFAULT_SEED})")
    p.add_argument("--image-size", type=int_argument(1), default=192, help="pixels per face (default 192)")
    p.add_argument("-o", "--output", required=True, help="output PNG")
    p.set_defaults(func=_run_render)


def _add_model_arguments(p: argparse.ArgumentParser, verb: str) -> None:
    """The model argument and its --hierarchy / --template, shared by render and sample."""
    p.add_argument("checkpoint", metavar="MODEL",
                   help=f"{_CHECKPOINT_HELP}, or any model file fit takes: a decoder file (sampled from its stored "
                        "latent prior, else the standard normal) or a PCA model from mesh-decoder pca (standard "
                        "normal coefficients; codes hold the shape then the colour coefficients)")
    p.add_argument("--hierarchy", metavar="NPZ",
                   help="a decoder file's hierarchy (default: hierarchy.npz beside it, as fit finds it)")
    p.add_argument("--template", metavar="MESH",
                   help=f"a decoder or PCA file's template mesh, on whose faces (and UVs) the faces are {verb} "
                        "(default: from the config the file stores, or the built-in face of its vertex count)")


class _Trained(NamedTuple):
    """A trained autoencoder as render and sample use it."""

    model: MeshAutoencoder
    hierarchy: MeshHierarchy
    prior: str | None  # which latent prior the model samples (None: left unfitted)
    template: Callable[[], Mesh]  # loads the run's template (checked against the one trained on)


def _trained_model(path: str, *, fit_prior: bool = True) -> _Trained:
    """The :class:`_Trained` of ``path``, a training run folder, ``model.safetensors`` or
    ``checkpoint.safetensors``.

    A checkpoint stores no latent prior (none is fitted before training ends): with ``fit_prior`` it is
    fitted to the latents of the training faces, as evaluate does; without, it is left unfitted and
    ``prior`` is ``None`` (for a caller that decodes codes of its own).
    """
    from .train import load_trained
    from .train.loop import check_trained_template, load_template

    model, hierarchy, config, meta = load_trained(path)

    def template() -> Mesh:
        mesh = load_template(config)
        check_trained_template(meta, config, mesh, meta["path"])
        return mesh

    if meta["kind"] != "checkpoint":
        return _Trained(model, hierarchy, "the stored latent prior", template)
    if not fit_prior:
        return _Trained(model, hierarchy, None, template)
    from .train import load_data
    from .train.loop import check_trained_on, encode_all

    data = load_data(config)
    check_trained_on(meta, data, meta["path"])
    model.fit_latent_prior(encode_all(model, data.train).to(model.latent_mean))
    done, epochs = int(meta.get("epoch", 0)), config.training.epochs
    unfinished = f"; the checkpoint has trained {done} of {epochs} epochs" if done < epochs else ""
    return _Trained(model, hierarchy, f"the latent prior of the training faces (fitted now: a checkpoint stores "
                                      f"none{unfinished})", template)


def _shape_and_colors(decoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decoded meshes ``(N, V, C)`` -> positions ``(N, V, 3)`` and, for a joint model (``C = 6``: xyz then
    rgb), colours ``(N, V, 3)`` clamped into ``[0, 1]``, else ``None``."""
    colors = decoded[..., 3:6].clamp(0, 1) if decoded.shape[-1] >= 6 else None
    return decoded[..., :3], colors


def _run_render(args) -> int:
    import torch

    from .render import face_grid

    check_output_path(args.output, "-o/--output")
    _require_suffix("render", args.output, ".png", "the grid is written as PNG")
    sampler = _sampler(args.checkpoint, hierarchy=args.hierarchy, template=args.template)
    codes = sampler.sample(args.n, torch.Generator().manual_seed(args.seed))  # (n, Z)
    with torch.inference_mode():  # (n, V, C): shape, then colour if any; (n, 3, H, W) of a texture branch, or None
        decoded, texture = sampler.decode(codes)
    bad = torch.nonzero(~torch.isfinite(decoded).flatten(1).all(dim=1)).flatten()
    if bad.numel():
        raise ValueError(f"{args.checkpoint}: expected finite decoded faces, found NaN or inf in {bad.numel()} of "
                         f"{args.n} (the first: face {int(bad[0])}); nothing was written")
    vertices, colors = _shape_and_colors(decoded)
    textured = {}
    if colors is None and texture is not None:  # appearance only in the texture: drawn through the template's UVs
        template = _with_uvs(sampler.template(), sampler.template_name)
        textured = {"texture": texture, "uv": template.uv, "uv_faces": template.uv_faces}
    face_grid(vertices, sampler.faces, args.output, colors=colors, image_size=args.image_size, **textured)
    print(f"wrote {args.output}: {args.n} face{'s' if args.n != 1 else ''} sampled from {sampler.prior}")
    return 0


_MESH_FORMATS = ("ply", "obj", "off")
_LATENTS_NAME = "latents.npy"
_SAMPLE_CHUNK = 256  # codes decoded at once: bounds the decoder's intermediate tensors
_TEXTURE_SIZE = 256  # side of a texture written from per-vertex colours where the model has no texel map


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="sample a model's latent prior (or decode given latent codes) and "
                                      "write the faces as mesh files, with their codes")
    _add_threads(p)
    _add_model_arguments(p, "written")
    p.add_argument("-o", "--output", "--output-dir", required=True, metavar="DIR",
                   help=f"output folder (created if missing) for face_0000.FORMAT, face_0001.FORMAT, ... and "
                        f"{_LATENTS_NAME} (the float32 codes, which --latents takes back); refused if it already "
                        f"holds such files")
    p.add_argument("--n", type=int_argument(1),
                   help=f"number of faces sampled from the latent prior (default {_DEFAULT_FACES}; not with --latents)")
    p.add_argument("--seed", type=int_argument(0, MAX_SEED),
                   help=f"seed of the sampling; render with the same seed shows the same faces, the first k of "
                        f"them for any --n k or more (default {_DEFAULT_SEED}; not with --latents)")
    p.add_argument("--latents", metavar="FILE.npy",
                   help="decode these latent codes instead of sampling: a .npy float array of shape (N, Z), or (Z,) "
                        "for one code, Z the model's latent size (default: none, sample the prior)")
    p.add_argument("--format", choices=_MESH_FORMATS, default="ply",
                   help="mesh file format (default ply); a joint model's colours, clamped into [0, 1], are stored "
                        "in each: PLY as red/green/blue vertex properties, OFF as COFF, OBJ as 'v x y z r g b' lines")
    p.add_argument("--texture", action="store_true",
                   help="also write each face's UV texture as face_NNNN.png, with the template's UVs in the mesh "
                        "file, which references the PNG (OBJ through face_NNNN.mtl, PLY through a TextureFile "
                        "comment); for models that decode colour: a joint autoencoder or decoder (its texture "
                        "branch's map), or a PCA model with colour components. Per-vertex colours are written into "
                        "a texel map of the template's UVs, of the model's texture size (256 x 256 without one). Not "
                        "with --format off (default: meshes only)")
    p.set_defaults(func=_run_sample)


def _earlier_samples(folder: str, ext: str, texture: bool = False) -> list[str]:
    """The files of ``folder`` that ``sample`` would write over: ``latents.npy`` and ``face_NNNN.EXT`` (any case),
    with ``texture`` also ``face_NNNN.png`` and ``face_NNNN.mtl``."""
    import re

    if not os.path.isdir(folder):
        return []
    names = sorted(os.listdir(folder))
    exts = "|".join(re.escape(e) for e in ((ext, "png", "mtl") if texture else (ext,)))
    sample = re.compile(rf"face_[0-9]+\.(?:{exts})", re.IGNORECASE)
    return [n for n in names if n.lower() == _LATENTS_NAME] + [n for n in names if sample.fullmatch(n)]


class _Sampler(NamedTuple):
    """What ``sample`` needs of a model: its code size, prior and decoding, and the template's faces."""

    latent_size: int  # Z: columns of a code (a PCA model with colours: shape then colour coefficients)
    prior: str | None  # which prior ``sample`` draws from
    sample: Callable[[int, torch.Generator], torch.Tensor]  # (n, generator) -> codes (n, Z)
    # codes (N, Z) -> (N, V, C) on the CPU: shape, then colour if any; and the (N, 3, H, W) UV textures of a
    # joint decoder's texture branch when its appearance is only there (no vertex colours), else None
    decode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
    faces: np.ndarray  # (F, 3)
    template: Callable[[], Mesh]  # the template mesh, whose UVs map the textures
    template_name: str  # said of the template in errors
    texture_size: int | tuple[int, int] = _TEXTURE_SIZE  # side(s) of the textures written from vertex colours
    layout: str = ""  # said of a code in --latents errors


def _color_texture(template: Mesh, size: int | tuple[int, int]) -> TexelGather:
    """The :class:`~mesh_decoder.nn.TexelGather` writing per-vertex colours ``(N, V, 3)`` into UV textures
    ``(N, 3, H, W)`` through a texel map of ``template``'s UVs (the UVs each mesh file gets, so the texture
    always fits the mesh, whatever map a model was trained with), ``size`` texels."""
    from .mesh.uv import texel_map
    from .nn.texture import TexelGather

    return TexelGather.from_texel_map(texel_map(template, size), template.num_vertices)


def _model_class(path: str) -> str | None:
    """The class a model file holds (``"trained MeshAutoencoder"`` for one written by train, with its run's
    config), or ``None`` for anything else (a run folder, a checkpoint, no file)."""
    if os.path.isdir(path):
        return None
    from .model_files import read_model_meta

    try:
        meta = read_model_meta(path)
    except (OSError, ValueError):
        return None
    trained = meta.get("class") == "MeshAutoencoder" and "train_config" in (meta.get("extra_meta") or {})
    return "trained MeshAutoencoder" if trained else str(meta.get("class"))


def _sampler(path: str, *, fit_prior: bool = True, hierarchy: str | None = None,
             template: str | None = None) -> _Sampler:
    """The :class:`_Sampler` of ``path``: a trained autoencoder (a run folder, ``model.safetensors`` or
    ``checkpoint.safetensors``, see :func:`_trained_model`), or any model file ``fit`` takes: a decoder file
    (its stored latent prior, else the standard normal), an autoencoder saved with ``save_model`` (its latent
    prior) or a PCA model (standard normal coefficients)."""
    if _model_class(path) not in (None, "trained MeshAutoencoder"):  # a decoder, PCA or saved autoencoder file
        return _file_sampler(path, hierarchy, template)
    if not os.path.isdir(path):  # not a model file: say all that render and sample take
        from .errors import ModelFileNotFoundError
        from .train.checkpoint import CheckpointError, read_safetensors_metadata

        if not os.path.lexists(path):
            raise ModelFileNotFoundError(path, f"expected {_MODEL_INPUTS}, found nothing at this path")
        try:
            metadata = read_safetensors_metadata(path)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc} (expected {_MODEL_INPUTS})") from None
        from .model_files import _META_KEY, read_model_meta

        if _META_KEY in metadata:  # a model file with damaged metadata: its own error, not 'a trained autoencoder'
            read_model_meta(path)
    for option, value in (("--hierarchy", hierarchy), ("--template", template)):
        if value is not None:  # a trained autoencoder's run knows its own
            raise ValueError(f"{option}: expected only with a decoder or PCA model file, got {path}, a trained "
                             "autoencoder (its hierarchy and template come with its run)")
    model, hierarchy, prior, template = _trained_model(path, fit_prior=fit_prior)
    weight = model.decoder.fc.weight

    def decode(codes: torch.Tensor) -> tuple[torch.Tensor, None]:
        return model.decode(codes.to(weight)).cpu(), None  # (N, V, C)

    size = hierarchy.texel_map.size if hierarchy.texel_map is not None else _TEXTURE_SIZE
    return _Sampler(model.latent_size, prior, model.sample_latents, decode, hierarchy.levels[0].faces.cpu().numpy(),
                    template, f"the template of {path}", size)


def _file_sampler(path: str, hierarchy: str | None = None, template: str | None = None) -> _Sampler:
    """A decoder or PCA model file, loaded as ``fit`` loads it (hierarchy beside it, template from its config)."""
    import torch

    from .fit.adapters import as_fit_decoder
    from .fit.command import _load

    model, template, where, stored = _load(argparse.Namespace(model=path, hierarchy=hierarchy, template=template,
                                                              device="cpu"))
    fd = as_fit_decoder(model, stored)
    Z, Zc = fd.latent_size, fd.color_latent_size

    def sample(n: int, generator: torch.Generator) -> torch.Tensor:
        # drawn as MeshAutoencoder.sample_latents draws: a decoder file gives its run's codes for a seed
        w = standard_normal_rows(n, Z + Zc, generator, dtype=fd.prior.dtype)  # (n, Z + Zc)
        parts = [fd.prior.unwhiten(w[:, :Z])] + ([fd.color_prior.unwhiten(w[:, Z:])] if Zc else [])
        return torch.cat(parts, dim=1)  # (n, Z + Zc)

    def decode(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        codes = codes.to(dtype=fd.dtype, device=fd.device)  # (N, Z + Zc)
        out = fd(codes[:, :Z], codes[:, Z:] if Zc else None)
        parts = [out.vertices] if out.colors is None else [out.vertices, out.colors]
        branch = out.texture is not None and out.colors is None  # the appearance is only in the texture
        return torch.cat(parts, dim=-1).cpu(), out.texture.detach().cpu().clamp(0, 1) if branch else None

    if fd.name == "PCAModel":
        prior = "the PCA model's standard normal coefficients"
    elif fd.name == "MeshAutoencoder":
        prior = "the autoencoder's latent prior (its latent_mean and latent_cov_cholesky)"
    else:
        prior = "the stored latent prior" if stored is not None else "the standard normal (the file stores no prior)"
    layout = f" ({Z} shape then {Zc} colour coefficients)" if Zc else ""
    size = getattr(model, "texture_size", None) or _TEXTURE_SIZE  # a joint decoder's own texture size
    return _Sampler(Z + Zc, prior, sample, decode, np.asarray(template.faces), lambda: template, f"the {where}",
                    size, layout)


def _read_latents(path: str, latent_size: int, layout: str = "") -> np.ndarray:
    """The codes of ``--latents`` as a float32 ``(N, Z)`` array, ``Z = latent_size``: a ``.npy`` file of
    shape ``(N, Z)`` (``N >= 1``) or ``(Z,)`` (one code), floating and finite within float32 range.

    Raises an error naming the file, what was expected and what was found (a ``FileNotFoundError``
    when it is not there); pickled data is never loaded.
    """
    from .errors import MeshFileError, MissingFileError

    want = f"latent codes: a .npy float array of shape (N, {latent_size}) or ({latent_size},){layout}"
    if not os.path.lexists(path):
        raise MissingFileError(path, f"no such file: expected {want}")
    codes = load_npy(path, want)
    if codes.ndim not in (1, 2) or codes.shape[-1] != latent_size or codes.size == 0:
        raise MeshFileError(path, f"expected {want} ({latent_size}: the model's latent size), found shape "
                                  f"{codes.shape}")
    if not np.issubdtype(codes.dtype, np.floating):
        raise MeshFileError(path, f"expected {want}, found dtype {codes.dtype}")
    with np.errstate(over="ignore"):
        codes = codes.astype(np.float32).reshape(-1, latent_size)  # (N, Z)
    bad = np.flatnonzero(~np.isfinite(codes).all(axis=1))
    if bad.size:
        raise MeshFileError(path, f"expected {want} of finite values within float32 range, found NaN, inf or a "
                                  f"larger value in {bad.size} of its {codes.shape[0]} codes (the first: code "
                                  f"{bad[0]})")
    return codes


def _run_sample(args: argparse.Namespace) -> int:
    import torch

    from ._atomic import atomic_write
    from .mesh import Mesh
    from .mesh.io import save_mesh

    if args.latents is not None and (args.n is not None or args.seed is not None):
        raise _CLIError("mesh-decoder sample: --latents gives the codes to decode: expected it without --n and "
                        "--seed, which sample the latent prior")
    if args.texture and args.format == "off":
        raise _CLIError("mesh-decoder sample: --texture needs the template's UVs in each mesh file, which OFF "
                        "cannot store: expected --format obj or ply")
    check_output_path(args.output, "-o/--output", directory=True)
    earlier = _earlier_samples(args.output, args.format, args.texture)
    own = os.path.join(args.output, _LATENTS_NAME)
    if args.latents is not None and os.path.isfile(own) and os.path.isfile(args.latents) \
            and os.path.samefile(args.latents, own):
        earlier.remove(_LATENTS_NAME)  # codes edited in place: decoded, then written back as float32
    if earlier:
        shown = ", ".join(earlier[:3]) + (f" and {len(earlier) - 3} more" if len(earlier) > 3 else "")
        raise ValueError(f"-o/--output {args.output}: expected a folder without earlier samples, found {shown}; "
                         "nothing was written (name another folder, or remove them)")
    sampler = _sampler(args.checkpoint, fit_prior=args.latents is None, hierarchy=args.hierarchy,
                       template=args.template)
    template = _with_uvs(sampler.template(), sampler.template_name) if args.texture else None
    uv = (template.uv, template.uv_faces) if args.texture else None  # ((T, 2), (F, 3))
    if args.latents is None:
        generator = torch.Generator().manual_seed(_DEFAULT_SEED if args.seed is None else args.seed)
        n = _DEFAULT_FACES if args.n is None else args.n
        codes = sampler.sample(n, generator).to(torch.float32)  # (N, Z)
        source = f"sampled from {sampler.prior}"
    else:
        codes = torch.from_numpy(_read_latents(args.latents, sampler.latent_size, sampler.layout))  # (N, Z)
        source = f"decoded from {args.latents}"
    decoded, branch_maps = _decode_all(sampler, codes, args.texture, f"{source}, by {args.checkpoint}")  # (N, V, C), (N, H, W, 3) uint8
    vertices, colors = _shape_and_colors(decoded)
    gather = None  # writes a face's colours into its texture, one face at a time (bounded memory)
    if args.texture and colors is not None:
        gather = _color_texture(template, sampler.texture_size)
    elif args.texture and branch_maps is None:
        raise ValueError(f"--texture: expected a model that decodes colour (a joint autoencoder or decoder, or a PCA "
                         f"model with colour components), found {args.checkpoint}, which decodes shape only; "
                         "nothing was written")

    def texture(i: int) -> torch.Tensor | np.ndarray | None:  # (3, H, W) floats, or (H, W, 3) uint8
        if gather is not None:
            with torch.inference_mode():
                return gather(colors[i])
        return None if branch_maps is None else branch_maps[i]

    faces = sampler.faces  # (F, 3)
    meshes = [Mesh(vertices=vertices[i].numpy(), faces=faces, colors=None if colors is None else colors[i].numpy(),
                   **({} if uv is None else {"uv": uv[0], "uv_faces": uv[1]}))
              for i in range(decoded.shape[0])]
    os.makedirs(args.output, exist_ok=True)
    with atomic_write(os.path.join(args.output, _LATENTS_NAME)) as handle:
        np.save(handle, codes.numpy())
    width = max(4, len(str(len(meshes) - 1)))
    written = 0
    try:
        for mesh in meshes:
            save_mesh(mesh, os.path.join(args.output, f"face_{written:0{width}d}.{args.format}"),
                      texture=texture(written))
            written += 1
    except KeyboardInterrupt:
        print(f"mesh-decoder sample: interrupted after writing {written} of {len(meshes)} faces: {args.output} is "
              f"incomplete ({_LATENTS_NAME} holds all {len(meshes)} codes)", file=sys.stderr)
        raise
    except OSError as exc:  # a full disk: the one error line says how far it got
        note = f"(after writing {written} of {len(meshes)} faces; {_LATENTS_NAME} holds all {len(meshes)} codes)"
        if exc.strerror is None:  # no errno: its message is all there is
            raise OSError(f"{exc} {note}") from exc
        exc.strerror = f"{exc.strerror} {note}"
        raise
    what = "with colours clamped into [0, 1]" if colors is not None else "shape only"
    if args.texture:
        h, w = gather.size if gather is not None else branch_maps.shape[1:3]
        files = "face_*.png" + (", through face_*.mtl" if args.format == "obj" else "")
        what = f"{'shape' if colors is None else what} and {w} x {h} UV textures ({files})"
    print(f"wrote {len(meshes)} mesh{'es' if len(meshes) != 1 else ''} ({decoded.shape[1]} vertices, {what}) and "
          f"{_LATENTS_NAME} to {args.output}: {source}")
    return 0


def _with_uvs(template: Mesh, name: str) -> Mesh:
    """``template`` (whose ``uv`` and ``uv_faces`` map the textures onto each mesh), or without UVs, a copy with the automatic UVs :func:`~mesh_decoder.hierarchy.build_hierarchy`
    gave it for the model's texel map (:func:`~mesh_decoder.mesh.uv.ensure_uv`, deterministic), said on stderr:
    a joint model trained on such a template could not write its textures."""
    if template.uv is not None:
        return template
    from .mesh.uv import ensure_uv

    print(f"note: {name} has no UV coordinates: the textures are mapped through automatic ones "
          "(mesh_decoder.mesh.uv.ensure_uv, as build_hierarchy made for its texel map)", file=sys.stderr)
    return ensure_uv(template)


def _decode_all(sampler: _Sampler, codes: torch.Tensor, textures: bool,
                source: str) -> tuple[torch.Tensor, np.ndarray | None]:
    """Decode ``codes (N, Z)`` in chunks: the faces ``(N, V, C)`` and, with ``textures``, the maps of a joint
    decoder's texture branch (where its appearance is only there) as ``(N, H, W, 3)`` uint8 (kept as bytes: a
    float 256 x 256 map per face takes 768 KB), else ``None``. Raises, naming the first code, when a face or
    map is not finite."""
    import torch

    faces, maps, bad = [], [], []
    with torch.inference_mode():  # the float32 codes written are the ones decoded (as MeshAutoencoder.sample does)
        for i in range(0, codes.shape[0], _SAMPLE_CHUNK):
            decoded, texture = sampler.decode(codes[i:i + _SAMPLE_CHUNK])  # (n, V, C), (n, 3, H, W) or None
            bad.append(~torch.isfinite(decoded).flatten(1).all(dim=1))  # (n,)
            if textures and texture is not None:
                bad[-1] |= ~torch.isfinite(texture).flatten(1).all(dim=1)
                maps.append((texture.clamp(0, 1).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy())
            faces.append(decoded.float())  # a bf16 model's faces too: written as float32, as numpy holds them
    bad_codes = torch.nonzero(torch.cat(bad)).flatten()
    if bad_codes.numel():
        raise ValueError(f"expected finite decoded faces, found NaN or inf in {bad_codes.numel()} of "
                         f"{codes.shape[0]} (the first: code {int(bad_codes[0])}, {source}); nothing was written")
    return torch.cat(faces), np.concatenate(maps) if maps else None


# ------------------------------------------------------------------------------ pca
def _add_pca(sub) -> None:
    from .train.pca_fit import add_pca_arguments, run_pca

    p = sub.add_parser("pca", help="fit the linear 3DMM (PCA) to a training config's faces and save it")
    _add_threads(p)
    add_pca_arguments(p)
    p.set_defaults(func=run_pca)


# ------------------------------------------------------------------------------ fit
def _add_fit(sub) -> None:
    from .fit import add_fit_arguments, run_fit

    p = sub.add_parser("fit", help="fit a model to a mesh, scan, landmarks or image")
    _add_threads(p)
    add_fit_arguments(p)
    p.set_defaults(func=run_fit)


# --------------------------------------------------------------------------- export
def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a trained decoder or PCA model to ONNX, with its latent prior")
    p.add_argument("model", metavar="MODEL",
                   help="a training run folder (its decoder.safetensors: for a joint run the decoder with its UV "
                        "texture), model.safetensors (its decoder), a decoder file or a PCA model file")
    p.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="the ONNX file (replaced atomically)")
    p.add_argument("--hierarchy", metavar="NPZ",
                   help="a decoder file's hierarchy (default: hierarchy.npz beside it, as fit finds it)")
    p.add_argument("--template", metavar="MESH",
                   help="the model's template mesh, when it cannot be rebuilt from the file (as fit takes it)")
    p.add_argument("--write-template", metavar="MESH",
                   help="also write the template (.obj or .ply, with its UVs): the faces the decoded vertices "
                        "index into (default: none)")
    p.add_argument("--opset", type=int_argument(7), default=None,
                   help="ONNX opset (default: the exporter's, 18 or later; an older one, such as 13, is written by "
                        "the TorchScript exporter)")
    p.add_argument("--static-batch", type=int_argument(1), default=None, metavar="B",
                   help="a fixed batch size B instead of a dynamic one (default: dynamic)")
    p.set_defaults(func=_run_export)


def _export_source(path: str) -> str:
    """The model file ``export`` reads for ``path``: a run folder's ``decoder.safetensors`` where it has one
    (refused, as the other commands refuse the folder, when its checkpoint has trained past it)."""
    from .train.loop import DECODER_NAME, check_model_current

    decoder = os.path.join(path, DECODER_NAME)
    if not (os.path.isdir(path) and os.path.isfile(decoder)):
        return path
    check_model_current(path)
    return decoder


def _run_export(args) -> int:
    import json

    from .bench.onnx_export import OnnxRunner, PCAJointDecoder, VertexColorSplit, export_onnx, require_onnx
    from .fit.adapters import as_fit_decoder
    from .fit.command import _load
    from .mesh.io import save_mesh
    from .nn import MeshAutoencoder
    from .pca import PCAModel

    for option, path, suffixes in (("-o/--output", args.output, (".onnx",)),
                                   ("--write-template", args.write_template, (".obj", ".ply"))):
        check_suffix(option, path, suffixes)
        if path is not None:
            check_output_path(path, option)
    require_onnx()
    source = _export_source(args.model)
    model, template, where, stored = _load(argparse.Namespace(model=source, hierarchy=args.hierarchy,
                                                              template=args.template, device="cpu"))
    fd = as_fit_decoder(model, stored)
    module = model.decoder if isinstance(model, MeshAutoencoder) else model
    if isinstance(model, PCAModel) and model.has_colors:  # one code: shape then colour coefficients, as sample's
        module = PCAJointDecoder(model)
    elif getattr(module, "out_channels", 3) == 6:  # a joint autoencoder's decoder: xyz then rgb, named apart
        module = VertexColorSplit(module)
    priors = {"shape": fd.prior} if fd.color_prior is None else {"shape": fd.prior, "color": fd.color_prior}
    metadata = {
        "mesh_decoder.source": os.path.basename(os.path.abspath(args.model)),
        "mesh_decoder.template_hash": template.content_hash(),
        "mesh_decoder.uv_hash": template.uv_hash() or "",
        "mesh_decoder.num_vertices": str(template.num_vertices),
        # z = mean + L eps, eps ~ N(0, I): what `mesh-decoder sample` draws (L null: the identity)
        "mesh_decoder.latent_prior": json.dumps({
            name: {"mean": prior.mean.tolist(),
                   "cov_cholesky": None if prior.cholesky is None else prior.cholesky.tolist()}
            for name, prior in priors.items()}),
    }
    texture = getattr(module, "texture_size", None)
    if texture is not None:
        metadata["mesh_decoder.texture"] = json.dumps({
            "size": list(texture) if isinstance(texture, (list, tuple)) else [texture, texture],
            "layout": "(B, 3, H, W) RGB, row 0 at the top (v = 1), column 0 at u = 0",
            "range": "not clamped: clamp to [0, 1] (sample does)",
            "mask": "(H, W) bool: texels inside a UV triangle; the others copy their nearest covered texel"})
    batch = args.static_batch or 2
    exporter = export_onnx(module, args.output, batch_size=batch, dynamic_batch=args.static_batch is None,
                           opset_version=args.opset, metadata=metadata)
    if args.write_template is not None:
        save_mesh(template, args.write_template)
    import torch

    runner = OnnxRunner(args.output)
    shapes = [tuple(o.shape) for o in runner(torch.randn(batch, module.latent_size))]  # (B, Z): shapes only
    b = "B" if args.static_batch is None else str(batch)

    def dims(name: str, shape: tuple[int, ...]) -> str:
        batched = name != "mask"  # the texel mask is one (H, W) map for the batch
        return "(" + ", ".join([b, *map(str, shape[1:])] if batched else map(str, shape)) + ")"

    outputs = ", ".join(f"{name} {dims(name, shape)}" for name, shape in zip(runner.output_names, shapes))
    kept = next((t.dtype for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()), torch.float32)
    cast = "" if kept == torch.float32 else f" (the {str(kept).removeprefix('torch.')} model exported in float32)"
    print(f"wrote {args.output} ({exporter} exporter): input z ({b}, {module.latent_size}) float32{cast}; "
          f"outputs {outputs}; the latent prior and template hash of the {where} in its metadata "
          "(onnx.load(path).metadata_props)")
    if args.write_template is not None:
        print(f"wrote {args.write_template}: {template.num_vertices} vertices, {template.num_faces} faces")
    return 0


_COMMANDS: list[Callable] = [_add_template, _add_hierarchy, _add_bench, _add_train, _add_evaluate, _add_render,
                             _add_sample, _add_pca, _add_fit, _add_export]


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int_argument(1), metavar="N",
                   help="CPU threads torch uses (default: torch's choice, the cores this process may use)")


def _apply_threads(args: argparse.Namespace) -> None:
    """``torch.set_num_threads(--threads)`` for the commands that take it (bench sets its own for its run)."""
    if args.command != "bench" and getattr(args, "threads", None) is not None:
        check_threads(args.threads)
        import torch

        torch.set_num_threads(args.threads)


#: Arguments and options that name a file or folder. An empty value (an unset shell variable in ``-o "$RUN"``)
#: is a usage error in every command: some took it as not given (``hierarchy -o ""`` built and saved nothing)
#: and others as a bad path (status 1).
PATH_OPTIONS = frozenset({"mesh", "template", "output", "output_dir", "hierarchy", "config", "checkpoint", "json",
                          "pca", "latents", "model", "target", "landmarks", "mask", "overlay", "write_template"})


def _refuse_empty_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    command = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    for action in command._actions:
        if action.dest in PATH_OPTIONS and getattr(args, action.dest, None) == "":
            name = "/".join(action.option_strings) or action.metavar or action.dest
            raise UsageError(f"mesh-decoder {args.command}: {name}: expected a path, got ''")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mesh-decoder", description="Graph-convolutional 3D face mesh decoders.")
    parser.add_argument("--version", action="version", version=f"mesh_decoder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in _COMMANDS:
        add(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one ``warning: ...`` line on stderr (not Python's two, with a source location)."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    command = None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            parser = build_parser()
            args, unknown = parser.parse_known_args(argv)
            command = args.command
            if unknown:  # argparse names the top-level program; the subcommand's own name and help are the hint
                raise _CLIError(f"mesh-decoder {args.command}: unrecognized arguments: {' '.join(unknown)} "
                                f"(mesh-decoder {args.command} --help lists its options)")
            _refuse_empty_paths(parser, args)
            _apply_threads(args)
            return int(args.func(args) or 0)
    except UsageError as exc:  # each names its command, as argparse's own errors do
        text = str(exc)
        prefix = f"mesh-decoder {command}: " if command and not text.startswith("mesh-decoder ") else ""
        print(f"error: {prefix}{text}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout went away (| head): stop quietly, as Unix tools do
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        except OSError:
            pass
        return 141  # 128 + SIGPIPE
    except Exception as exc:  # bad input or files (MeshError is a ValueError; ImportError: openmesh, Pillow), memory
        line = error_line(exc, (ValueError, TypeError, OSError, ImportError))
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
