r"""Training a mesh autoencoder: data, model, optimisation, checkpoints, the final model.

The method is that of COMA (Ranjan et al., "Generating 3D faces using
Convolutional Mesh Autoencoders", ECCV 2018) and SpiralNet++ (Gong et al.,
ICCVW 2019):

* every training mesh ``x (V, C)`` is standardised per vertex and channel with the
  training set's mean and standard deviation, :math:`\tilde x = (x - \mu) / \sigma`
  (stored in the decoder's ``mean``/``std`` buffers, so the saved model works in
  data units);
* the loss is the L1 distance in normalised units,

  .. math::
      \mathcal L = \frac{1}{B V 3} \sum_{b,v,c \le 3} |\hat{\tilde x}_{bvc} - \tilde x_{bvc}|
      \;+\; w_{col} \frac{1}{B V 3} \sum_{b,v,c > 3} |\hat{\tilde x}_{bvc} - \tilde x_{bvc}|

  (the second term only for joint shape + colour models, ``C = 6``);
* Adam, with the learning rate multiplied by ``lr_decay`` after every epoch
  (``"exponential"``) or every ``decay_step`` epochs (``"step"``);
* the data order comes from one seeded ``torch.Generator`` driving the
  ``DataLoader``'s sampler (``num_workers=0``), and the parameters are initialised
  from the same seed, so a run is deterministic.

Checkpoints (:mod:`mesh_decoder.train.checkpoint`) are written atomically after
every ``checkpoint_every`` epochs and on Ctrl-C or SIGTERM, and hold the generator state of
the current epoch, so ``train(..., resume=True)`` continues bit for bit. When
the last epoch is done, the Gaussian latent prior is fitted to the training
latents (:meth:`~mesh_decoder.nn.MeshAutoencoder.fit_latent_prior`) and the model
is written with :func:`mesh_decoder.model_files.save_model`.

Files in the output directory:

* ``checkpoint.safetensors``: the last checkpoint;
* ``config.yaml``: the configuration of the run;
* ``history.csv``: one row per epoch: the training loss, learning rate, time, and the
  test split's loss and mean vertex error (mm) after every ``validate_every`` epochs
  (:func:`held_out_measures`; evaluating in eval mode draws no random numbers, so it does
  not change the run);
* ``hierarchy.npz``: the mesh hierarchy (loads without openmesh);
* ``model.safetensors``: the trained :class:`~mesh_decoder.nn.MeshAutoencoder`; its
  ``extra_meta`` records the run (config, data, epochs, steps, ``train_seconds``, and the
  ``threads`` of the process that finished it, which history.csv's speeds ran on);
* ``decoder.safetensors``: its decoder alone (a :class:`~mesh_decoder.nn.JointDecoder`
  with the mesh texture branch for joint models built with a texel map). Its
  metadata holds the fitted latent prior, so the decoder alone samples faces:
  ``read_model_meta(path)["extra_meta"]["latent_prior"]`` is
  ``{"mean": (Z,), "cov_cholesky": (Z, Z)}`` as lists, and a sample is
  ``mean + L @ eps`` with ``eps ~ N(0, I)``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch
from torch.utils.data import DataLoader, TensorDataset

from .._atomic import atomic_write
from .._checks import check_device, check_int, check_output_path, int_argument, is_terminal
from ..errors import MeshError
from ..hierarchy.container import MeshHierarchy
from ..hierarchy.storage import BUILD_REVISION, hierarchy_digest
from ..mesh.container import Mesh
from ..model_files import hierarchy_signature
from ..nn.autoencoder import MeshAutoencoder
from ..nn.graph import AUTOCAST_DEVICES, _autocast_enabled
from .checkpoint import CheckpointError, check_training_meta, load_checkpoint, save_checkpoint
from .config import RESUMABLE_KEYS, TrainConfig, TrainConfigError, config_differences, load_config, save_config

__all__ = [
    "TrainingError",
    "TrainingData",
    "StepInfo",
    "TrainResult",
    "load_template",
    "load_data",
    "make_hierarchy",
    "build_autoencoder",
    "reconstruction_loss",
    "train",
    "CHECKPOINT_NAME",
    "MODEL_NAME",
    "DECODER_NAME",
    "HIERARCHY_NAME",
    "CONFIG_NAME",
    "HISTORY_NAME",
    "encode_all",
    "held_out_measures",
    "normalization",
    "load_trained",
    "add_train_arguments",
    "run_train",
]

CHECKPOINT_NAME = "checkpoint.safetensors"
MODEL_NAME = "model.safetensors"
DECODER_NAME = "decoder.safetensors"
HIERARCHY_NAME = "hierarchy.npz"
CONFIG_NAME = "config.yaml"
HISTORY_NAME = "history.csv"
#: The columns of ``history.csv``: an epoch that did not measure the test split leaves its test columns empty.
HISTORY_COLUMNS = ("epoch", "loss", "lr", "seconds", "meshes_per_s", "test_loss", "test_vertex_error",
                   "test_color_error")


class TrainingError(ValueError):
    """Training cannot go on (non-finite loss, a checkpoint that does not match, ...); names epoch and step."""


# ============================================================================ data
@dataclass
class TrainingData:
    """Training and test meshes as tensors, with their provenance.

    Attributes:
        train: ``(N, V, C)`` float32, ``C = 3`` (xyz, mm) or 6 (xyz + rgb in ``[0, 1]``).
        test: ``(M, V, C)`` float32 (``M`` may be 0).
        template: the :class:`Mesh` the meshes are registered to.
        meta: JSON-able: ``source``, ``data_version``, ``template_hash``, split sizes, and
            the ``data`` and ``template`` config sections they were made from.
    """

    train: torch.Tensor
    test: torch.Tensor
    template: Mesh
    meta: dict[str, Any]

    @property
    def channels(self) -> int:
        return int(self.train.shape[-1])


def _check_config_path(config: TrainConfig, key: str, path: str, folder: bool = False,
                       what: str = "mesh file") -> None:
    """Raise an ``OSError`` naming the config file and ``key`` when ``path`` is not a folder (``folder``) or a file.

    ``FileNotFoundError`` when nothing is there, ``IsADirectoryError`` for a folder where a file was
    expected, ``NotADirectoryError`` for a file where a folder was; the message says what was found.
    """
    if os.path.isdir(path) if folder else os.path.isfile(path):
        return
    if not os.path.exists(path):
        error, found = FileNotFoundError, "none at this path"
    elif os.path.isdir(path):
        error, found = IsADirectoryError, "a folder"
    else:  # a file where a folder was expected, or a device, pipe or socket
        error = NotADirectoryError if folder else OSError
        found = "a file" if os.path.isfile(path) else "a device, pipe or socket"
    raise error(f"{config.source or 'config'}: {key}: {path}: expected a {'folder' if folder else what}, "
                f"found {found} (a relative path is from the working folder {os.getcwd()})")


def load_template(config: TrainConfig) -> Mesh:
    """The template mesh of ``config.template`` (built-in face / head, or a mesh file).

    Raises:
        FileNotFoundError: a template file that is not there (``IsADirectoryError``: a folder), naming the
            config key.
    """
    t = config.template
    if t.kind == "file":
        from ..mesh.io import load_mesh

        _check_config_path(config, "template.path", t.path)
        return load_mesh(t.path)
    from ..mesh.templates import face_template, head_template

    return (face_template if t.kind == "face" else head_template)(t.vertices, seed=t.seed)


def _folder_version(x: torch.Tensor, files: list[str]) -> str:
    """The data version of folder meshes: a hash of the file names and of ``x`` ``(N, V, C)``, the
    values trained on (vertices, and colours for joint models)."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(os.path.basename(f).encode() + b"\0")
    digest.update(x.numpy().tobytes())
    return "mesh-folder-sha256:" + digest.hexdigest()[:16]


