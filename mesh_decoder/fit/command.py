"""``mesh-decoder fit``: fit a saved model to a registered mesh, a scan, 2D landmarks or a photograph.

::

    mesh-decoder fit MODEL.safetensors --target scan.obj -o fitted.obj
    mesh-decoder fit MODEL.safetensors --target landmarks.json -o fitted.obj --json fit.json
    mesh-decoder fit MODEL.safetensors --target photo.png --landmarks landmarks.json \\
        -o fitted.obj --overlay overlay.png

The model's template (faces and landmarks) is, in order: ``--template FILE``; the
template named in the model file (the training config written by
``mesh-decoder train``, or an ``extra_meta["template"]`` entry
``{"kind": "face", "vertices": 800, "seed": 0}``); or the built-in face template
with the model's vertex count and seed 0. It is checked against the template hash
the model file or its hierarchy records, when there is one. Models built on a
hierarchy (neural decoders, autoencoders) need it: ``--hierarchy FILE``, or
``hierarchy.npz`` beside the model file; for a training run's model, one of another
template or damaged is rebuilt from the run's config with a warning, as
``evaluate`` and ``render`` load a run.

The latent prior of the fit is the model's own: an autoencoder's fitted Gaussian,
the one a ``decoder.safetensors`` of a training run stores in its metadata
(``extra_meta["latent_prior"]``), or else the standard normal.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from typing import Any

from .._checks import (check_device, check_not_an_input, check_output_path, check_suffix, int_argument, is_terminal,
                       real_argument)
from ..errors import MeshFileError, ModelFileError, ModelHierarchyMismatchError, UsageError

__all__ = ["add_fit_arguments", "run_fit"]

_HIERARCHY_BESIDE = "hierarchy.npz"


def add_fit_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``mesh-decoder fit`` to ``parser`` (and return it)."""
    parser.add_argument("model", metavar="MODEL",
                        help="model file (.safetensors): a PCA model, a decoder or an autoencoder; or a training "
                             "run folder (its model.safetensors)")
    parser.add_argument("--target", required=True, metavar="FILE",
                        help="what to fit: a registered mesh or a scan (.obj, .ply, .off), a point cloud "
                             "(.xyz, .txt, .npy), 2D landmarks (.json) or a photograph (.png, .jpg)")
    parser.add_argument("--target-kind", choices=("auto", "mesh", "points", "landmarks", "image"), default="auto",
                        help="how to read the target (default auto: a mesh file with the template's vertices and "
                             "faces is registered, any other mesh a scan)")
    parser.add_argument("--partial-scan", action="store_true",
                        help="the scan covers only part of the face: pair scan points with the model, not "
                             "every model vertex with the scan (scan and point-cloud targets). The fit still "
                             "starts from the whole face's centroid and size matched to the scan's: a scan of "
                             "half the face starts off and can end there (25 degrees, 37 mm in a trial); from "
                             "Python, give fit() a starting pose (init=)")
    parser.add_argument("--trim", type=float, metavar="X",
                        help="drop scan correspondences farther apart than X times their median distance "
                             "(default 5; inf keeps all)")
    parser.add_argument("--correspondence-every", type=int_argument(1), metavar="N",
                        help="iterations between scan correspondence updates (default 10)")
    parser.add_argument("--landmarks", metavar="JSON",
                        help='2D landmarks of the photograph: {"image_size": [H, W], "landmarks": {name: [x, y]}} '
                             "in pixels (x to the right, y down, pixel centres at integers), named after the "
                             "template's landmarks (a .json target has the same layout)")
    parser.add_argument("--mask", metavar="IMAGE", help="face mask of the photograph (non-black pixels: face)")
    parser.add_argument("--template", metavar="MESH", help="the model's template mesh with its landmarks")
    parser.add_argument("--hierarchy", metavar="NPZ",
                        help=f"the model's hierarchy (default: {_HIERARCHY_BESIDE} beside the model, if any)")
    parser.add_argument("--camera", choices=("weak", "perspective"), default="weak",
                        help="camera of landmark and photograph targets (default weak perspective)")
    parser.add_argument("--focal", type=real_argument(0, inclusive=False, what="a finite number of pixels"),
                        help="perspective focal length in pixels (default max(H, W))")
    parser.add_argument("--rotation", choices=("axis_angle", "6d"), default="axis_angle",
                        help="rotation parameterisation (default axis_angle)")
    parser.add_argument("--prior-weight", type=real_argument(0, inclusive=True, what="a finite number"),
                        help="weight of the latent prior (default per target kind)")
    parser.add_argument("--stages", nargs="+", metavar="GROUPS:ITERS[:LR]",
                        help="schedule, e.g. pose:100:0.05 pose+shape:300:0.03 (default per target kind)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("-o", "--output", metavar="MESH",
                        help="write the fitted mesh in target space (.obj, .ply, .off)")
    parser.add_argument("--json", metavar="FILE", help="write the fitted parameters and per-iteration losses")
    parser.add_argument("--overlay", metavar="PNG",
                        help="write a picture of the fit: the fitted mesh over the photograph (white for landmarks "
                             "alone) with the fitted camera, or, for a mesh or scan target, in a frontal view with "
                             "the target's points as blue dots")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _model_template(meta: dict[str, Any], num_vertices: int):
    """The template a model file names, or the built-in face template of its vertex count."""
    from ..mesh.templates import template

    extra = meta.get("extra_meta") or {}
    spec = (extra.get("train_config") or {}).get("template") or extra.get("template")
    if isinstance(spec, dict):
        kind = spec.get("kind", "face")
        if kind == "file":
            from ..mesh.io import load_mesh
            from ..train.loop import recorded_path

            # where training found it, for a run used from another working folder
            path = recorded_path(spec["path"], extra.get("template_file"), os.path.isfile)
            return load_mesh(path), f"template file {path}"
        vertices = int(spec.get("vertices", spec.get("num_vertices", num_vertices)))
        seed = int(spec.get("seed", 0))
        return template(kind, vertices, seed), f"built-in {kind} template ({vertices} vertices, seed {seed})"
    return template("face", num_vertices, 0), f"built-in face template ({num_vertices} vertices, seed 0)"


