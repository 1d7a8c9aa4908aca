r"""Evaluation as the field reports it: the autoencoder beside PCA at the same latent size.

The protocol of COMA (Ranjan et al., "Generating 3D faces using Convolutional
Mesh Autoencoders", ECCV 2018): a model is trained on the training part of an
*interpolation* split (random held-out faces) or an *extrapolation* split
(held-out expressions, ``jaw_open > 0.7``) and measured on the held-out part by
the per-vertex Euclidean error in millimetres (mean, median, standard
deviation), next to a PCA model (:class:`~mesh_decoder.pca.PCAModel`) fitted to
the same training faces with as many components as the autoencoder has latent
dimensions. Colour models add the per-vertex RGB error (Euclidean distance of
RGB in ``[0, 1]``); PCA then has a colour model with the same number of
components.

The 3D morphable model measures (:mod:`mesh_decoder.metrics`) complete it:

* ``explained_variance``: the fraction of the training shapes' variance the
  reconstructions keep, :math:`1 - \sum \lVert x - \hat x \rVert^2 / \sum \lVert x - \bar x \rVert^2`
  (for PCA this is its compactness at ``K`` components), and the ``compactness``
  curves (PCA: of the data variance; autoencoder: of its latent covariance);
* ``generalisation``: mean test error against the number of components (PCA's
  curve; the autoencoder's single point is its test mean error);
* ``specificity``: mean distance of random samples (the autoencoder's fitted
  Gaussian latent prior, PCA's standard normal) to their nearest training face.

The PCA baseline is fitted here to the run's training faces (the default), or read from a model file
that ``mesh-decoder pca`` (:func:`~mesh_decoder.train.fit_pca`) wrote (:func:`load_pca_file`, the
command's ``--pca FILE``). Such a file stores the training config it was fitted on; the config keys
that decide the training faces (:func:`training_face_keys`) and the data version and template hash it
stores must be the run's, else it is refused: PCA fitted to other faces (the run's test faces among
them, perhaps) does not compare with the autoencoder. A PCA file without a stored config is measured
with a note saying nothing checked its faces. The result says where the baseline came from
(``models["pca"]["source"]``, and a line of the table).

Parameter counts: the autoencoder's trainable weights (encoder + decoder, and the
decoder alone; buffers such as normalisation and graph operators are not
counted); PCA's "parameters" are its buffer sizes, ``mean`` (``3V``) plus
``components`` (``K x 3V``), and the same for its colour model.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from .._checks import (MAX_SEED, check_bool, check_device, check_int, check_not_an_input, check_output_path,
                       check_suffix, int_argument)
from ..errors import UsageError
from ..nn.autoencoder import MeshAutoencoder
from ..pca import PCAModel
from .config import TrainConfig
from .loop import (TrainingData, TrainingError, TrainResult, _as_config, _check_data, check_trained_on, length_unit,
                   check_trained_template, encode_all, in_model_batches, load_data, load_template, load_trained)

__all__ = ["MEASURES", "PCAFile", "load_pca_file", "training_face_keys", "evaluate", "format_table",
           "add_evaluate_arguments", "run_evaluate"]

#: Measures :func:`evaluate` can compute; the errors are always computed.
MEASURES: tuple[str, ...] = ("error", "compactness", "generalisation", "specificity")


class _VertexSampler:
    """The autoencoder's prior samples, vertices only (joint models decode xyz + rgb)."""

    def __init__(self, model: MeshAutoencoder) -> None:
        self.model = model

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.model.sample(n, generator)[..., :3]  # (n, V, 3)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.model.sample_latents(n, generator).to(self.model.decoder.fc.weight.dtype)  # (n, Z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)[..., :3]  # (b, V, 3)