def load_data(config: TrainConfig | Mapping[str, Any], template: Mesh | None = None) -> TrainingData:
    """The train / test meshes that ``config.data`` describes.

    Synthetic faces come from :class:`~mesh_decoder.data.SyntheticFaceDataset` (COMA's
    interpolation or extrapolation split); a folder comes from
    :class:`~mesh_decoder.data.MeshFolderDataset` (every mesh must have the template's
    vertex count and faces, else :class:`~mesh_decoder.errors.MeshFileError` names
    the file and both counts) with a random interpolation split.

    Args:
        config: a :class:`TrainConfig` or its dict.
        template: the template; default ``None`` builds it with :func:`load_template`.

    Shapes:
        ``train (N, V, C)``, ``test (M, V, C)``, ``C = 6`` for joint models, else 3.
    """
    config = _as_config(config)
    d = config.data
    template = load_template(config) if template is None else template
    joint = config.model.joint
    if d.source == "synthetic":
        from ..data import GENERATOR_VERSION, SyntheticFaceDataset

        common = dict(n=d.n, seed=d.seed, kind=d.split, template=template, test_fraction=d.test_fraction,
                      key=d.key, threshold=d.threshold, generator_seed=d.generator_seed)
        parts = {}
        for split in ("train", "test"):
            ds = SyntheticFaceDataset(split=split, **common)
            x = torch.cat([ds.vertices, ds.colors], dim=-1) if joint else ds.vertices  # (N, V, C)
            parts[split] = x.contiguous()
        version = GENERATOR_VERSION
        extra: dict[str, Any] = {"generator_seed": d.generator_seed}
        if d.split == "extrapolation":
            held_out = f"data.key {d.key!r} > data.threshold {d.threshold} holds out {parts['test'].shape[0]}"
        else:
            held_out = f"data.test_fraction {d.test_fraction} holds out {parts['test'].shape[0]}"
        drawn = f"data.n = {d.n} synthetic faces; {held_out}"
    else:
        from ..data import MeshFolderDataset, interpolation_split

        _check_config_path(config, "data.root", d.root, folder=True)
        ds = MeshFolderDataset(d.root, template, align=d.align, pattern=d.pattern, scale=d.scale)
        if joint and not ds.has_colors:
            raise TrainingError(f"{d.root}: model.joint needs per-vertex colours in every mesh file, "
                                f"{ds.missing_colors()}")
        if joint:
            colors = torch.stack([ds[i]["colors"] for i in range(len(ds))])  # (N, V, 3)
            x = torch.cat([ds.vertices, colors], dim=-1)  # (N, V, 6)
        else:
            x = ds.vertices  # (N, V, 3)
        train_idx, test_idx = interpolation_split(len(ds), seed=d.seed, test_fraction=d.test_fraction)
        parts = {"train": x[torch.from_numpy(train_idx)].contiguous(), "test": x[torch.from_numpy(test_idx)].contiguous()}
        version = _folder_version(x, ds.files)  # the data used: vertices, and colours for joint models
        # the held-out files by name, relative to data.root: the run says which scans it never trained on
        extra = {"root": d.root, "num_files": len(ds.files),
                 "test_files": [os.path.relpath(ds.files[i], d.root) for i in test_idx]}
        drawn = (f"data.root {d.root} holds {len(ds.files)} mesh file{'s' if len(ds.files) != 1 else ''} matching "
                 f"data.pattern {d.pattern!r}; data.test_fraction {d.test_fraction} holds out {len(test_idx)}")
    if parts["train"].shape[0] < 2:
        raise TrainingError(f"{config.source or 'config'}: data: expected at least 2 training meshes, got "
                            f"{parts['train'].shape[0]} ({drawn})")
    meta = {
        "source": d.source,
        "split": d.split,
        "data_version": version,
        "template_hash": template.content_hash(),
        "num_vertices": template.num_vertices,
        "channels": int(parts["train"].shape[-1]),
        "num_train": int(parts["train"].shape[0]),
        "num_test": int(parts["test"].shape[0]),
        "data_config": config.to_dict()["data"],
        "template_config": config.to_dict()["template"],
        **extra,
    }
    return TrainingData(parts["train"], parts["test"], template, meta)