def _stored_prior(path, meta: dict[str, Any], model):
    """The :class:`~mesh_decoder.fit.GaussianPrior` a decoder file stores (``None`` without one), of the
    model's latent size, on its dtype and device.

    Raises:
        ModelFileError: a stored prior that is not a Gaussian of the model's latent size, naming the file.
    """
    from .adapters import GaussianPrior, as_fit_decoder

    stored = (meta.get("extra_meta") or {}).get("latent_prior")
    if stored is None:
        return None
    import torch

    own = as_fit_decoder(model)  # the model's own prior: its latent size Z, dtype and device
    dd = {"dtype": own.dtype, "device": own.device}
    try:
        prior = GaussianPrior(torch.tensor(stored["mean"], **dd), torch.tensor(stored["cov_cholesky"], **dd))
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        from .._checks import one_line_error

        raise ModelFileError(f"{path}: extra_meta.latent_prior: expected {{'mean': Z numbers, 'cov_cholesky': "
                             f"Z x Z lower-triangular}}, got {one_line_error(exc)}") from None
    if prior.size != own.latent_size:
        raise ModelFileError(f"{path}: extra_meta.latent_prior: expected Z = {own.latent_size} (the model's latent "
                             f"size), got a prior of size {prior.size}")
    return prior


def _run_model_file(path: str) -> str:
    """``path``, or for a training run folder its ``model.safetensors`` (as render and evaluate take a run)."""
    if not os.path.isdir(path):
        return path
    from ..errors import ModelFileNotFoundError
    from ..train.loop import MODEL_NAME, check_model_current

    model = os.path.join(path, MODEL_NAME)
    if not os.path.exists(model):
        raise ModelFileNotFoundError(model, "expected the run folder's model file, found none (written when "
                                            "training ends: finish an interrupted run with mesh-decoder train "
                                            "CONFIG -o RUN --resume; a folder that is no run has none either)")
    check_model_current(path)
    return model


