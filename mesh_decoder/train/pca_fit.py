r"""The linear 3DMM of a training config: PCA fitted to its training faces (``mesh-decoder pca``).

The model of Blanz and Vetter, fitted to the faces an autoencoder of the same
config trains on (:func:`~mesh_decoder.train.load_data`, the same split): the
mean face and the leading ``K`` principal directions of the training shapes,
and for joint (shape + colour) configs a colour model with ``K_c`` components
(:meth:`~mesh_decoder.pca.PCAModel.fit`, in float64, stored in float32). The
file is a model file (:func:`~mesh_decoder.model_files.save_model`) whose
metadata holds the training config, so ``mesh-decoder fit`` finds its template
and :func:`~mesh_decoder.train.evaluate` can take it as ``pca=``.

The report gives the fraction of the training shapes' variance the ``K``
components keep (:math:`\sum_{k \le K} \sigma_k^2 / \sum_k \sigma_k^2`) and,
when the split holds test faces, their mean per-vertex Euclidean error after
projection onto the model (data units, mm for the built-in faces).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch

from .._checks import check_int, check_output_path, check_suffix, int_argument
from ..pca import PCAModel
from .config import TrainConfig
from .loop import TrainingData, TrainingError, _as_config, _check_data, length_unit, load_data

__all__ = ["fit_pca", "add_pca_arguments", "run_pca"]


def fit_pca(
    config: TrainConfig | Mapping[str, Any] | str | os.PathLike,
    num_components: int,
    color_components: int | None = None,
    *,
    data: TrainingData | None = None,
) -> tuple[PCAModel, dict[str, Any]]:
    """Fit PCA to the training faces of ``config``.

    Args:
        config: a :class:`TrainConfig`, its dict, or a YAML / JSON file.
        num_components: ``K``, at most the number of training faces minus one.
        color_components: ``K_c`` of a joint config's colour model (default ``None``: ``K``);
            refused for a shape-only config.
        data: the meshes, if already loaded with :func:`load_data` for this config.

    Returns:
        ``(model, meta)``: the float32 :class:`~mesh_decoder.pca.PCAModel` and the JSON-able
        metadata :func:`run_pca` stores beside it (``train_config``, ``data_version``,
        ``template_hash``, ``data``, ``explained_variance`` and, with held-out faces,
        ``test_vertex_error``).

    Raises:
        TrainingError: more components than the training faces allow, or colour components for
            a shape-only config (naming the config keys that decide).
    """
    config = _as_config(config)
    check_int(num_components, "num_components", 1)
    if data is None:
        data = load_data(config)
    else:
        _check_data(data, config)
    joint = data.channels == 6
    where = config.source or "config"
    if color_components is not None:
        check_int(color_components, "color_components", 1)
        if not joint:
            raise TrainingError(f"{where}: color_components (--color-components): a shape-only config (model.joint "
                                "false) has no colours to model")
    n = int(data.train.shape[0])
    for name, k in (("num_components (--components)", num_components),
                    ("color_components (--color-components)", color_components)):
        if k is not None and k > n - 1:
            raise TrainingError(f"{where}: {name}: expected at most {n - 1} (the training faces minus one: "
                                f"{n} from data.n and the split), got {k}")
    x64 = data.train.double()  # (N, V, C)
    model = PCAModel.fit(x64[..., :3], colors=x64[..., 3:] if joint else None, num_components=num_components,
                         color_components=color_components if joint else None).to(torch.float32)
    meta: dict[str, Any] = {
        "train_config": config.to_dict(),
        "data_version": data.meta["data_version"],
        "template_hash": data.meta["template_hash"],
        "data": {k: v for k, v in data.meta.items() if k not in ("data_config", "template_config")},
        "explained_variance": float(model.compactness()[-1]),
    }
    if joint:
        meta["color_explained_variance"] = float(model.color_explained_variance_ratio.sum())
    if data.test.shape[0] > 0:
        from ..metrics import error_summary

        test = data.test  # (M, V, C)
        with torch.no_grad():
            meta["test_vertex_error"] = error_summary(model.reconstruct(test[..., :3]), test[..., :3])["mean"]
            if joint:
                colors = model.decode_colors(model.encode_colors(test[..., 3:]))  # (M, V, 3)
                meta["test_color_error"] = error_summary(colors, test[..., 3:])["mean"]
    return model, meta


# =========================================================================== CLI
def add_pca_arguments(parser) -> None:
    """Arguments of ``mesh-decoder pca CONFIG -o FILE [--components K] [--color-components KC]``."""
    parser.add_argument("config", metavar="CONFIG", help="training config, YAML or JSON: its training faces are fitted")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="the model file to write (.safetensors); mesh-decoder fit takes it")
    parser.add_argument("--components", type=int_argument(1), default=50, metavar="K",
                        help="shape components (default 50; at most the training faces minus one)")
    parser.add_argument("--color-components", type=int_argument(1), default=None, metavar="KC",
                        help="colour components of a joint config (default: as --components)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output file, unless it holds another kind of model (default: refuse)")


def run_pca(args) -> int:
    """Run ``mesh-decoder pca``; returns 0."""
    from ..model_files import save_model
    from .config import load_config

    check_output_path(args.output, "-o/--output")
    check_suffix("-o/--output", args.output, (".safetensors",))
    if os.path.lexists(args.output) and not args.overwrite:
        raise ValueError(f"-o/--output {args.output}: expected a new file, found one already there (a trained model, "
                         "perhaps); nothing was written: choose another path, or pass --overwrite to replace it")
    if os.path.isfile(args.output):  # --overwrite replaces an earlier PCA, never another kind of model
        from ..model_files import read_model_meta

        try:
            kind = read_model_meta(args.output).get("class")
        except (OSError, ValueError):
            kind = None  # not a model file
        if kind not in (None, "PCAModel"):
            raise ValueError(f"-o/--output {args.output}: --overwrite replaces a PCA model file, found a {kind} "
                             "model file (a trained model); nothing was written: choose another path")
    config = load_config(args.config)
    model, meta = fit_pca(config, args.components, args.color_components)
    save_model(model, args.output, extra_meta=meta)
    colors = (f" and {model.color_latent_size} colour components keeping {100 * meta['color_explained_variance']:.2f}%"
              f" of the colour variance" if model.has_colors else "")
    test = meta.get("test_vertex_error")
    tested = ""
    if test is not None:
        unit = length_unit(meta["data"].get("source", ""))  # as evaluate labels them
        tested = f"; mean vertex error {test:.4g} ({unit}) on {meta['data']['num_test']} held-out faces"
        if "test_color_error" in meta:
            tested += f", colour error {meta['test_color_error']:.4g} (RGB distance)"
    print(f"wrote {args.output}: PCA of {meta['data']['num_train']} training faces, {model.latent_size} shape "
          f"components keeping {100 * meta['explained_variance']:.2f}% of the shape variance{colors}{tested}")
    return 0