def normalization(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-vertex, per-channel mean and std (population, clamped to ``>= eps``) over the set, in float64.

    Shapes:
        ``(N, V, C) -> (V, C), (V, C)``
    """
    return _clamped(*_moments(x), eps)


def _clamped(mean: torch.Tensor, std: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`normalization` of float64 moments: ``std`` clamped to ``>= eps``, both as float32."""
    return mean.to(torch.float32), std.clamp_min(eps).to(torch.float32)


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-vertex, per-channel mean and population std of ``x (N, V, C)`` in float64, ``(V, C)`` each."""
    x64 = x.to(torch.float64)
    return x64.mean(dim=0), x64.std(dim=0, unbiased=False)


#: Share of the per-vertex coordinate stds below ``data.norm_eps`` past which training warns (the built-in
#: faces, in mm, have about 0.02%; the same faces in metres over 15%).
NORM_FLOOR_WARN_SHARE = 0.01


def _warn_if_floor_dominates(std: torch.Tensor, eps: float) -> None:
    """Warn when ``data.norm_eps`` floors many of the per-vertex coordinate stds ``std (V, 3)``: it is in the
    data's units, so faces in metres are standardised by the floor rather than by their spread, silently."""
    share = float((std < eps).double().mean())
    if share > NORM_FLOOR_WARN_SHARE:
        warnings.warn(
            f"data.norm_eps {eps:g} (in the data's units) is above the per-vertex std of {share:.1%} of the "
            f"training coordinates (median std {float(std.median()):.3g}), which are standardised by it instead; "
            f"are the meshes in metres? Set data.norm_eps well below that median to standardise them as the rest",
            stacklevel=3,
        )


def _check_data(data: TrainingData, config: TrainConfig) -> None:
    want = config.to_dict()
    for key, section in (("data_config", "data"), ("template_config", "template")):
        if data.meta.get(key) != want[section]:
            raise TrainingError(f"data: the given TrainingData was made for a different {section!r} section "
                                f"({data.meta.get(key)}) than the config's ({want[section]}); use load_data(config)")
    if data.channels != config.in_channels:
        raise TrainingError(f"data: expected {config.in_channels} channels per vertex, got {data.channels}")


def check_trained_on(meta: Mapping[str, Any], data: TrainingData, path: str) -> None:
    """Raise :class:`TrainingError` unless ``data`` is what the run saved in ``path`` (its
    checkpoint or model file, JSON ``meta``) was trained on: the same data version and template."""
    for key in ("data_version", "template_hash"):
        if meta.get(key) != data.meta[key]:
            hint = ""
            if key == "data_version" and data.meta.get("source") == "folder":
                then = (meta.get("data") or {}).get("num_files")
                files = f"{then} mesh files then, {data.meta.get('num_files')} now" if isinstance(then, int) else \
                    f"{data.meta.get('num_files')} mesh files now"
                hint = (f" (the meshes in data.root {data.meta.get('root')} changed since training: {files}; "
                        "restore them or train again)")
            raise TrainingError(f"{path}: trained on {key} {meta.get(key)!r}, the data now has {data.meta[key]!r}"
                                + hint)


def _template_words(config: TrainConfig) -> str:
    """The config's template as its errors name it: ``template.path FILE`` or ``the built-in face template``."""
    t = config.template
    return f"template.path {t.path}" if t.kind == "file" else f"the built-in {t.kind} template"


def check_trained_template(meta: Mapping[str, Any], config: TrainConfig, template: Mesh, path: str) -> None:
    """Raise :class:`TrainingError` unless ``template`` (from ``config``) is the one the run saved in ``path``
    was trained on; checked before the meshes are read, whose errors would name a scan, not the template."""
    now = template.content_hash()
    if meta.get("template_hash") != now:
        source = _template_words(config)
        raise TrainingError(f"{path}: trained on template_hash {meta.get('template_hash')!r}, {source} now has "
                            f"{now!r} ({template.num_vertices} vertices): the template changed since training")


# ======================================================================= model
def make_hierarchy(config: TrainConfig, template: Mesh, revision: int = BUILD_REVISION) -> MeshHierarchy:
    """:func:`~mesh_decoder.hierarchy.build_hierarchy` with the config's parameters (cached per ``hierarchy.cache_dir``),
    of build ``revision`` (default the current one).

    Raises:
        TrainConfigError: the template cannot take the hierarchy (factors too deep for its size, a vertex
            in no face, ...), naming the config file, the key and the template.
    """
    from ..errors import HierarchyError, MeshValidationError, UVOverlapError
    from ..hierarchy import build_hierarchy
    from ..hierarchy.decimate import level_sizes
    from .config import _error

    h = config.hierarchy
    cache = h.cache_dir
    source = f"{_template_words(config)} ({template.num_vertices} vertices)"
    if h.path is not None:
        return _saved_hierarchy(config, template, source)
    if h.factors is None:  # say where factors the file does not hold come from
        origin = f" (from model.preset {config.model.preset!r})" if config.model.preset else " (the default)"
    else:
        origin = ""
    try:  # errors named factors (4, 4, 4, 4) and a vertex, not the config key or the template file
        level_sizes(template.num_vertices, tuple(config.factors))
    except HierarchyError as exc:
        raise _error(config.source, "hierarchy.factors", f"{_factors_text(config.factors)}{origin} on {source}: "
                                                         f"{exc}") from None
    try:
        return build_hierarchy(
            template,
            factors=config.factors,
            spiral_lengths=h.spiral_length if isinstance(h.spiral_length, int) else tuple(h.spiral_length),
            dilations=h.dilation if isinstance(h.dilation, int) else tuple(h.dilation),
            texture_size=config.texture_size,
            cache_dir=(True if cache is True else None) if isinstance(cache, bool) else cache,
            allow_uv_overlap=h.allow_uv_overlap,
            revision=revision,
        )
    except UVOverlapError as exc:
        raise _error(config.source, "hierarchy", f"{source}: {exc.problem}; fix the UVs, set "
                     "hierarchy.allow_uv_overlap: true (the lowest face colours a shared texel) or build no texel "
                     "map: hierarchy.texture_size: 0") from None
    except (HierarchyError, MeshValidationError) as exc:
        raise _error(config.source, None, f"the hierarchy of {source}: {exc}") from None


def _saved_hierarchy(config: TrainConfig, template: Mesh, source: str) -> MeshHierarchy:
    """``hierarchy.path``'s hierarchy, checked against the config's template and ``hierarchy.factors``."""
    from ..errors import HierarchyError
    from ..hierarchy import load_hierarchy
    from ..hierarchy.decimate import level_sizes
    from .config import _error

    path = config.hierarchy.path
    _check_config_path(config, "hierarchy.path", path, what="saved hierarchy (.npz)")
    try:
        hierarchy = load_hierarchy(path, expected_template_hash=template)
    except HierarchyError as exc:  # its own message names the file and the template hashes
        raise _error(config.source, "hierarchy.path", f"{exc} (the config's template: {source})") from None
    factors, built = list(config.factors), hierarchy.meta.get("factors")
    sizes = hierarchy.sizes
    if hierarchy.num_levels != len(factors) + 1 or (built is not None and list(built) != factors):
        raise _error(config.source, "hierarchy.factors",
                     f"{_factors_text(factors)}: expected the factors {path} was built with, found a hierarchy of "
                     f"{hierarchy.num_levels} levels (sizes {sizes}"
                     + (f", factors {_factors_text(built)})" if built is not None else ")"))
    given = level_sizes(sizes[0], tuple(factors)) if built is None else sizes
    if given != sizes:  # assembled elsewhere (its meta holds no factors): its sizes say
        # each ratio rounded up at the 4th digit, which still gives its level (rounded down it gave one more)
        ratios = [math.ceil(sizes[l] / sizes[l + 1] * 1e3) / 1e3 for l in range(len(sizes) - 1)]
        raise _error(config.source, "hierarchy.factors",
                     f"{_factors_text(factors)}: expected factors that give {path}'s level sizes {sizes} "
                     f"(V_l+1 = ceil(V_l / factor_l)), got ones that give {given}; "
                     f"factors {_factors_text(ratios)} give them")
    return hierarchy


def _factors_text(factors) -> str:
    """``[4, 4, 2.5]``: factors as a config writes them (not ``[4.0, 4.0, 2.5]``)."""
    return "[" + ", ".join(f"{float(f):g}" for f in factors) + "]"


def build_autoencoder(config: TrainConfig, hierarchy: MeshHierarchy) -> MeshAutoencoder:
    """The config's autoencoder on ``hierarchy`` (parameters from the current torch RNG).

    The decoder is a :class:`~mesh_decoder.nn.SpiralDecoder`, :class:`~mesh_decoder.nn.ChebDecoder`
    or :class:`~mesh_decoder.nn.PyGDecoder`; the encoder a :class:`~mesh_decoder.nn.SpiralEncoder`,
    :class:`~mesh_decoder.nn.ChebEncoder` or :class:`~mesh_decoder.nn.PyGEncoder` with the same channels and
    latent size (the PyG ones both with ``model.conv``, ``model.conv_kwargs`` and ``model.pseudo``).
    Joint models have 6 channels (xyz + rgb) in and out.

    Raises:
        TrainConfigError: a ``model.conv`` that is no ``torch_geometric.nn`` class, or ``model.conv_kwargs``
            it does not take (names both keys and the config file).
    """
    from ..nn import ChebDecoder, ChebEncoder, PyGDecoder, PyGEncoder, SpiralDecoder, SpiralEncoder

    config = _as_config(config)
    common = dict(latent_size=config.latent_size, channels=tuple(config.channels), activation=config.model.activation)
    C = config.in_channels
    m = config.model

    def pyg(cls, **kwargs):
        try:
            return cls.from_hierarchy(hierarchy, conv=m.conv, conv_kwargs=m.conv_kwargs, pseudo=m.pseudo, **kwargs,
                                      **common)
        except (TypeError, ValueError) as exc:  # a misspelt class or an argument it does not take
            pseudo = f", model.pseudo {m.pseudo!r}" if m.pseudo is not None else ""
            raise TrainConfigError(f"{config.source or 'config'}: model.conv {m.conv!r}, model.conv_kwargs "
                                   f"{m.conv_kwargs}{pseudo}: {exc}") from None

    kind = config.decoder_kind
    if kind == "spiral":
        decoder = SpiralDecoder.from_hierarchy(hierarchy, out_channels=C, **common)
    elif kind == "cheb":
        decoder = ChebDecoder.from_hierarchy(hierarchy, K=config.K, out_channels=C, **common)
    else:
        decoder = pyg(PyGDecoder, out_channels=C)
    if config.encoder_kind == "spiral":
        encoder = SpiralEncoder.from_hierarchy(hierarchy, in_channels=C, **common)
    elif config.encoder_kind == "cheb":
        encoder = ChebEncoder.from_hierarchy(hierarchy, K=config.K, in_channels=C, **common)
    else:
        encoder = pyg(PyGEncoder, in_channels=C)
    return MeshAutoencoder(encoder, decoder)


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, color_weight: float = 1.0) -> torch.Tensor:
    """L1 loss in normalised units: shape channels, plus ``color_weight`` times the colour channels.

    Args:
        pred: ``(B, V, C)`` normalised decoder output.
        target: ``(B, V, C)`` normalised meshes.
        color_weight: weight of channels ``3:`` (joint models). Default ``1.0``.

    Shapes:
        ``(B, V, C), (B, V, C) -> ()``
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred: expected the target's shape {tuple(target.shape)}, got {tuple(pred.shape)}")
    loss = (pred[..., :3] - target[..., :3]).abs().mean()
    if pred.shape[-1] > 3:
        loss = loss + color_weight * (pred[..., 3:] - target[..., 3:]).abs().mean()
    return loss


# ====================================================================== results
@dataclass
class StepInfo:
    """What a step callback sees after every optimizer step.

    Attributes:
        epoch: the epoch in progress (1-based).
        step: optimizer steps done so far (all epochs).
        batch: batches done in this epoch.
        batches: batches per epoch.
        loss: this batch's loss.
        running_loss: mean loss of the epoch so far.
        lr: the learning rate of this epoch.
        model: the autoencoder being trained.
    """

    epoch: int
    step: int
    batch: int
    batches: int
    loss: float
    running_loss: float
    lr: float
    model: MeshAutoencoder


@dataclass
class TrainResult:
    """The outcome of :func:`train`.

    Attributes:
        model: the trained :class:`~mesh_decoder.nn.MeshAutoencoder` (eval mode, prior fitted
            unless ``interrupted``).
        hierarchy: its :class:`~mesh_decoder.hierarchy.MeshHierarchy`.
        config: the :class:`TrainConfig`.
        output_dir: the run's folder.
        checkpoint_path: the last checkpoint.
        model_path: ``model.safetensors``, or ``None`` if interrupted.
        decoder_path: ``decoder.safetensors``, or ``None`` if interrupted.
        epochs_completed: full epochs trained.
        step: optimizer steps done.
        history: one dict per epoch: ``epoch``, ``loss`` (the epoch's mean training loss), ``lr``,
            ``seconds``, ``meshes_per_s``, and on the epochs that measure the test split
            (``training.validate_every``) the :func:`held_out_measures`: ``test_loss``,
            ``test_vertex_error`` and, for joint models, ``test_color_error``. The run folder's
            ``history.csv`` holds the same rows.
        interrupted: ``True`` when Ctrl-C or SIGTERM (or a callback raising ``KeyboardInterrupt``) stopped
            the run.
        train_seconds: wall time of all epochs (all sessions), without checkpoint saving.
        data_meta: provenance of the training data.
        up_to_date: ``True`` when a resumed run had already completed its epochs and written its
            model: nothing was trained or written, the result is read from the run's files.
    """

    model: MeshAutoencoder
    hierarchy: MeshHierarchy
    config: TrainConfig
    output_dir: str
    checkpoint_path: str
    model_path: str | None
    decoder_path: str | None
    epochs_completed: int
    step: int
    history: list[dict[str, Any]]
    interrupted: bool
    train_seconds: float
    data_meta: dict[str, Any] = field(default_factory=dict)
    up_to_date: bool = False

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None


# ================================================================= Ctrl-C
class _StopFlag:
    """SIGINT (Ctrl-C) or SIGTERM (what batch schedulers send before they kill a job) sets a flag read at
    the next step boundary, so a checkpoint never holds a half-done step; a second Ctrl-C raises
    ``KeyboardInterrupt`` at once, a second SIGTERM changes nothing (schedulers may send it twice).

    Each handler is installed only in the main thread and over the default disposition (Python's
    ``default_int_handler`` for SIGINT, ``SIG_DFL`` for SIGTERM): a caller's own handler is kept."""

    _DEFAULTS = ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL))

    def __init__(self) -> None:
        self.requested = False

    def _handler(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True  # a repeated SIGTERM (a scheduler signalling the group, then the process) waits

    @contextlib.contextmanager
    def installed(self) -> Iterator["_StopFlag"]:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum, default in self._DEFAULTS:
                if signal.getsignal(signum) is default:
                    previous[signum] = signal.signal(signum, self._handler)
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


# ======================================================================== train
def _as_config(config) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, Mapping):
        return TrainConfig.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    raise TypeError(f"config: expected a TrainConfig, a dict or a config file path, got {type(config).__name__}")