def _load(args: argparse.Namespace):
    """``(model, template, description of the template, stored latent prior or None)`` from the arguments."""
    from ..mesh.io import load_mesh
    from ..model_files import load_model, read_model_meta

    args.model = _run_model_file(args.model)
    try:
        meta = read_model_meta(args.model)
    except ModelFileError:
        from ..train.checkpoint import is_checkpoint

        if is_checkpoint(args.model):  # render and evaluate read checkpoints; a fit needs the model's fitted prior
            raise ModelFileError(f"{args.model}: a training checkpoint, not a model file; use the run's "
                                 "model.safetensors (written when training ends, with the fitted latent prior; "
                                 "finish an interrupted run with --resume)") from None
        raise
    if meta["class"].endswith("Encoder"):
        raise ModelFileError(
            f"{args.model}: holds a {meta['class']}; expected a decoder, an autoencoder or a PCA model")
    needs_hierarchy = meta.get("hierarchy_signature") is not None  # saved with the hierarchy it was built on
    if args.hierarchy is not None and not needs_hierarchy:
        raise ValueError(f"--hierarchy {args.hierarchy}: expected only with a model built on a mesh hierarchy, "
                         f"got {args.model}, a {meta['class']} file, which uses none")
    hierarchy = None
    hierarchy_path = args.hierarchy
    beside = os.path.join(os.path.dirname(os.path.abspath(args.model)), _HIERARCHY_BESIDE)
    if hierarchy_path is None and needs_hierarchy and os.path.isfile(beside):
        hierarchy_path = beside
    if hierarchy_path is not None and args.hierarchy is None and "train_config" in (meta.get("extra_meta") or {}):
        from ..train.loop import trained_hierarchy

        # a training run's model: its hierarchy.npz, rebuilt from its config where that one is of another
        # template or damaged (as evaluate and render load a run)
        hierarchy = trained_hierarchy(args.model, meta)[0]
    elif hierarchy_path is not None:
        from ..hierarchy import load_hierarchy

        hierarchy = load_hierarchy(hierarchy_path)
    elif needs_hierarchy:
        raise ModelFileError(f"{args.model}: {meta['class']} is built on a mesh hierarchy; pass --hierarchy FILE "
                             f"(none found beside the model as {_HIERARCHY_BESIDE})")
    try:
        model = load_model(args.model, hierarchy, device=args.device)
    except ModelHierarchyMismatchError as exc:
        found = " (found beside the model)" if args.hierarchy is None else ""
        raise ModelHierarchyMismatchError(f"{exc}; the given hierarchy is {hierarchy_path}{found}: pass "
                                          "--hierarchy with the model's hierarchy") from None
    if hierarchy is not None:
        num_vertices = hierarchy.levels[0].num_vertices
    else:
        num_vertices = int(meta["config"].get("num_vertices", 0))
    if args.template is not None:
        tpl, where = load_mesh(args.template), f"template file {args.template}"
    else:
        try:
            tpl, where = _model_template(meta, num_vertices)
        except (TypeError, ValueError, KeyError, OSError) as exc:  # OSError: a template file not found from here
            from .._checks import one_line_error

            raise ModelFileError(f"{args.model}: cannot build the model's template ({one_line_error(exc)}); "
                                 "pass --template with the model's template") from None
    expected = (hierarchy.template_hash if hierarchy is not None else None) or meta.get("hierarchy_hash") \
        or (meta.get("extra_meta") or {}).get("template_hash")
    if expected is not None and tpl.content_hash() != expected:
        # the counts say why where they differ (a hash alone did not); equal counts: positions or faces differ
        sizes = f"{tpl.num_vertices} vertices, {tpl.num_faces} faces"
        if hierarchy is not None:
            want = f"{hierarchy.levels[0].num_vertices} vertices, {int(hierarchy.levels[0].faces.shape[0])} faces"
            sizes = f"{sizes}; the model's: {want}" if want != sizes else f"{sizes} as the model's, other positions"
        raise ModelFileError(f"{args.model}: the model was built for template {expected[:12]}..., but the "
                             f"{where} has hash {tpl.content_hash()[:12]}... ({sizes}); "
                             "pass --template with the model's template")
    uv_expected = None if hierarchy is None else hierarchy.meta.get("uv_hash")
    if meta["class"] == "JointDecoder" and uv_expected is not None and \
            uv_expected not in (tpl.uv_hash(), tpl.uv_table_hash()):  # or a hierarchy saved before per-corner hashing
        found = "no UVs" if tpl.uv is None else f"UVs {tpl.uv_hash()[:12]}..."
        raise ModelFileError(f"{args.model}: the model's UV texture layout was made on UVs {uv_expected[:12]}... "
                             f"(its hierarchy's), but the {where} has {found}; its textures would not fit that "
                             "template: pass --template with the model's template")
    if tpl.num_vertices != num_vertices and num_vertices:
        raise ModelFileError(f"{args.model}: the model decodes {num_vertices} vertices, the {where} has "
                             f"{tpl.num_vertices}; pass --template with the model's template")
    return model, tpl, where, _stored_prior(args.model, meta, model)