def _count(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _pca_parameters(pca: PCAModel) -> int:
    total = pca.mean.numel() + pca.components.numel()
    if pca.has_colors:
        total += pca.color_mean.numel() + pca.color_components.numel()
    return int(total)


def _summary(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    from ..metrics import error_summary

    s = error_summary(pred, target)
    return {k: s[k] for k in ("mean", "median", "std", "max")}


def _explained(recon: torch.Tensor, x: torch.Tensor, mean: torch.Tensor) -> float:
    """``1 - SSE / SST`` over meshes ``(N, V, 3)`` with the training mean ``(V, 3)``, in float64."""
    sse = (recon.double() - x.double()).square().sum()
    sst = (x.double() - mean.double()).square().sum()
    return float(1.0 - sse / sst) if float(sst) > 0 else float("nan")


@torch.no_grad()
def _ae_reconstruct(model: MeshAutoencoder, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    if x.shape[0] == 0:
        raise ValueError("x: expected at least one mesh to reconstruct, got none")
    return in_model_batches(model, model, x, batch_size)  # (N, V, C)


def _prior_is_default(model: MeshAutoencoder) -> bool:
    Z = model.latent_size
    eye = torch.eye(Z, dtype=model.latent_cov_cholesky.dtype, device=model.latent_cov_cholesky.device)
    return bool((model.latent_mean == 0).all()) and bool(torch.equal(model.latent_cov_cholesky, eye))


def _resolve(source, config, device):
    """``(model, config, origin, saved)``: ``saved`` is a saved run's JSON meta (``None`` for objects)."""
    if isinstance(source, TrainResult):
        return source.model, source.config, {"kind": "train_result", "path": source.model_path}, None
    if isinstance(source, MeshAutoencoder):
        if config is None:
            raise TypeError("config: evaluating a MeshAutoencoder object needs its TrainConfig (config=...)")
        return source, _as_config(config), {"kind": "model", "path": None}, None
    if isinstance(source, (str, os.PathLike)):
        model, _, cfg, meta = load_trained(source, device=device)
        if config is not None:
            raise TypeError("config: a saved run carries its own config; do not pass config=")
        return model, cfg, {"kind": meta["kind"], "path": meta["path"]}, meta
    raise TypeError(f"source: expected a run folder, a model or checkpoint file, a TrainResult or a "
                    f"MeshAutoencoder, got {type(source).__name__}")


def _pca_sizes(K: int) -> list[int]:
    sizes, k = [], 1
    while k < K:
        sizes.append(k)
        k *= 2
    return sizes + [K]


# --------------------------------------------------------------------- PCA files
_PCA_FILE = "a PCA model file (.safetensors, as mesh-decoder pca writes)"

#: Config keys whose effect a stored hash records: a path given another way (relative, absolute) or a
#: pattern matching the same files makes the same faces, which the hash then shows.
_HASHED_KEYS = {"template.kind": "template_hash", "template.path": "template_hash", "template.vertices": "template_hash",
                "template.seed": "template_hash", "data.root": "data_version", "data.pattern": "data_version",
                "data.align": "data_version"}


@dataclass(frozen=True)
class PCAFile:
    """A PCA model read from a model file by :func:`load_pca_file`, with what the file says of its training faces.

    :func:`evaluate` takes it as ``pca=`` and checks it against the run it evaluates.

    Attributes:
        model: the :class:`~mesh_decoder.pca.PCAModel` as stored (all its components, its dtype).
        path: the file, as given.
        train_config: the :class:`TrainConfig` it was fitted on (:func:`~mesh_decoder.train.fit_pca` and
            ``mesh-decoder pca`` store it), or ``None`` for a PCA saved another way: its training faces
            cannot be checked.
        data_version: the data version of those faces as stored, or ``None``.
        template_hash: the template's content hash as stored, or ``None``.
    """

    model: PCAModel
    path: str
    train_config: TrainConfig | None = None
    data_version: str | None = None
    template_hash: str | None = None


def training_face_keys(config: TrainConfig | Mapping[str, Any]) -> list[str]:
    """The dotted config keys that decide a config's training faces: those :func:`load_data` reads for its
    data source, split and template kind.

    Synthetic faces: ``data.n``, ``data.seed`` (the draw and the interpolation split), ``data.split``,
    ``data.generator_seed`` and the split's own keys (``data.test_fraction``, or ``data.key`` and
    ``data.threshold``); a folder: ``data.root``, ``data.pattern``, ``data.align``, ``data.scale``, ``data.seed``
    and ``data.test_fraction``. The template: ``template.kind`` and ``template.vertices`` and ``template.seed``
    (built-in) or ``template.path`` (a file). Not among them: ``data.norm_eps`` (the autoencoder's
    normalisation), ``model.joint`` (colours beside the same shapes) and the ``model``, ``hierarchy`` and
    ``training`` sections.
    """
    config = _as_config(config)
    d, t = config.data, config.template
    keys = ["data.source", "template.kind"]
    keys += ["template.path"] if t.kind == "file" else ["template.vertices", "template.seed"]
    if d.source == "folder":
        keys += ["data.root", "data.pattern", "data.align", "data.scale", "data.seed", "data.test_fraction"]
    else:
        keys += ["data.n", "data.seed", "data.split", "data.generator_seed"]
        keys += ["data.test_fraction"] if d.split == "interpolation" else ["data.key", "data.threshold"]
    return keys


def _not_a_pca_file(path: str, exc: Exception) -> str:
    """What a file :func:`~mesh_decoder.model_files.read_model_meta` refused (``exc``) is, for the error."""
    from .checkpoint import is_checkpoint

    if is_checkpoint(path):
        return "a training checkpoint (the run to evaluate: give it as CHECKPOINT)"
    reason = str(exc).removeprefix(f"{path}: ")  # read_model_meta names the file, as this error does already
    return f"a file that is not a safetensors model file ({reason})"


def _read_pca_file(path: str | os.PathLike) -> PCAFile:
    """The :class:`PCAFile` at ``path``; see :func:`load_pca_file` for what is refused."""
    from ..errors import ModelFileError, ModelFileNotFoundError, shown_path
    from ..model_files import load_model, read_model_meta
    from .config import TrainConfigError

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a PCA model file path, got {type(path).__name__}")
    path = os.fspath(path)
    shown = shown_path(path)
    if not os.path.lexists(path):
        raise ModelFileNotFoundError(path, f"expected {_PCA_FILE}, found nothing at this path")
    if os.path.isdir(path):
        raise ModelFileError(f"{shown}: expected {_PCA_FILE}, found a folder")
    try:
        meta = read_model_meta(path)
    except ModelFileError as exc:
        raise ModelFileError(f"{shown}: expected {_PCA_FILE}, found {_not_a_pca_file(path, exc)}") from None
    kind = meta["class"]
    if kind != "PCAModel":
        hint = (" (a trained autoencoder: the run to evaluate, give it as CHECKPOINT)" if kind == "MeshAutoencoder"
                else " (a training run's decoder)" if kind.endswith("Decoder") else "")
        raise ModelFileError(f"{shown}: expected {_PCA_FILE}, found a {kind} model file{hint}")
    model = load_model(path)  # a PCA model needs no hierarchy; a corrupt file is named by load_model
    extra = meta.get("extra_meta") or {}
    stored = extra.get("train_config")
    config = None
    if stored is not None:
        try:
            config = TrainConfig.from_dict(stored, source=f"{shown} (its stored train_config)")
        except TrainConfigError as exc:
            raise ModelFileError(str(exc)) from None
    hashes = {key: extra.get(key) if isinstance(extra.get(key), str) else None
              for key in ("data_version", "template_hash")}
    return PCAFile(model, path, config, **hashes)


def _face_differences(pca: PCAFile, config: TrainConfig,
                      recorded: Mapping[str, Any] | None) -> tuple[list[str], list[str]]:
    """``(differences, checked)``: ``"key: run A, PCA file B"`` for each training-face key (and stored hash) on
    which ``pca`` and the run (``config``; ``recorded``: the data version and template hash of its faces, or
    ``None``) differ, and the keys compared."""
    fitted = pca.train_config
    run, theirs = config.to_dict(), fitted.to_dict()
    # keys that decide the faces of both (a file template's unused template.vertices is not compared)
    theirs_keys = set(training_face_keys(fitted))
    keys = [key for key in training_face_keys(config) if key in theirs_keys]
    hashes: dict[str, tuple[Any, Any]] = {}  # hash key -> (run's, PCA file's), where both are known
    for key in ("template_hash", "data_version"):
        now, then = (recorded or {}).get(key), getattr(pca, key)
        if now is None or then is None:
            continue
        if key == "data_version" and "folder" in (config.data.source, fitted.data.source) \
                and config.model.joint != fitted.model.joint:
            continue  # a folder's version hashes the values loaded: the colours too for a joint config
        hashes[key] = (now, then)
    differences = []
    for key in keys:
        section, name = key.split(".")
        ours, other = run[section].get(name), theirs[section].get(name)
        by_hash = hashes.get(_HASHED_KEYS.get(key, ""))
        if ours != other and not (by_hash is not None and by_hash[0] == by_hash[1]):
            differences.append(f"{key}: run {ours!r}, PCA file {other!r}")
    differences += [f"{key}: run {now!r}, PCA file {then!r}" for key, (now, then) in hashes.items() if now != then]
    return differences, keys + list(hashes)


def _check_pca_faces(pca: PCAFile, config: TrainConfig, recorded: Mapping[str, Any] | None,
                     run: str | None) -> list[str]:
    """The keys compared; raises :class:`TrainingError` when ``pca`` was fitted to other faces than the run's."""
    differences, checked = _face_differences(pca, config, recorded)
    if differences:
        from ..errors import shown_path

        raise TrainingError(f"{shown_path(pca.path)}: expected a PCA of the training faces of {run or 'the run'}, "
                            f"found one fitted to other faces ({'; '.join(differences)}); its errors would not "
                            "compare with the run's (the run's test faces may be among its training faces): fit one "
                            "to the run's config with mesh-decoder pca")
    return checked


def _recorded(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The data version and template hash in ``meta`` (a saved run's, a TrainResult's or TrainingData's), if any."""
    if not meta or meta.get("data_version") is None:
        return None
    return {key: meta.get(key) for key in ("data_version", "template_hash")}


def load_pca_file(
    path: str | os.PathLike,
    run: Any = None,
    *,
    data: TrainingData | None = None,
) -> PCAFile:
    """Read a PCA model file (``mesh-decoder pca``, or :func:`~mesh_decoder.train.fit_pca` and
    :func:`~mesh_decoder.model_files.save_model`) to give :func:`evaluate` as ``pca=``; with ``run``, check
    that it was fitted to the run's training faces.

    The file is read as safetensors with JSON metadata (no pickle). The check (which :func:`evaluate`
    repeats for the run it evaluates) compares the config the file stores on the keys of
    :func:`training_face_keys`, and the data version and template hash it stores with the run's where
    both are known (then a path or pattern written differently but naming the same faces is accepted). A
    file that stores no config is not checked: its :attr:`PCAFile.train_config` is ``None``.

    Args:
        path: the ``.safetensors`` file.
        run: what the PCA will be measured beside: a run folder, ``model.safetensors`` or
            ``checkpoint.safetensors`` (their recorded data version and template hash are compared too),
            a :class:`~mesh_decoder.train.TrainResult`, or a :class:`TrainConfig` or its dict (config keys
            only, unless ``data`` is given). Default ``None``: read, not checked.
        data: the run's :class:`TrainingData` (from :func:`load_data` for its config): its data version
            and template hash are compared. Default ``None``.

    Returns:
        The :class:`PCAFile`: the model with all its stored components (:func:`evaluate` truncates them
        to the latent size) and the stored config, data version and template hash.

    Raises:
        ModelFileNotFoundError: nothing at ``path`` (also a ``FileNotFoundError``).
        ModelFileError: a folder, a file that is not a model file (not safetensors, a training
            checkpoint, ...), a model file of another class (a decoder, a trained autoencoder), a corrupt
            file or stored config; the message names the file, what was expected and what was found.
        TrainingError: the stored config or data differ from the run's on a key that decides the
            training faces; the message names each key with the run's and the file's value.
        TypeError: ``path`` that is not a path, or a ``run`` of another type.
    """
    pca = _read_pca_file(path)
    if run is None:
        if data is not None:
            raise TypeError("data: given without run; pass the run (its config) the data belong to")
        return pca
    name = None
    if isinstance(run, TrainResult):
        config, recorded, name = run.config, _recorded(run.data_meta), run.output_dir
    elif isinstance(run, (TrainConfig, Mapping)):
        config, recorded = _as_config(run), None
        name = config.source
    elif isinstance(run, (str, os.PathLike)):
        _, config, _, saved = _resolve(run, None, None)
        recorded, name = _recorded(saved), saved["path"]
    else:
        raise TypeError(f"run: expected a run folder, a model or checkpoint file, a TrainResult or a TrainConfig, "
                        f"got {type(run).__name__}")
    if data is not None:
        _check_data(data, config)
        recorded = _recorded(data.meta)
    if pca.train_config is not None:
        _check_pca_faces(pca, config, recorded, name)
    return pca


def evaluate(
    source: Any,
    *,
    config: TrainConfig | Mapping[str, Any] | None = None,
    data: TrainingData | None = None,
    pca: bool | PCAModel | PCAFile = True,
    measures: Sequence[str] = MEASURES,
    num_samples: int = 100,
    batch_size: int = 64,
    seed: int = 0,
    max_train_faces: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Evaluate a trained autoencoder on the held-out part of its split, beside PCA.

    Args:
        source: a run folder, ``model.safetensors`` or ``checkpoint.safetensors`` written by
            :func:`~mesh_decoder.train.train`, a :class:`~mesh_decoder.train.TrainResult`, or a
            :class:`~mesh_decoder.nn.MeshAutoencoder` (then ``config`` is required).
        config: the training config of a model object. Default ``None``.
        data: the meshes from :func:`~mesh_decoder.train.load_data` for this config
            (default ``None``: loaded, i.e. generated again for synthetic faces).
        pca: ``True`` (default) fits PCA to the training faces with ``K`` = the latent
            size; a fitted :class:`~mesh_decoder.pca.PCAModel` of the run's template
            (same vertex count) with at least ``K`` components is truncated to ``K``;
            ``False`` leaves PCA out. A given model is used as it is: nothing checks
            that it was fitted to this run's training faces (one fitted to other faces,
            a test face among them, is measured all the same). A :class:`PCAFile`
            (:func:`load_pca_file`) is used the same way, after checking that the training
            config it stores decides the run's training faces (:func:`training_face_keys`,
            and its data version and template hash); one that stores none is measured with
            a note saying so. For a shape-only run
            its colour model is ignored; for a joint (shape + colour) run its colour
            model, truncated to ``K`` too, needs at least ``K`` components, and a PCA
            without one is measured on shape only (its ``color_error`` is ``None``).
        measures: a subset of :data:`MEASURES`; the errors are always computed.
        num_samples: random samples for specificity. Default 100.
        batch_size: meshes per forward pass. Default 64.
        seed: seeds the samples of specificity. Default 0.
        max_train_faces: at most this many training faces (at least 2) for the explained
            variance, latent compactness and a checkpoint's latent prior (default ``None``: all);
            recorded as ``split["max_train_faces"]``, and the table labels those rows with it. The
            explained variance of a subset is measured about the full training mean, so it no longer
            equals PCA's compactness at ``K``.
        device: where to run a model loaded from a file. Default ``None`` (CPU).

    Returns:
        A JSON-able dict: ``split`` (kind, data version, train / test sizes),
        ``latent_size``, ``units``, ``parameter_note``, ``models`` (``"autoencoder"``
        and ``"pca"``, each with ``name``, ``parameters``, ``decoder_parameters``,
        ``vertex_error`` {mean, median, std, max}, ``color_error`` or ``None``, and the
        measures asked for; ``"pca"`` also has ``source``: ``kind`` (``"fitted"`` here, ``"file"``
        or ``"object"``), ``path`` (a file's, else ``None``), ``components`` and ``color_components`` (a
        given model's before truncation to ``K``, 0 colour components without a colour model; for the PCA
        fitted here, ``K`` and ``None``), ``training_faces`` (``"fitted"``, ``"checked"`` or
        ``"unchecked"``),
        ``checked_keys`` (the keys compared for a checked file, else empty) and ``note`` (a file without a
        stored config: that nothing checked its faces; else ``None``)), and ``table``, the
        side-by-side text table.

    Raises:
        ValueError: no held-out faces, ``K`` larger than PCA can fit, a given ``pca`` of another
            vertex count or with fewer than ``K`` shape (joint runs: colour) components, a ``batch_size`` or
            ``num_samples`` below 1, a ``max_train_faces`` below 2, a ``seed`` outside
            ``[0, MAX_SEED]``, or a device not available here.
        TypeError: ``measures`` given as one string, a ``seed`` that is not an integer, or a ``pca``
            that is neither a bool, a ``PCAModel`` nor a ``PCAFile`` (a path: read it with :func:`load_pca_file`).
        TrainingError: a saved run's data version or template differs from the data now
            (a folder of meshes that changed since training would leak training faces into the test set),
            or a ``PCAFile`` was fitted to other training faces than the run's (naming each key, with the
            run's and the file's value).
    """
    if isinstance(measures, str):  # iterating it would name its letters
        raise TypeError(f"measures: expected a list of names from {list(MEASURES)}, got the string {measures!r} "
                        f"(write ({measures!r},))")
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise ValueError(f"measures: expected a subset of {list(MEASURES)}, got unknown {unknown}")
    if pca is not None and not isinstance(pca, (PCAModel, PCAFile)):
        try:  # 0 or "no" would have fitted PCA by their truth value
            pca = check_bool(pca, "pca")
        except TypeError:
            hint = "; a PCA model file: pca=load_pca_file(path)" if isinstance(pca, (str, os.PathLike)) else ""
            raise TypeError(f"pca: expected True, False or a fitted PCAModel, got {pca!r} "
                            f"({type(pca).__name__}){hint}") from None
    check_int(batch_size, "batch_size", 1)
    check_int(num_samples, "num_samples", 1)
    check_int(seed, "seed", 0, MAX_SEED)
    if max_train_faces is not None:
        check_int(max_train_faces, "max_train_faces", 2)  # a latent covariance needs two faces
    model, config, origin, saved = _resolve(source, config, device)
    pca_file = pca if isinstance(pca, PCAFile) else None
    pca_source: dict[str, Any] = {"kind": "fitted", "path": None, "components": None, "color_components": None,
                                  "training_faces": "fitted", "checked_keys": [], "note": None}
    checked = None  # the keys a PCA file was checked on
    if pca_file is not None and pca_file.train_config is not None and saved is not None:
        # before any work: the saved run's faces are recorded (and checked against the data below)
        checked = _check_pca_faces(pca_file, config, _recorded(saved), saved["path"])
    if isinstance(pca, (PCAModel, PCAFile)):  # before any work: a PCA that cannot be measured beside this run
        pca_source = _given_source(pca)
        given, name = (pca, "pca") if pca_file is None else (pca_file.model, pca_file.path)
        pca = _given_pca(given, model.latent_size, model.decoder.num_vertices[0], model.decoder.out_channels == 6,
                         name)
    if data is None:
        template = load_template(config)
        if saved is not None:  # before the meshes: a folder's scans would be named, not the template that changed
            check_trained_template(saved, config, template, saved["path"])
        data = load_data(config, template)
    else:
        _check_data(data, config)
    if saved is not None:  # a folder that changed since training would move training faces into the test set
        check_trained_on(saved, data, saved["path"])
    if pca_file is not None and pca_file.train_config is not None and checked is None:
        checked = _check_pca_faces(pca_file, config, _recorded(data.meta), origin["path"])
    if data.test.shape[0] == 0:
        run = f"{origin['path']}: the run's " if origin["path"] is not None else ""
        raise ValueError(f"{run}data: expected held-out test meshes, got none (data.test_fraction = "
                         f"{config.data.test_fraction}, split {config.data.split!r} of {data.train.shape[0]} faces)"
                         + ("; train with more faces or a larger data.test_fraction to evaluate" if run else ""))
    model = model.eval()
    K = model.latent_size
    joint = data.channels == 6
    train_x, test_x = data.train, data.test  # (N, V, C), (M, V, C)
    subset = train_x if max_train_faces is None else train_x[:max_train_faces]
    train_mean = train_x[..., :3].double().mean(dim=0)  # (V, 3)
    want = set(measures)

    # ------------------------------------------------------------ autoencoder
    recon = _ae_reconstruct(model, test_x, batch_size)  # (M, V, C)
    ae: dict[str, Any] = {
        "name": f"autoencoder ({type(model.encoder).__name__} + {type(model.decoder).__name__})",
        "parameters": _count(model),
        "decoder_parameters": _count(model.decoder),
        "vertex_error": _summary(recon[..., :3], test_x[..., :3]),
        "color_error": _summary(recon[..., 3:], test_x[..., 3:]) if joint else None,
    }
    prior_model = model
    if want & {"compactness", "specificity"}:
        latents = encode_all(model, subset, batch_size)  # (n, Z)
        if "compactness" in want:
            from ..metrics import compactness

            ae["explained_variance"] = _explained(_ae_reconstruct(model, subset, batch_size)[..., :3],
                                                  subset[..., :3], train_mean)
            ae["compactness"] = [float(c) for c in compactness(latents)]
        if _prior_is_default(model):  # a checkpoint: fit the prior on a copy
            prior_model = copy.deepcopy(model).fit_latent_prior(latents.to(model.latent_mean))
    if "generalisation" in want:
        ae["generalisation"] = {str(K): ae["vertex_error"]["mean"]}
    if "specificity" in want:
        ae["specificity"] = _specificity(_VertexSampler(prior_model), train_x[..., :3], num_samples, seed, batch_size)

    # -------------------------------------------------------------------- PCA
    models = {"autoencoder": ae}
    if pca is not False and pca is not None:
        models["pca"] = _evaluate_pca(pca, K, train_x, test_x, subset, train_mean, joint, want, num_samples, seed,
                                      batch_size)
        if pca_source["kind"] == "fitted":
            pca_source["components"] = K
        elif checked is not None:
            pca_source["training_faces"], pca_source["checked_keys"] = "checked", checked
        models["pca"]["source"] = pca_source

    result = {
        "source": origin,
        "split": {
            "kind": config.data.split,
            "source": data.meta["source"],
            "data_version": data.meta["data_version"],
            "num_train": int(train_x.shape[0]),
            "num_test": int(test_x.shape[0]),
            # the training faces the explained variance and compactness were measured on (all: null)
            "max_train_faces": None if max_train_faces is None else int(subset.shape[0]),
            **({"key": config.data.key, "threshold": config.data.threshold}
               if config.data.split == "extrapolation" else {"test_fraction": config.data.test_fraction}),
        },
        "latent_size": K,
        "num_vertices": int(train_x.shape[1]),
        "units": {"vertex_error": length_unit(data.meta["source"]),
                  "color_error": "Euclidean RGB distance, channels in [0, 1]"},
        "parameter_note": _parameter_note("pca" in models, joint,
                                          "pca" in models and models["pca"]["color_error"] is not None),
        "measures": [m for m in MEASURES if m in want or m == "error"],
        "models": models,
    }
    result["table"] = format_table(result)
    return result


def _parameter_note(with_pca: bool, joint: bool, pca_colors: bool = True) -> str:
    """How the table's parameter counts are counted (PCA's only when it is evaluated; ``pca_colors``: whether
    the PCA of a joint run has a colour model)."""
    note = "autoencoder: trainable weights of encoder + decoder (buffers not counted)"
    if with_pca:
        note += "; PCA: buffer sizes, mean (3V) + components (K x 3V)"
        if joint and pca_colors:
            note += (", for shape and for colour (PCA has K shape and K colour coefficients, the autoencoder one "
                     "K-dimensional latent for both)")
        elif joint:
            note += (", for shape only (the given PCA has no colour model: K shape coefficients, its colour error "
                     "not available; the autoencoder has one K-dimensional latent for shape and colour)")
    return note


def _given_source(pca: PCAModel | PCAFile) -> dict[str, Any]:
    """The ``source`` entry of a given PCA's result (a file's ``training_faces`` becomes ``"checked"`` once
    its stored config is compared with the run's)."""
    model = pca if isinstance(pca, PCAModel) else pca.model
    colors = model.color_latent_size if model.has_colors else 0
    if isinstance(pca, PCAModel):
        return {"kind": "object", "path": None, "components": pca.latent_size, "color_components": colors,
                "training_faces": "unchecked", "checked_keys": [], "note": None}
    note = None
    if pca.train_config is None:
        note = (f"{pca.path} stores no training config, so nothing checked that it was fitted to this run's "
                "training faces (a PCA of other faces, the run's test faces among them, is measured all the same)")
    return {"kind": "file", "path": pca.path, "components": pca.model.latent_size, "color_components": colors,
            "training_faces": "unchecked", "checked_keys": [], "note": note}


def _given_pca(pca: PCAModel, K: int, V: int, joint: bool, name: str = "pca") -> PCAModel:
    """A given PCA model checked against the run (template size ``V``, latent size ``K``, joint or shape only)
    and truncated to ``K`` shape (and, for a joint run, colour) components, in float32 on the CPU; errors
    name it ``name`` (a file's path)."""
    if pca.num_vertices != V:
        raise ValueError(f"{name}: expected a PCAModel of {V} vertices (the run's template), got {pca.num_vertices}")
    if pca.latent_size < K:
        raise ValueError(f"{name}: expected a PCAModel with at least {K} components (the latent size), "
                         f"got {pca.latent_size}")
    if joint and pca.has_colors and pca.color_latent_size < K:
        raise ValueError(f"{name}: expected a PCAModel with at least {K} colour components (the latent size, as "
                         f"for its {pca.latent_size} shape components), got {pca.color_latent_size}")
    # a shape-only run, or a PCA without colour: shape alone (its colour model would only be counted)
    out = pca.truncate(K, K if joint and pca.has_colors else 0)
    return out.to(device="cpu", dtype=torch.float32)


def _specificity(model, train_vertices: torch.Tensor, num_samples: int, seed: int, batch_size: int) -> dict[str, float]:
    from ..metrics import specificity

    generator = torch.Generator().manual_seed(seed)
    out = specificity(model, train_vertices, num_samples=num_samples, generator=generator,
                      batch_size=batch_size, return_all=True)
    n = int(num_samples)
    # the standard error says how far two models' means may differ by sampling alone (100 samples: about
    # a tenth of the distances' spread)
    return {"mean": out["mean"], "std": out["std"], "sem": out["std"] / math.sqrt(max(n - 1, 1)), "num_samples": n,
            "seed": int(seed)}


@torch.no_grad()
def _evaluate_pca(pca, K, train_x, test_x, subset, train_mean, joint, want, num_samples, seed, batch_size):
    from ..metrics import compactness, generalisation

    max_k = train_x.shape[0] - 1
    if isinstance(pca, PCAModel):  # checked and truncated by _given_pca
        model = pca
    else:
        if K > max_k:
            raise ValueError(f"pca: {K} components need at least {K + 1} training faces, got {train_x.shape[0]}")
        x64 = train_x.double()  # (N, V, C): fit in float64, evaluate in float32 as the autoencoder
        model = PCAModel.fit(x64[..., :3], colors=x64[..., 3:] if joint else None, num_components=K)
    model = model.to(torch.float32)

    def rec(x):  # (N, V, C) -> (N, V, 3) shape, (N, V, 3) colours or None
        shape = torch.cat([model.reconstruct(x[i:i + batch_size, :, :3]) for i in range(0, x.shape[0], batch_size)])
        colors = None
        if joint and model.has_colors:
            colors = torch.cat([model.decode_colors(model.encode_colors(x[i:i + batch_size, :, 3:]))
                                for i in range(0, x.shape[0], batch_size)])
        return shape, colors

    shape, colors = rec(test_x)
    out: dict[str, Any] = {
        "name": "PCA",
        "parameters": _pca_parameters(model),
        "decoder_parameters": _pca_parameters(model),
        "vertex_error": _summary(shape, test_x[..., :3]),
        "color_error": _summary(colors, test_x[..., 3:]) if colors is not None else None,
    }
    if "compactness" in want:
        out["explained_variance"] = _explained(rec(subset)[0], subset[..., :3], train_mean)
        out["compactness"] = [float(c) for c in compactness(model)]
    if "generalisation" in want:
        sizes = _pca_sizes(K)
        curve = generalisation(model, None, test_x[..., :3], sizes, batch_size=batch_size)
        out["generalisation"] = {str(k): float(v) for k, v in curve.items()}
    if "specificity" in want:
        out["specificity"] = _specificity(model, train_x[..., :3], num_samples, seed, batch_size)
    return out


# ------------------------------------------------------------------------- table
def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "frac":
        return f"{value:.4f}"
    # lengths: 3 decimals, or 3 significant digits below 0.1 (metre-scale errors read 0.003 and 0.002)
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.1 else f"{value:.3g}"


def _source_lines(source: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    """The table's lines on where the PCA baseline came from (and its note, if any)."""
    K = result["latent_size"]
    if source["kind"] == "fitted":
        return [f"PCA baseline: fitted now to the run's {result['split']['num_train']} training faces, "
                f"{K} components"]
    what = source["path"] if source["kind"] == "file" else "a given PCAModel"
    line = f"PCA baseline: {what}, its first {K} of {source['components']} components"
    if source.get("color_components") and result["models"]["pca"].get("color_error") is not None:
        line = f"{line[:-len(' components')]} shape and {K} of {source['color_components']} colour components"
    if source["training_faces"] == "checked":
        hashed = [k for k in source.get("checked_keys", ()) if "." not in k]
        line += (" (fitted to the run's training faces: its stored config matches the run's on the keys that "
                 "decide them" + (f", and its {' and '.join(k.replace('_', ' ') for k in hashed)}" if hashed else "")
                 + ")")
    elif source["kind"] == "object":
        line += " (not checked against the run's training faces)"
    lines = [line]
    if source.get("note"):
        lines.append(f"note: {source['note']}")
    return lines


def format_table(result: Mapping[str, Any]) -> str:
    """The side-by-side text table of an :func:`evaluate` result."""
    models = result["models"]
    names = list(models)
    split = result["split"]
    unit = length_unit(split["source"])  # a folder of meshes in metres was labelled mm
    rows: list[tuple[str, str, Any]] = [
        ("parameters", "int", lambda m: m["parameters"]),
        ("  decoder only", "int", lambda m: m["decoder_parameters"]),
        (f"vertex error mean ({unit})", "length", lambda m: m["vertex_error"]["mean"]),
        (f"vertex error median ({unit})", "length", lambda m: m["vertex_error"]["median"]),
        (f"vertex error std ({unit})", "length", lambda m: m["vertex_error"]["std"]),
        (f"vertex error max ({unit})", "length", lambda m: m["vertex_error"]["max"]),
    ]
    if any(m.get("color_error") for m in models.values()):
        rows += [
            ("colour error mean (RGB)", "frac", lambda m: (m["color_error"] or {}).get("mean")),
            ("colour error median (RGB)", "frac", lambda m: (m["color_error"] or {}).get("median")),
        ]
    if any("explained_variance" in m for m in models.values()):
        subset = result["split"].get("max_train_faces")
        rows.append((f"explained variance ({'train' if subset is None else f'first {subset} train faces'})",
                     "frac", lambda m: m.get("explained_variance")))
    if any("specificity" in m for m in models.values()):
        rows.append((f"specificity ({unit})", "length", lambda m: (m.get("specificity") or {}).get("mean")))
        rows.append(("  its standard error", "length", lambda m: (m.get("specificity") or {}).get("sem")))
    header = ["autoencoder" if n == "autoencoder" else "PCA" if n == "pca" else n for n in names]
    cells = [[label] + [_fmt(get(models[n]), kind) for n in names] for label, kind, get in rows]
    widths = [max(len(r[i]) for r in cells + [[""] + header]) for i in range(len(names) + 1)]
    title = (f"{split['kind']} split ({split['data_version']}): {split['num_train']} train / {split['num_test']} test "
             f"meshes, V = {result['num_vertices']}, latent size {result['latent_size']}")
    lines = [title, "  ".join([" " * widths[0]] + [h.rjust(w) for h, w in zip(header, widths[1:])])]
    lines += ["  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]) for r in cells]
    pca = models.get("pca", {})
    if "generalisation" in pca:
        curve = ", ".join(f"{k}: {_fmt(v, 'length')}" for k, v in pca["generalisation"].items())
        lines.append(f"PCA generalisation ({unit}) by components: {curve}")
    if pca.get("source"):
        lines += _source_lines(pca["source"], result)
    lines.append(f"parameters: {result['parameter_note']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- CLI
def add_evaluate_arguments(parser) -> None:
    """Arguments of ``mesh-decoder evaluate CHECKPOINT``."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a training output folder, its model.safetensors or its checkpoint.safetensors")
    parser.add_argument("--json", metavar="FILE.json", help="also write the result as JSON (a name ending in .json)")
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument("--no-pca", action="store_true", help="leave the PCA baseline out")
    baseline.add_argument("--pca", metavar="FILE", default=None,
                          help="the PCA baseline from this model file (written by mesh-decoder pca with the run's "
                               "config and at least the latent size's components) instead of one fitted now; "
                               "refused if the config it stores makes other training faces than the run's "
                               "(data source, template, split, seeds), measured with a note if it stores none")
    parser.add_argument("--measures", nargs="+", choices=MEASURES, default=list(MEASURES),
                        help="3DMM measures to compute (default: all)")
    parser.add_argument("--num-samples", "--n", type=int_argument(1), default=100,
                        help="random samples for specificity (default 100)")
    parser.add_argument("--batch-size", type=int_argument(1), default=64, help="meshes per forward pass (default 64)")
    parser.add_argument("--max-train-faces", type=int_argument(2), default=None,
                        help="training faces (at least 2) used for explained variance and compactness "
                             "(default: all)")
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    parser.add_argument("--seed", type=int_argument(0, MAX_SEED), default=0,
                        help="seed of the specificity samples (default 0)")


def run_evaluate(args) -> int:
    """Run ``mesh-decoder evaluate``: print the table, optionally write JSON. Returns the exit code."""
    if args.device is not None:
        check_device(args.device, "--device", option=True)
    if args.json:  # a JSON name: it had replaced the --pca file it read, and could replace a run's files
        check_output_path(args.json, "--json")
        check_suffix("--json", args.json, (".json",))
        check_not_an_input("--json", args.json, [("--pca", getattr(args, "pca", None)),
                                                 ("CHECKPOINT", args.checkpoint)])
    pca: bool | PCAFile = not args.no_pca
    if getattr(args, "pca", None) is not None:
        if args.no_pca:  # argparse refuses the two together; a Namespace made by hand may hold both
            raise UsageError("--pca: not allowed with --no-pca (give one: the PCA file, or no PCA baseline)")
        pca = load_pca_file(args.pca)  # checked against the run by evaluate
    result = evaluate(args.checkpoint, pca=pca, measures=args.measures, num_samples=args.num_samples,
                      batch_size=args.batch_size, seed=args.seed, max_train_faces=args.max_train_faces,
                      device=args.device)
    print(result["table"])
    if args.json:
        from .._atomic import write_json

        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