def _resolved(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's config dict with its null keys resolved (:meth:`TrainConfig.resolved_dict`); as
    stored if it no longer validates."""
    try:
        return TrainConfig.from_dict(saved).resolved_dict()
    except (TrainConfigError, TypeError, ValueError):
        return dict(saved)


def _make_optimizer(config: TrainConfig, model: torch.nn.Module):
    t = config.training
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    if t.lr_schedule == "exponential":
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=t.lr_decay)
    elif t.lr_schedule == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=t.decay_step, gamma=t.lr_decay)
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=1.0)
    return optimizer, scheduler


def _nonfinite_parameter(model: torch.nn.Module) -> str | None:
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            return name
    return None


@torch.no_grad()
def held_out_measures(model: MeshAutoencoder, test: torch.Tensor, color_weight: float = 1.0,
                  batch_size: int = 64) -> dict[str, float]:
    """The held-out meshes' measures after an epoch, in eval mode (the model's mode is restored).

    ``test_loss`` is :func:`reconstruction_loss` (normalised units, the training loss);
    ``test_vertex_error`` the mean per-vertex Euclidean error in data units (mm), as
    :func:`~mesh_decoder.train.evaluate` reports it; joint models add ``test_color_error``,
    the mean Euclidean RGB distance. Each is the mean over all meshes (and vertices).

    Shapes:
        ``test (M, V, C)`` with ``M >= 1``, on any device (moved in batches to the model's).
    """
    M = int(test.shape[0])
    if M == 0:
        raise ValueError("test: expected at least one held-out mesh, got none")
    was_training = model.training
    model.eval()
    device = model.mean.device
    loss_sum, vertex_sum, color_sum = 0.0, 0.0, 0.0
    try:
        for i in range(0, M, batch_size):
            x = test[i:i + batch_size].to(device)  # (b, V, C)
            target = (x - model.mean) / model.std  # (b, V, C) normalised
            pred = model.decoder.decode_normalized(model.encode(x))  # (b, V, C) normalised
            loss_sum += float(reconstruction_loss(pred, target, color_weight)) * x.shape[0]
            recon = pred * model.std + model.mean  # (b, V, C) data units
            err = torch.linalg.vector_norm((recon - x).double().unflatten(-1, (-1, 3)), dim=-1)  # (b, V, C // 3)
            per_mesh = err.mean(dim=1)  # (b, C // 3): shape, then colour
            vertex_sum += float(per_mesh[:, 0].sum())
            if per_mesh.shape[1] > 1:
                color_sum += float(per_mesh[:, 1].sum())
    finally:
        model.train(was_training)
    out = {"test_loss": loss_sum / M, "test_vertex_error": vertex_sum / M}
    if test.shape[-1] == 6:
        out["test_color_error"] = color_sum / M
    return out


@torch.no_grad()
def encode_all(model: MeshAutoencoder, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Latents ``(N, Z)`` of meshes ``(N, V, C)`` in data units, in batches, in eval mode (see
    :func:`in_model_batches`)."""
    check_int(batch_size, "batch_size", 1)
    was_training = model.training
    model.eval()
    try:
        return in_model_batches(model.encode, model, x, batch_size)  # (N, Z)
    finally:
        model.train(was_training)


def in_model_batches(fn: Callable[[torch.Tensor], torch.Tensor], model: MeshAutoencoder, x: torch.Tensor,
                     batch_size: int) -> torch.Tensor:
    """``fn`` over ``x`` a batch at a time: each batch goes in ``model``'s device and dtype (a bf16 model's
    too), and the results come back concatenated on the CPU in ``x``'s dtype.

    Shapes: ``x (N, ...) -> (N, ...)``, as ``fn`` gives per batch."""
    weight = model.decoder.fc.weight
    return torch.cat([fn(x[i:i + batch_size].to(device=weight.device, dtype=weight.dtype)).to("cpu", x.dtype)
                      for i in range(0, x.shape[0], batch_size)])


def train(
    config: TrainConfig | Mapping[str, Any] | str | os.PathLike,
    output_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    *,
    data: TrainingData | None = None,
    callback: Callable[[StepInfo], None] | None = None,
) -> TrainResult:
    """Train a mesh autoencoder (see the module docstring for the method and the files).

    Args:
        config: a :class:`TrainConfig`, its dict, or a YAML / JSON file.
        output_dir: the run's folder (created).
        resume: continue from ``output_dir/checkpoint.safetensors``. Only the keys of
            :data:`~mesh_decoder.train.config.RESUMABLE_KEYS` (``training.epochs``,
            ``training.checkpoint_every``, ``training.validate_every``,
            ``training.device`` and ``hierarchy.cache_dir``) may differ from the
            checkpoint's config, and
            ``training.epochs`` may not be below the epochs the checkpoint has trained. A run
            that already has ``training.epochs`` epochs and its model files is left as it is
            (``up_to_date=True``). Default ``False``; without it, a folder that already holds a
            checkpoint is refused.
        progress: show a tqdm bar (epoch, running loss, meshes/s). Default ``True``.
        data: the meshes, if already loaded with :func:`load_data` for this config
            (avoids generating them again). Default ``None``: loaded here.
        callback: called with a :class:`StepInfo` after every optimizer step; raising
            ``KeyboardInterrupt`` from it stops the run as Ctrl-C does. Any other exception it
            raises is raised by ``train`` after a checkpoint of that step is saved (its note
            says so), so ``resume=True`` loses nothing.

    Returns:
        A :class:`TrainResult`. When interrupted (Ctrl-C, or SIGTERM as a batch scheduler sends
        before it kills a job), a checkpoint of the last finished step is saved and the result has
        ``interrupted=True``; run again with ``resume=True`` to continue.

    Raises:
        TrainConfigError: an invalid config.
        TrainingError: a non-finite loss or parameters (names epoch and step; the last
            good checkpoint is kept), or a checkpoint that does not match the config.
        MeshFileError: a folder mesh that does not match the template.
        ValueError: ``output_dir`` is a file or cannot be created, or ``training.device`` is not
            available here.
    """
    config = _as_config(config)
    out = check_output_path(output_dir, "output_dir", directory=True)
    check_device(config.training.device, f"{config.source}: training.device" if config.source else "training.device")
    with contextlib.ExitStack() as stack:
        # Under a caller's autocast the optimiser's in-place steps went unseen by autocast's cast cache: the
        # forward kept the first step's weights and the loss never moved. train runs in the model's dtype.
        active = [kind for kind in AUTOCAST_DEVICES if _autocast_enabled(kind)]
        if active:
            warnings.warn(f"train: torch.autocast ({', '.join(active)}) is switched off inside train, which trains "
                          "in the model's dtype (under autocast its optimiser steps are not seen by the forward)",
                          RuntimeWarning, stacklevel=2)
            for kind in active:
                stack.enter_context(torch.autocast(kind, enabled=False))
        with _run_lock(out):  # the folder checks below and the writes after them, one train at a time
            return _train(config, out, resume, progress, data, callback)


#: The lock file a running ``train`` holds in its folder (removed when it ends).
LOCK_NAME = ".train.lock"


@contextlib.contextmanager
def _run_lock(out: str) -> Iterator[None]:
    """An exclusive lock on ``out/.train.lock`` for the whole run, so two ``train`` calls into one folder
    cannot both pass its checks and overwrite each other's files (without ``fcntl``, as on Windows, or on a
    file system without ``flock``, none: the latter with a warning).

    A folder created here only to hold the lock is removed again if the run leaves it empty."""
    created = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, LOCK_NAME)
    fd = _lock(out, path)
    try:
        if fd is not None:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode("ascii"))
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
            os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                if not os.listdir(out):
                    os.rmdir(out)