def _check_outputs(args: argparse.Namespace) -> None:
    """Before the fit, refuse a ``-o`` that is no mesh file name, a ``--json`` that is no JSON name, an
    ``--overlay`` that is no PNG name, and any output that is one of the inputs (it would be replaced)."""
    from ..mesh.io import MESH_EXTENSIONS

    outputs = (("-o/--output", args.output, MESH_EXTENSIONS), ("--json", args.json, (".json",)),
               ("--overlay", args.overlay, (".png",)))
    for option, path, allowed in outputs:
        check_suffix(option, path or None, allowed)
    inputs = (("--target", args.target), ("--landmarks", args.landmarks), ("--mask", args.mask),
              ("--template", args.template), ("MODEL", args.model))
    for option, path, _ in outputs:
        check_not_an_input(option, path, inputs)


def _parse_stage(spec: str):
    """:meth:`Stage.parse` with errors that name ``--stages`` and the stage."""
    from .fit import Stage

    try:
        return Stage.parse(spec)
    except ValueError as exc:
        raise UsageError(f"--stages {spec}: {str(exc).removeprefix(f'stage {spec!r}: ')}") from None


def run_fit(args: argparse.Namespace) -> int:
    """Run ``mesh-decoder fit`` from parsed arguments (see :func:`add_fit_arguments`). Returns 0 on success.

    Bad arguments and files raise ``ValueError`` subclasses naming the file; the
    command line prints them as one line.
    """
    from ..mesh.io import save_mesh
    from .fit import FitProblem, fit
    from .targets import load_target

    if not (args.output or args.json or args.overlay):
        raise UsageError("mesh-decoder fit: give at least one of -o/--output MESH, --json FILE, --overlay PNG")
    if args.focal is not None and args.camera != "perspective":
        raise UsageError(f"--focal: only the perspective camera has a focal length; add --camera perspective "
                         f"(got --camera {args.camera})")
    check_device(args.device, "--device", option=True)
    for option, path in (("-o/--output", args.output), ("--json", args.json), ("--overlay", args.overlay)):
        if path:
            check_output_path(path, option)
    _check_outputs(args)
    stages = None if not args.stages else [_parse_stage(s) for s in args.stages]
    model, tpl, where, prior = _load(args)
    if args.output and args.output.lower().endswith(".off") and tpl.uv is not None:
        raise UsageError(f"-o/--output {args.output}: expected .obj or .ply, OFF cannot store the texture "
                         f"coordinates of the {where}")
    try:
        target = load_target(args.target, tpl, kind=args.target_kind, landmarks=args.landmarks, mask=args.mask)
    except ImportError as exc:  # Pillow for photographs: report it as a usage error naming the fix
        raise ValueError(f"{args.target}: {exc}") from None
    scan_options = {"model_to_scan": False} if args.partial_scan else {}
    if args.trim is not None:
        if not args.trim > 0:
            raise UsageError(f"--trim: expected a positive number of median distances (or inf), got {args.trim}")
        scan_options["trim"] = args.trim
    if args.correspondence_every is not None:
        scan_options["correspondence_every"] = args.correspondence_every
    if scan_options and target.kind != "points":
        raise ValueError(f"--partial-scan, --trim, --correspondence-every: only a scan or point-cloud target takes "
                         f"them, got a {target.kind} target")
    if scan_options:
        target = dataclasses.replace(target, **scan_options)
    if args.camera == "perspective" and target.kind in ("mesh", "points"):
        raise ValueError(f"--camera perspective: {args.target} is a {target.kind} target, fitted in 3D with no "
                         "camera; leave --camera out")
    for option, value, what in (("--landmarks", args.landmarks, "landmarks"), ("--mask", args.mask, "a mask")):
        if value is not None and target.kind != "image":
            raise ValueError(f"{option}: only a photograph target takes {what}, got a {target.kind} target")
    landmarks = target if target.kind == "landmarks" else getattr(target, "landmarks", None)
    if landmarks is not None:
        missing = [n for n in landmarks.names if n not in tpl.landmarks]
        if missing:
            lm_file = args.target if target.kind == "landmarks" else args.landmarks
            raise MeshFileError(lm_file, f"landmarks {missing[:5]}{'...' if len(missing) > 5 else ''} are not "
                                         f"landmarks of the {where}; expected names from {sorted(tpl.landmarks)}")
    camera = "perspective" if args.camera == "perspective" else "weak_perspective"
    colour_stages = [(spec, named[0]) for spec, stage in zip(args.stages or (), stages or ())
                     if (named := [g for g in stage.groups if g in ("color", "appearance")])]
    if colour_stages:  # said here, naming --stages and the target (the fit names stages[i])
        no_color = FitProblem(model, target, template=tpl, prior=prior, rotation=args.rotation, camera=camera,
                              focal=args.focal).color_group_unavailable()
        if no_color is not None:
            spec, group = colour_stages[0]
            raise ValueError(f"--stages {spec}: the group {group!r} fits colour, but for --target {args.target} "
                             f"{no_color}")
    result = fit(model, target, template=tpl, stages=stages, prior=prior, prior_weight=args.prior_weight,
                 rotation=args.rotation, camera=camera, focal=args.focal,
                 progress=not args.quiet and is_terminal(sys.stderr))
    terms = ", ".join(f"{k} {v:.4g}" + ("" if k == "prior" else f" (RMS {math.sqrt(max(v, 0.0)):.4g})")
                      for k, v in result.final_losses.items() if k != "total")
    terms += f"; weighted total {result.final_losses['total']:.4g}"  # the terms are unweighted
    angle = float(result.axis_angle.norm()) * 57.29577951308232
    article = "an" if target.kind == "image" else "a"
    print(f"fitted {type(model).__name__} to {article} {target.kind} target ({where}) in {result.seconds:.1f} s: "
          f"{terms}")
    print(f"scale {float(result.scale):.4g}, rotation {angle:.2f} deg, translation "
          f"[{', '.join(f'{v:.4g}' for v in result.translation.tolist())}]"
          + (f", focal {result.focal:.4g} px" if result.focal is not None else ""))
    if args.output:
        save_mesh(result.to_mesh(), args.output)
        print(f"wrote {args.output}")
    if args.json:
        result.save_json(args.json)
        print(f"wrote {args.json}")
    if args.overlay:
        result.save_overlay(args.overlay)
        print(f"wrote {args.overlay}")
    return 0