def _lock(out: str, path: str) -> int | None:
    """A descriptor of ``path`` holding an exclusive ``flock``, or ``None`` where locks are not available."""
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): run unlocked, as on a file system without flock
        warnings.warn(f"{out}: this platform has no fcntl to lock the run folder; another train into it at the "
                      "same time would not be refused", RuntimeWarning, stacklevel=5)
        return None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise TrainingError(f"{out}: another train is running in this folder"
                                f"{f' (process {holder})' if holder.isdigit() else ''}; wait for it to end, or "
                                "choose another folder; nothing was changed") from None
        except OSError as exc:  # a file system without flock (some network mounts): run unlocked
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            warnings.warn(f"{out}: this file system cannot lock the run folder ({exc.strerror}); another train "
                          "into it at the same time would not be refused", RuntimeWarning, stacklevel=5)
            return None
        try:  # the file may have been removed by the holder that just ended: lock the one at the path
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _train(config: TrainConfig, out: str, resume: bool, progress: bool, data: TrainingData | None,
           callback: Callable[[StepInfo], None] | None) -> TrainResult:
    ckpt_path = os.path.join(out, CHECKPOINT_NAME)
    checkpoint = None
    if resume:
        if not os.path.isfile(ckpt_path):
            raise TrainingError(f"{ckpt_path}: no checkpoint to resume from")
        checkpoint = load_checkpoint(ckpt_path)
        check_training_meta(ckpt_path, checkpoint.meta)
        before, now = _resolved(checkpoint.meta["config"]), config.resolved_dict()
        diff = [k for k in config_differences(before, now) if k not in RESUMABLE_KEYS]
        if diff:
            values = "; ".join(f"{key}: {_config_value(before, key)} in the checkpoint, {_config_value(now, key)} "
                               "now" for key in diff)
            raise TrainingError(f"{ckpt_path}: the config differs from the checkpoint's in {diff} ({values}); only "
                                f"{sorted(RESUMABLE_KEYS)} may change on resume")
        done, in_epoch = checkpoint.meta["epoch"], checkpoint.meta["batch_in_epoch"]  # checked ints
        if config.training.epochs < done + (in_epoch > 0):
            trained = _epochs(done) + (f" and {in_epoch} batches of epoch {done + 1}" if in_epoch else "")
            raise TrainingError(f"{ckpt_path}: training.epochs: expected at least {done + (in_epoch > 0)} (the "
                                f"checkpoint has trained {trained}), got {config.training.epochs}; nothing was "
                                "changed")
        if config.training.epochs == done and _model_files_match(out, checkpoint.meta):
            return _saved_result(out, checkpoint.meta, config.training.device)
    elif os.path.exists(ckpt_path):
        raise TrainingError(f"{ckpt_path}: the output folder already holds a checkpoint; resume it "
                            "(--resume; resume=True from Python) or choose another folder")
    else:
        taken = _files_in_the_way(out, config)
        if taken:
            raise TrainingError(f"{out}: expected a new or empty run folder, found {', '.join(taken)} without a "
                                f"checkpoint; a new run would replace them: choose another folder or move them; "
                                "nothing was changed")

    if data is None:
        data = load_data(config)
    else:
        _check_data(data, config)
    if checkpoint is not None:
        check_trained_on(checkpoint.meta, data, ckpt_path)
    hierarchy = make_hierarchy(config, data.template)
    digest = hierarchy_digest(hierarchy)  # hashes every operator: once, for the check and the checkpoints
    if checkpoint is not None:
        saved = checkpoint.meta.get("hierarchy_digest")
        hierarchy, digest = _as_started(config, data.template, hierarchy, digest, saved)
    t = config.training
    device = torch.device(t.device)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)
        model = build_autoencoder(config, hierarchy)
    mean, std = _moments(data.train)  # one float64 pass over the training set (gigabytes at COMA's size)
    _warn_if_floor_dominates(std[..., :3], config.data.norm_eps)
    if data.test.shape[0] == 0:  # said before training, not only in its last line (evaluate refuses the run)
        warnings.warn(f"{config.source or 'config'}: data: the {config.data.split} split holds out none of the "
                      f"{data.train.shape[0]} meshes: the run will have no held-out measures, and evaluate will "
                      "refuse it (hold some out: data.test_fraction, or data.threshold for an extrapolation split)",
                      stacklevel=2)
    model.set_normalization(*_clamped(mean, std, config.data.norm_eps))
    model.to(device)
    optimizer, scheduler = _make_optimizer(config, model)
    sampler_rng = torch.Generator().manual_seed(t.seed)

    epoch, step, batch_done = 0, 0, 0
    history: list[dict[str, Any]] = []
    partial = {"loss_sum": 0.0, "count": 0, "seconds": 0.0}
    epoch_start_state = sampler_rng.get_state()
    if checkpoint is not None:
        if checkpoint.meta.get("hierarchy_signature") != hierarchy_signature(hierarchy):
            raise TrainingError(f"{ckpt_path}: checkpoint built on a hierarchy with "
                                f"{checkpoint.meta.get('hierarchy_signature')}, the config now builds "
                                f"{hierarchy_signature(hierarchy)}")
        saved_digest = checkpoint.meta.get("hierarchy_digest")  # absent from checkpoints of earlier versions
        if saved_digest is not None and saved_digest != digest:
            source = (f"hierarchy.path {config.hierarchy.path} holds" if config.hierarchy.path is not None
                      else "the config now builds")
            raise TrainingError(f"{ckpt_path}: checkpoint trained on other hierarchy operators than {source} (same "
                                "sizes, other spirals, Laplacians, sampling or texel map); resume with the "
                                "hierarchy the run started on, or start a new run")
        checkpoint.restore(model, optimizer, scheduler)
        m = checkpoint.meta
        epoch, step, batch_done = int(m["epoch"]), int(m["step"]), int(m["batch_in_epoch"])
        history = list(m.get("history", []))
        partial = dict(m.get("partial") or partial)
        epoch_start_state = checkpoint.rng_states["sampler"]
        sampler_rng.set_state(epoch_start_state)

    os.makedirs(out, exist_ok=True)
    save_config(config, os.path.join(out, CONFIG_NAME))
    base_meta = {
        "config": config.to_dict(),
        "data_version": data.meta["data_version"],
        "template_hash": data.meta["template_hash"],
        **_recorded_paths(config),
        "hierarchy_signature": hierarchy_signature(hierarchy),
        "hierarchy_digest": digest,
        "data": {k: v for k, v in data.meta.items() if k not in ("data_config", "template_config")},
        "model_config": model.config(),
    }
    last_saved = {"epoch": epoch, "step": step} if checkpoint is not None else None

    def save(rng_state: torch.Tensor, batch_in_epoch: int, status: str) -> None:
        nonlocal last_saved
        bad = _nonfinite_parameter(model)
        if bad is not None:
            raise TrainingError(_nonfinite_message(f"non-finite parameter {bad!r}", epoch + 1, step, ckpt_path,
                                                   last_saved, optimizer))
        meta = dict(base_meta, epoch=epoch, step=step, batch_in_epoch=batch_in_epoch, status=status,
                    history=history, partial=partial, lr=optimizer.param_groups[0]["lr"])
        save_checkpoint(ckpt_path, model, optimizer, scheduler, rng_states={"sampler": rng_state}, meta=meta)
        write_history(os.path.join(out, HISTORY_NAME), history)
        last_saved = {"epoch": epoch, "step": step}

    loader = DataLoader(TensorDataset(data.train), batch_size=t.batch_size, shuffle=True,
                        generator=sampler_rng, num_workers=0, drop_last=False)
    batches = len(loader)
    stop = _StopFlag()
    interrupted = False
    callback_error: tuple[Exception, int, int] | None = None  # (the callback's exception, epoch, step)
    bar = _progress_bar(progress, total=t.epochs * batches, initial=min(step, t.epochs * batches))
    model.train()
    try:
        with stop.installed():
            while epoch < t.epochs:
                lr = optimizer.param_groups[0]["lr"]
                sampler_rng.set_state(epoch_start_state)
                batch_iter = itertools.islice(iter(loader), batch_done, None)  # skip the batches done before a stop
                tick = time.perf_counter()
                for (x,) in batch_iter:
                    x = x.to(device)  # (B, V, C)
                    target = (x - model.mean) / model.std  # (B, V, C) normalised
                    pred = model.decoder.decode_normalized(model.encode(x))  # (B, V, C) normalised
                    loss = reconstruction_loss(pred, target, t.color_weight)
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise TrainingError(_nonfinite_message(f"non-finite loss ({value})", epoch + 1, step + 1,
                                                               ckpt_path, last_saved, optimizer,
                                                               batch=(batch_done + 1, batches)))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    step += 1
                    batch_done += 1
                    partial["loss_sum"] += value * x.shape[0]
                    partial["count"] += x.shape[0]
                    now = time.perf_counter()
                    partial["seconds"] += now - tick
                    tick = now
                    running = partial["loss_sum"] / partial["count"]
                    rate = partial["count"] / max(partial["seconds"], 1e-9)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix_str(_bar_text(epoch + 1, t.epochs, running, rate, history), refresh=False)
                    if callback is not None:
                        try:
                            callback(StepInfo(epoch + 1, step, batch_done, batches, value, running, lr, model))
                        except KeyboardInterrupt:
                            stop.requested = True
                        except Exception as exc:  # saved below as Ctrl-C is, then raised: no step is lost
                            callback_error = (exc, epoch + 1, step)
                            stop.requested = True
                    if stop.requested:
                        break
                if stop.requested and batch_done < batches:
                    save(epoch_start_state, batch_done, "interrupted")
                    interrupted = True
                    break
                # Stopped after the last batch: end the iteration as a full epoch does, since the
                # sampler's generator draws once more on reaching the end when the batches divide
                # the data; the next epoch then starts from the same generator state either way.
                next(batch_iter, None)
                # the epoch is complete
                history.append({
                    "epoch": epoch + 1,
                    "loss": partial["loss_sum"] / max(partial["count"], 1),
                    "lr": lr,
                    "seconds": partial["seconds"],
                    "meshes_per_s": partial["count"] / max(partial["seconds"], 1e-9),
                })
                if _validates(t, epoch + 1, data.test.shape[0]):  # no RNG drawn, weights untouched
                    measures = held_out_measures(model, data.test, t.color_weight, t.batch_size)
                    bad = [f"{k} {v}" for k, v in measures.items() if not math.isfinite(v)]
                    if bad:  # finite weights whose test outputs overflow: diverged as a non-finite loss is
                        raise TrainingError(_nonfinite_message(f"non-finite {', '.join(bad)} on the held-out faces",
                                                               epoch + 1, step, ckpt_path, last_saved, optimizer))
                    history[-1].update(measures)
                    if bar is not None:
                        h = history[-1]
                        bar.set_postfix_str(_bar_text(h["epoch"], t.epochs, h["loss"], h["meshes_per_s"], history),
                                            refresh=False)
                scheduler.step()
                epoch += 1
                batch_done = 0
                partial = {"loss_sum": 0.0, "count": 0, "seconds": 0.0}
                epoch_start_state = sampler_rng.get_state()
                if epoch % t.checkpoint_every == 0 or epoch == t.epochs or stop.requested:
                    save(epoch_start_state, 0, "interrupted" if stop.requested and epoch < t.epochs else "epoch")
                if stop.requested:
                    interrupted = epoch < t.epochs
                    break
    finally:
        if bar is not None:
            bar.close()
    if callback_error is not None:
        exc, at_epoch, at_step = callback_error
        if hasattr(exc, "add_note"):  # Python >= 3.11
            exc.add_note(f"train(): the step callback raised at epoch {at_epoch}, step {at_step}; the checkpoint "
                         f"{ckpt_path} holds the run up to that step: continue with resume=True (--resume)")
        raise exc

    train_seconds = sum(h["seconds"] for h in history) + partial["seconds"]
    result = TrainResult(model=model, hierarchy=hierarchy, config=config, output_dir=out, checkpoint_path=ckpt_path,
                         model_path=None, decoder_path=None, epochs_completed=epoch, step=step, history=history,
                         interrupted=interrupted, train_seconds=train_seconds, data_meta=dict(base_meta["data"]))
    if interrupted:
        model.eval()
        return result
    if last_saved is None or last_saved["step"] != step:  # a resumed run that had nothing left to do
        save(epoch_start_state, 0, "epoch")
    _finish(result, data, base_meta)
    return result


def write_history(path: str | os.PathLike, history: list[Mapping[str, Any]]) -> None:
    """Write the per-epoch history as CSV (:data:`HISTORY_COLUMNS`, one row per epoch), atomically.

    Values are written with ``repr`` (round-trips floats exactly); a measure an epoch lacks is an
    empty field, so ``pandas.read_csv`` gives ``NaN`` there.
    """
    with atomic_write(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HISTORY_COLUMNS)
        for row in history:
            writer.writerow(["" if row.get(k) is None else repr(row[k]) for k in HISTORY_COLUMNS])


def _last_test(history: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The history row of the last epoch that measured the test split, or ``None``."""
    return next((h for h in reversed(history) if "test_loss" in h), None)


def _bar_text(epoch: int, epochs: int, loss: float, rate: float, history: list[Mapping[str, Any]]) -> str:
    """The progress bar's note: the epoch's running loss and speed, then the last test measurement."""
    text = f"epoch {epoch}/{epochs} loss {loss:.4f} {rate:.1f} meshes/s"
    last = _last_test(history)
    if last is None:
        return text
    return (f"{text} | test loss {last['test_loss']:.4f}, mean vertex error {last['test_vertex_error']:.3g} "
            f"(data units; epoch {last['epoch']})")


def _validates(t, epoch: int, num_test: int) -> bool:
    """Whether the test split is measured after ``epoch`` (1-based): every ``validate_every`` epochs and
    the last, when there are held-out meshes and ``validate_every > 0``."""
    return num_test > 0 and t.validate_every > 0 and (epoch % t.validate_every == 0 or epoch == t.epochs)


def _config_value(config: Mapping[str, Any], key: str) -> str:
    """The value of a dotted ``section.key`` of a config dict, as JSON writes it (``"unset"`` if absent)."""
    section, name = key.split(".", 1)
    value = (config.get(section) or {}).get(name, _UNSET)
    return "unset" if value is _UNSET else json.dumps(value)


_UNSET = object()


def _files_in_the_way(out: str, config: TrainConfig) -> list[str]:
    """The files of ``out`` that a new run would replace: its model, decoder, hierarchy and history files,
    and a ``config.yaml`` other than ``config`` (that of a run stopped before its first checkpoint is kept)."""
    taken = [name for name in (MODEL_NAME, DECODER_NAME, HIERARCHY_NAME, HISTORY_NAME)
             if os.path.lexists(os.path.join(out, name))]
    path = os.path.join(out, CONFIG_NAME)
    if os.path.lexists(path):
        try:
            same = load_config(path).resolved_dict() == config.resolved_dict()  # as resume compares them
        except (OSError, ValueError):
            same = False
        if not same:
            taken.insert(0, f"{CONFIG_NAME} (another config)")
    return taken


def _model_files_match(out: str, checkpoint_meta: Mapping[str, Any]) -> bool:
    """Whether the run's hierarchy, model and decoder files were written from the checkpoint's last step
    (and the decoder file holds the latent prior, which files written before it was stored lack)."""
    from ..model_files import read_model_meta

    if not os.path.isfile(os.path.join(out, HIERARCHY_NAME)):
        return False
    for name in (MODEL_NAME, DECODER_NAME):
        try:
            extra = read_model_meta(os.path.join(out, name)).get("extra_meta") or {}
        except (MeshError, OSError):
            return False
        if (extra.get("epochs"), extra.get("steps")) != (checkpoint_meta["epoch"], checkpoint_meta["step"]):
            return False
        if name == DECODER_NAME and "latent_prior" not in extra:
            return False
    return True


def _saved_result(out: str, checkpoint_meta: Mapping[str, Any], device: str) -> TrainResult:
    """The :class:`TrainResult` of a finished run, read from its files (nothing is written)."""
    model, hierarchy, config, meta = load_trained(os.path.join(out, MODEL_NAME), device=device)
    history = list(checkpoint_meta.get("history", []))
    return TrainResult(model=model, hierarchy=hierarchy, config=config, output_dir=out,
                       checkpoint_path=os.path.join(out, CHECKPOINT_NAME), model_path=meta["path"],
                       decoder_path=os.path.join(out, DECODER_NAME), epochs_completed=int(checkpoint_meta["epoch"]),
                       step=int(checkpoint_meta["step"]), history=history, interrupted=False,
                       train_seconds=sum(h["seconds"] for h in history), data_meta=dict(meta.get("data") or {}),
                       up_to_date=True)


def _progress_bar(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="batch", desc="train", dynamic_ncols=True)


def _nonfinite_message(what: str, epoch: int, step: int, ckpt_path: str, last_saved, optimizer,
                       batch: tuple[int, int] | None = None) -> str:
    where = f"epoch {epoch}, step {step}" + (f" (batch {batch[0]} of {batch[1]})" if batch else "")
    if last_saved is None:
        kept = "no checkpoint had been written yet"
    else:
        kept = f"the last good checkpoint {ckpt_path} (epoch {last_saved['epoch']}, step {last_saved['step']}) is kept"
    return (f"{what} at {where}: training stopped; {kept}; try a lower training.lr "
            f"(now {optimizer.param_groups[0]['lr']:.3g})")


def _finish(result: TrainResult, data: TrainingData, base_meta: dict[str, Any]) -> None:
    """Fit the latent prior on the training latents, then write the model, decoder and hierarchy."""
    from ..hierarchy import save_hierarchy
    from ..model_files import save_model

    model, hierarchy, config = result.model, result.hierarchy, result.config
    model.eval()
    latents = encode_all(model, data.train)  # (N, Z)
    model.fit_latent_prior(latents.to(model.latent_mean.device))
    extra = {
        "data_version": data.meta["data_version"],
        "template_hash": data.meta["template_hash"],
        **_recorded_paths(config),
        "train_config": config.to_dict(),
        "data": base_meta["data"],
        "epochs": result.epochs_completed,
        "steps": result.step,
        "final_loss": result.final_loss,
        **{f"final_{k}": v for k, v in result.history[-1].items() if k.startswith("test_")},
        "train_seconds": result.train_seconds,
        "threads": torch.get_num_threads(),  # what history.csv's meshes_per_s ran on (the finishing process's)
        "channels": "xyz+rgb" if config.model.joint else "xyz",
    }
    out = result.output_dir
    save_hierarchy(hierarchy, os.path.join(out, HIERARCHY_NAME))
    result.model_path = os.path.join(out, MODEL_NAME)
    save_model(model, result.model_path, hierarchy=hierarchy, extra_meta=extra)
    decoder: torch.nn.Module = model.decoder
    if config.model.joint and hierarchy.texel_map is not None:
        from ..nn import JointDecoder

        decoder = JointDecoder(model.decoder, "mesh", hierarchy.texel_map)
    result.decoder_path = os.path.join(out, DECODER_NAME)
    prior = {"mean": model.latent_mean.tolist(), "cov_cholesky": model.latent_cov_cholesky.tolist()}
    save_model(decoder, result.decoder_path, hierarchy=hierarchy, extra_meta={**extra, "latent_prior": prior})


def load_trained(output_dir_or_file: str | os.PathLike, device: torch.device | str | None = None
                 ) -> tuple[MeshAutoencoder, MeshHierarchy, TrainConfig, dict[str, Any]]:
    """The trained model of a run folder, a ``model.safetensors`` or a ``checkpoint.safetensors``.

    The hierarchy is read from ``hierarchy.npz`` beside the file when it matches, else
    rebuilt from the stored config (needs openmesh). A checkpoint's model has no
    fitted latent prior.

    Returns:
        ``(model, hierarchy, config, meta)``, where ``meta`` is the model file's
        ``extra_meta`` or the checkpoint's JSON document, with ``"kind"``
        (``"model"`` or ``"checkpoint"``) and ``"path"`` added.
    """
    from .checkpoint import read_checkpoint_meta, read_safetensors_metadata

    if device is not None:
        check_device(device, "device")
    path = os.fspath(output_dir_or_file)
    expected = "a training run folder, its model.safetensors or checkpoint.safetensors"
    if not os.path.lexists(path):
        from ..errors import ModelFileNotFoundError

        raise ModelFileNotFoundError(path, f"expected {expected}, found nothing at this path")
    if os.path.isdir(path):
        path = _trained_file(path)
    try:
        metadata = read_safetensors_metadata(path)
    except CheckpointError as exc:  # another kind of file: say what was expected
        raise CheckpointError(f"{exc} (expected {expected})") from None
    if "mesh_decoder" in metadata:
        from ..model_files import load_model, read_model_meta

        file_meta = read_model_meta(path)
        kind = str(file_meta.get("class"))
        if kind != "MeshAutoencoder":
            hint = ("; mesh-decoder sample and fit take a PCA model" if kind == "PCAModel" else
                    "; the run's model.safetensors holds the autoencoder" if kind.endswith("Decoder") else "")
            raise CheckpointError(f"{path}: expected {expected} of a trained autoencoder, found a {kind} model "
                                  f"file{hint}")
        extra = dict(file_meta.get("extra_meta") or {})
        if "train_config" not in extra:
            raise CheckpointError(f"{path}: a model file without a training config (not written by train())")
        hierarchy, config = trained_hierarchy(path, file_meta)
        model = load_model(path, hierarchy, device=device)
        return model, hierarchy, config, dict(extra, kind="model", path=path)
    meta = check_training_meta(path, read_checkpoint_meta(path))
    config = located_paths(TrainConfig.from_dict(meta["config"], source=path), meta)
    hierarchy = _hierarchy_beside(path, config, meta.get("template_hash"), meta.get("hierarchy_digest"), True)
    with torch.random.fork_rng(devices=[]):  # initial weights the checkpoint's replace, as load_model builds them
        model = build_autoencoder(config, hierarchy)
    load_checkpoint(path).restore(model)
    if device is not None:
        model.to(device)
    return model.eval(), hierarchy, config, dict(meta, kind="checkpoint", path=path)


def _recorded_paths(config: TrainConfig) -> dict[str, str | None]:
    """The absolute paths of a config's template file and data folder (``None`` for a built-in template or
    synthetic data), recorded in a run's files (``template_file``, ``data_root``) so that they find them
    from another working folder."""
    t, d = config.template, config.data
    return {"template_file": os.path.abspath(t.path) if t.kind == "file" else None,
            "data_root": os.path.abspath(d.root) if d.source == "folder" else None}


def recorded_path(given: str, recorded: Any, there: Callable[[str], bool]) -> str:
    """``given``, or the absolute path a run recorded for it (``recorded``) where ``given`` is a relative path
    that is not there from this working folder (the run was trained in another) and ``there(recorded)``."""
    if os.path.isabs(given) or os.path.exists(given) or not isinstance(recorded, str) or not there(recorded):
        return given
    return recorded


def located_paths(config: TrainConfig, meta: Mapping[str, Any]) -> TrainConfig:
    """``config`` with its template file and data folder found: a relative ``template.path`` or ``data.root``
    that is not there from this working folder (the run was trained in another) becomes the absolute path
    the run recorded (``meta["template_file"]``, ``meta["data_root"]``), where that is there. The template's
    hash and the data version are still checked where they are loaded."""
    changes: dict[str, dict[str, str]] = {}
    for section, key, recorded, applies, there in (
            ("template", "path", "template_file", config.template.kind == "file", os.path.isfile),
            ("data", "root", "data_root", config.data.source == "folder", os.path.isdir)):
        given = getattr(getattr(config, section), key)
        found = recorded_path(given, meta.get(recorded), there) if applies else given
        if found != given:
            changes[section] = {key: found}
    return config.replace(**changes) if changes else config


def _trained_file(folder: str) -> str:
    """A run folder's ``model.safetensors``, or its checkpoint when there is no model file; refused
    when the checkpoint has trained past the model file (a resumed run that was interrupted)."""
    model_path, ckpt_path = os.path.join(folder, MODEL_NAME), os.path.join(folder, CHECKPOINT_NAME)
    if os.path.lexists(model_path) and not os.path.isfile(model_path):  # was passed over for the checkpoint
        raise CheckpointError(f"{model_path}: expected the run's model file, found "
                              f"{'a directory' if os.path.isdir(model_path) else 'no regular file'}")
    if not os.path.isfile(model_path):
        if os.path.isfile(ckpt_path):
            # an unfinished first run: said, as its model has no fitted latent prior (it was silent)
            warnings.warn(f"{folder}: no {MODEL_NAME} (a run that has not finished?): using {CHECKPOINT_NAME}, "
                          "whose model has no fitted latent prior", stacklevel=3)
            return ckpt_path
        raise CheckpointError(f"{folder}: expected {MODEL_NAME} or {CHECKPOINT_NAME} in this folder, found neither")
    check_model_current(folder)
    return model_path


def check_model_current(folder: str) -> None:
    """Refuse (:class:`~mesh_decoder.errors.CheckpointError`) a run folder whose checkpoint has trained past
    its ``model.safetensors`` (and ``decoder.safetensors``, written with it): a resumed run that was
    interrupted. Nothing to check without both files."""
    from ..model_files import read_model_meta
    from .checkpoint import read_checkpoint_meta

    model_path, ckpt_path = os.path.join(folder, MODEL_NAME), os.path.join(folder, CHECKPOINT_NAME)
    if not (os.path.isfile(model_path) and os.path.isfile(ckpt_path)):
        return
    extra = read_model_meta(model_path).get("extra_meta") or {}
    try:  # to tell whether the checkpoint has trained past the model file
        ckpt = check_training_meta(ckpt_path, read_checkpoint_meta(ckpt_path))
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (name {model_path} to use the model file without it)") from None
    if isinstance(extra.get("steps"), int) and ckpt["step"] > extra["steps"]:
        raise CheckpointError(
            f"{folder}: {CHECKPOINT_NAME} (epoch {ckpt['epoch']}, step {ckpt['step']}) has trained past "
            f"{MODEL_NAME} (step {extra['steps']}): a resumed run was interrupted; finish it with --resume, "
            f"or name either file")


def trained_hierarchy(path: str, file_meta: Mapping[str, Any]) -> tuple[MeshHierarchy, TrainConfig]:
    """The hierarchy and the (located) training config of a run's model file, from the file's metadata
    (:func:`~mesh_decoder.model_files.read_model_meta`, whose ``extra_meta`` holds ``train_config``): as
    :func:`load_trained` finds them, so that every command loads a run's model on the same hierarchy."""
    extra = file_meta.get("extra_meta") or {}
    config = located_paths(TrainConfig.from_dict(extra["train_config"], source=path), extra)
    return _hierarchy_beside(path, config, file_meta.get("hierarchy_hash")), config


def _epochs(n: int) -> str:
    """``"1 epoch"``, ``"3 epochs"``."""
    return f"{n} epoch{'' if n == 1 else 's'}"


def _as_started(config: TrainConfig, template: Mesh, hierarchy: MeshHierarchy, digest: str,
                saved_digest: str | None) -> tuple[MeshHierarchy, str]:
    """``(hierarchy, digest)`` (built from ``config``, and its :func:`hierarchy_digest`), or those of the
    hierarchy a checkpoint's run started on where that was build revision 1's: its recorded digest is
    revision 1's, or it records none (checkpoints older still)."""
    if config.hierarchy.path is not None or saved_digest == digest:
        return hierarchy, digest
    earlier = make_hierarchy(config, template, revision=1)  # positions and UVs as given
    earlier_digest = hierarchy_digest(earlier)
    if saved_digest is None or earlier_digest == saved_digest:
        return earlier, earlier_digest
    return hierarchy, digest


def _hierarchy_beside(path: str, config: TrainConfig, template_hash: str | None,
                      checkpoint_digest: str | None = None, from_checkpoint: bool = False) -> MeshHierarchy:
    """``hierarchy.npz`` beside ``path``; where it is missing, damaged or of another template, the hierarchy
    rebuilt from ``config`` (with a warning naming the file that was passed over), for a checkpoint as its
    run started (:func:`_as_started`, given ``checkpoint_digest``)."""

    from ..errors import HierarchyError
    from ..hierarchy import load_hierarchy

    saved = os.path.join(os.path.dirname(os.path.abspath(path)), HIERARCHY_NAME)
    problem = None
    if os.path.isfile(saved):
        try:
            return load_hierarchy(saved, expected_template_hash=template_hash)
        except HierarchyError as exc:
            problem = exc  # another template or a damaged file: rebuild below
    try:
        template = load_template(config)
        hierarchy = make_hierarchy(config, template)
        if from_checkpoint:
            hierarchy, _ = _as_started(config, template, hierarchy, hierarchy_digest(hierarchy), checkpoint_digest)
    except ImportError as exc:  # no openmesh here: say why the saved hierarchy was not used
        if problem is None:
            raise
        raise ImportError(f"{problem}; rebuilding the hierarchy instead failed: {exc}") from None
    if problem is not None:
        warnings.warn(f"{problem}; the hierarchy was rebuilt from the run's config instead", stacklevel=2)
    return hierarchy


# =========================================================================== CLI
def add_train_arguments(parser) -> None:
    """Arguments of ``mesh-decoder train CONFIG [--resume] [-o DIR]``."""
    parser.add_argument("config", metavar="CONFIG", help="training config, YAML or JSON")
    parser.add_argument("-o", "--output-dir", default=None,
                        help="run folder (default: runs/<config file name without extension>)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    parser.add_argument("--epochs", type=int_argument(1), default=None, help="override training.epochs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def length_unit(source: str) -> str:
    """The unit of vertex errors for a data source: the built-in synthetic faces are in mm, mesh files in their
    own units."""
    return "mm" if source == "synthetic" else "data units"


def _test_summary(result: TrainResult) -> str:
    """``"; test loss L, mean vertex error E (data units)"`` of the last epoch that measured the test split,
    or why none did."""
    last = _last_test(result.history)
    if last is None:
        if result.data_meta.get("num_test") == 0:
            return "; no held-out faces to measure (the split holds none out)"
        return "; the held-out faces were not measured (training.validate_every is 0)"
    at = "" if last is result.history[-1] else f" (epoch {last['epoch']})"
    color = f", colour {last['test_color_error']:.4g} (RGB distance)" if "test_color_error" in last else ""
    unit = length_unit(result.data_meta.get("source", ""))  # as evaluate labels them
    return (f"; test loss {last['test_loss']:.5f}, mean vertex error {last['test_vertex_error']:.4g} "
            f"({unit}){color}{at}")


def _planned_epochs(path: str) -> int | None:
    """``training.epochs`` of the checkpoint at ``path``, or ``None`` (no readable checkpoint: train says why)."""
    from .checkpoint import CheckpointError, read_checkpoint_meta

    try:
        epochs = read_checkpoint_meta(path)["config"]["training"]["epochs"]
    except (OSError, CheckpointError, KeyError, TypeError):
        return None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def run_train(args) -> int:
    """Run ``mesh-decoder train``. Returns 0 when done, 130 when interrupted (the checkpoint is saved)."""
    out = args.output_dir
    if out is None:
        out = os.path.join("runs", os.path.splitext(os.path.basename(args.config))[0])
    check_output_path(out, "-o/--output-dir", directory=True)
    config = load_config(args.config)
    if args.epochs is not None:
        config = config.replace(training={"epochs": args.epochs})
    elif args.resume:  # the epochs the run was started with (--epochs then) unless the file asks for more
        planned = _planned_epochs(os.path.join(out, CHECKPOINT_NAME))
        if planned is not None and planned > config.training.epochs:
            print(f"resuming to the {planned} epochs the run was started with (the config file says "
                  f"{config.training.epochs}; --epochs N sets another count)", file=sys.stderr)
            config = config.replace(training={"epochs": planned})
    result = train(config, out, resume=args.resume, progress=not args.quiet and is_terminal(sys.stderr))
    if result.up_to_date:
        n = result.epochs_completed
        print(f"{out}: already trained its {_epochs(n)}; nothing to do, no file was changed "
              f"(--epochs N with N > {n} trains on)")
        return 0
    if result.interrupted:
        print(f"interrupted at epoch {result.epochs_completed + 1}, step {result.step}; checkpoint saved to "
              f"{result.checkpoint_path}; continue with --resume", file=sys.stderr)
        return 130
    loss = result.final_loss
    d = result.data_meta
    if isinstance(d.get("num_train"), int) and isinstance(d.get("num_test"), int):
        where = (f"{d.get('num_files')} mesh files in {d.get('root')}" if d.get("source") == "folder" else
                 "synthetic faces")
        print(f"data: {d['num_train']} training and {d['num_test']} held-out meshes ({where})")
    print(f"trained {_epochs(result.epochs_completed)} ({result.step} steps, {result.train_seconds:.1f} s), "
          f"final loss {loss:.5f}{_test_summary(result)}" if loss is not None
          else f"trained {_epochs(result.epochs_completed)}")
    print(f"wrote {result.model_path}, {result.decoder_path}, {os.path.join(out, HIERARCHY_NAME)} and "
          f"{os.path.join(out, HISTORY_NAME)}")
    return 0
