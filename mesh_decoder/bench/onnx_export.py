"""Export a decoder to ONNX and run it in ONNX Runtime.

:func:`export_onnx` exports the eager module with :func:`torch.onnx.export`,
first with the ``torch.export``-based exporter (``dynamo=True``), falling back
to the TorchScript-based one if that fails. The batch dimension of the latent
is dynamic by default, so one file serves every batch size.

:class:`OnnxRunner` runs an exported file in ONNX Runtime and returns torch
tensors, so the benchmark harness times it like any other decoder.

``onnx``, ``onnxscript`` and ``onnxruntime`` are optional dependencies
(``pip install mesh_decoder[onnx]``); they are imported only here, when used.
"""

from __future__ import annotations

import contextlib
import importlib.util
import numbers
import json
import logging
import math
import os
import sys
import tempfile
import warnings
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .. import __version__
from .._atomic import atomic_write
from .._checks import check_int, check_output_path

__all__ = ["export_onnx", "OnnxRunner", "PCAJointDecoder", "VertexColorSplit", "onnx_output_names", "require_onnx"]

_INSTALL_HINT = "pip install 'mesh_decoder[onnx]' (onnx, onnxscript, onnxruntime)"


def require_onnx(*modules: str) -> None:
    """Import the given optional modules or raise ``ImportError`` saying how to install them."""
    for name in modules or ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"ONNX export/runtime needs the {name!r} package: {_INSTALL_HINT}") from exc


def _latent_size(decoder: nn.Module) -> int:
    size = getattr(decoder, "latent_size", None)
    if isinstance(size, numbers.Integral) and not isinstance(size, bool) and size > 0:
        return int(size)
    raise ValueError(f"decoder: expected a decoder with a positive integer 'latent_size' attribute, got "
                     f"{type(decoder).__name__} with latent_size {size!r}")


def onnx_output_names(output: object) -> list[str]:
    """Output names for a decoder output: ``["vertices"]`` or a NamedTuple's fields."""
    return [name for name, _ in _named_outputs(output)]


def _named_outputs(output: object) -> list[tuple[str, torch.Tensor]]:
    """A decoder output's tensors with their ONNX output names (``None`` entries left out)."""
    if isinstance(output, torch.Tensor):
        return [("vertices", output)]
    fields = getattr(output, "_fields", None)
    if fields is None and isinstance(output, (list, tuple)):
        fields = [f"output_{i}" for i in range(len(output))]
    if fields is None:
        raise TypeError(f"decoder output: expected a tensor or a tuple of tensors, got {type(output).__name__}")
    return [(name, value) for name, value in zip(fields, output) if isinstance(value, torch.Tensor)]


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The exporters' warnings and log records (torchvision operators skipped, rewrites, ...) held back."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _stdout_discarded() -> Iterator[None]:
    """File descriptor 1 sent to the null device: the TorchScript exporter's C++ logger writes a graph it
    failed on there (thousands of lines), past Python's ``sys.stdout``. Where descriptor 1 cannot be
    duplicated (closed), the export runs as it is."""
    if sys.stdout is not None:
        sys.stdout.flush()
    null = saved = None
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(1)
        os.dup2(null, 1)
    except OSError:  # no descriptor 1 to redirect: export as it is
        if saved is not None:
            os.close(saved)
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
        if null is not None:
            os.close(null)


class PCAJointDecoder(nn.Module):
    """A :class:`~mesh_decoder.pca.PCAModel` with colours as one decoder of one code, for export: ``z`` holds
    the shape then the colour coefficients (as ``mesh-decoder sample`` writes them).

    Shapes:
        ``(B, K + Kc) -> PCAOutput(vertices (B, V, 3), colors (B, V, 3))``
    """

    def __init__(self, pca: nn.Module) -> None:
        super().__init__()
        if not getattr(pca, "has_colors", False):
            raise ValueError(f"pca: expected a PCAModel with colour components, got {type(pca).__name__} without")
        self.pca = pca
        self.latent_size = int(pca.latent_size) + int(pca.color_latent_size)

    def forward(self, z: torch.Tensor):
        K = self.pca.latent_size
        return self.pca.decode_joint(z[..., :K], z[..., K:])


class VertexColorSplit(nn.Module):
    """A decoder of ``(B, V, 6)`` xyz then rgb (a joint autoencoder's) as ``vertices`` and ``colors``
    outputs, for export.

    Shapes:
        ``(B, Z) -> JointOutput(vertices (B, V, 3), None, colors (B, V, 3), None)``
    """

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        if getattr(decoder, "out_channels", None) != 6:
            raise ValueError(f"decoder: expected one of 6 output channels (xyz then rgb), got "
                             f"{type(decoder).__name__} with {getattr(decoder, 'out_channels', None)}")
        self.decoder = decoder
        self.latent_size = int(decoder.latent_size)

    def forward(self, z: torch.Tensor):
        from ..nn.decoders import JointOutput

        out = self.decoder(z)  # (B, V, 6)
        return JointOutput(out[..., :3], None, out[..., 3:6], None)


#: The metadata keys :func:`export_onnx` writes from the exported module itself.
_OWN_KEYS = ("mesh_decoder.version", "mesh_decoder.class", "mesh_decoder.latent_size", "mesh_decoder.outputs")


def export_onnx(
    decoder: nn.Module,
    path: str | os.PathLike,
    batch_size: int = 1,
    dynamic_batch: bool = True,
    *,
    opset_version: int | None = None,
    prefer_dynamo: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Export an eager decoder to an ONNX file.

    The decoder is exported in fp32 on the CPU (a copy; the module passed in is
    not changed, and a half-precision one is exported in fp32 too). The latent
    input is named ``"z"``. The outputs are named ``"vertices"`` or after the
    fields of the decoder's NamedTuple output that hold tensors, in their order:
    a :class:`~mesh_decoder.nn.JointDecoder` gives ``vertices`` ``(B, V, 3)``,
    ``texture`` ``(B, 3, H, W)`` (unclamped, row 0 at the top, gutter texels
    copied from their neighbours), then ``colors`` ``(B, V, 3)`` with the mesh
    branch and ``mask`` ``(H, W)`` (covered texels) with a texel map; read a
    file's own list from :attr:`OnnxRunner.output_names`. The file's metadata
    (:attr:`OnnxRunner.metadata`) records the library version, the decoder's
    class, latent size and outputs, and ``metadata``. The file is written
    atomically; a failed export leaves an existing file as it was.

    Args:
        decoder: module with ``latent_size`` whose ``forward(z)`` decodes.
        path: output ``.onnx`` file.
        batch_size: batch of the example latent used for tracing (default 1; at
            least 2 with ``dynamic_batch``, since a traced batch of 1 is specialised).
        dynamic_batch: make the batch dimension dynamic (default ``True``); an
            exporter whose file still has a fixed batch, or decodes a batch of another
            size than the traced one otherwise than the module (checked in ONNX
            Runtime when installed), counts as failed.
        opset_version: ONNX opset (default: the exporter's, 18 or later for the
            ``dynamo`` exporter). An exporter that writes another opset counts as
            failed: below 18, the TorchScript exporter writes the file.
        prefer_dynamo: try the ``dynamo=True`` exporter first (default ``True``);
            on failure fall back to the TorchScript exporter.
        metadata: more ``key: value`` strings for the file's metadata (e.g. the
            latent prior, as ``mesh-decoder export`` records it).

    Returns:
        Which exporter wrote the file: ``"dynamo"`` or ``"torchscript"``.

    Shapes:
        ``z``: ``(B, Z)`` (``B`` dynamic when ``dynamic_batch``).

    Raises:
        TypeError: ``decoder`` is not a module, or ``metadata`` not a mapping of strings.
        ValueError: ``decoder`` has no integer ``latent_size``, a bad ``batch_size`` or ``opset_version``, or no
            exporter wrote the model at the ``opset_version`` asked for (each one's error is listed).
        RuntimeError: every exporter failed at its default opset (each one's error is listed).
    """
    from ..nn.autoencoder import MeshAutoencoder
    from ..nn.encoders import GraphEncoder

    if isinstance(decoder, MeshAutoencoder):
        raise TypeError("decoder: expected a decoder, got a MeshAutoencoder (it maps meshes to meshes): pass its "
                        ".decoder")
    if not isinstance(decoder, nn.Module) or isinstance(decoder, GraphEncoder):
        raise TypeError(f"decoder: expected a torch.nn.Module decoder (e.g. a SpiralDecoder or a PCAModel), "
                        f"got {type(decoder).__name__}")
    _latent_size(decoder)
    require_onnx("onnx", "onnxscript")
    check_int(batch_size, "batch_size", 1)
    if opset_version is not None:
        check_int(opset_version, "opset_version", 7)
    if metadata is not None and not (isinstance(metadata, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise TypeError(f"metadata: expected None or a mapping of str keys to str values, got {metadata!r:.80}")
    reserved = sorted(set(metadata or ()) & set(_OWN_KEYS))
    if reserved:  # they describe the file itself: another value would contradict it
        raise ValueError(f"metadata: expected none of the keys the export writes itself ({', '.join(_OWN_KEYS)}), "
                         f"got {', '.join(reserved)}")
    check_output_path(path, "path")  # before the export: a folder there failed after it, naming a temporary file
    import copy

    model = copy.deepcopy(decoder).to(device="cpu", dtype=torch.float32).eval()
    if hasattr(model, "check_finite"):
        model.check_finite = False  # data-dependent checks do not export
    trace_batch = max(batch_size, 2) if dynamic_batch else batch_size
    z = torch.randn(trace_batch, _latent_size(model), generator=torch.Generator().manual_seed(0))  # (B, Z)
    with torch.no_grad():
        names = onnx_output_names(model(z))
    errors: list[str] = []
    exporters = ("dynamo", "torchscript") if prefer_dynamo else ("torchscript",)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = os.path.join(tmp, "model.onnx")
        for exporter in exporters:
            try:
                with _quiet_exporters():
                    _export(model, z, tmp_path, names, exporter, dynamic_batch, opset_version)
                _check_opset(tmp_path, opset_version)
                if dynamic_batch:
                    _check_dynamic_batch(tmp_path)
                    _check_other_batch(model, tmp_path, trace_batch + 1)
                break
            except Exception as exc:  # noqa: BLE001 - try the next exporter, report all failures
                errors.append(f"{exporter}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        else:
            if opset_version is not None:  # a model exports at some opsets only (a Chebyshev decoder from 16 on)
                raise ValueError(f"opset {opset_version}: no exporter wrote this model at that opset "
                                 f"({' | '.join(errors)}); leave the opset out for the exporter's default")
            raise RuntimeError("ONNX export failed with every exporter: " + " | ".join(errors))
        data = _with_metadata(tmp_path, {
            "mesh_decoder.version": __version__,
            "mesh_decoder.class": type(decoder).__name__,
            "mesh_decoder.latent_size": str(_latent_size(model)),
            "mesh_decoder.outputs": json.dumps(names),
            **(metadata or {}),
        })
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return exporter


def _check_opset(path: str, wanted: int | None) -> None:
    """Raise unless the file's default-domain opset is ``wanted`` (when one was asked for)."""
    if wanted is None:
        return
    import onnx

    found = [o.version for o in onnx.load(path, load_external_data=False).opset_import if o.domain in ("", "ai.onnx")]
    if found != [wanted]:
        raise ValueError(f"expected opset {wanted}, the file has {found[0] if len(found) == 1 else found}")


def _with_metadata(path: str, entries: Mapping[str, str]) -> bytes:
    """The bytes of the ONNX file ``path`` with ``entries`` added to its ``metadata_props``."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    kept = {p.key: p.value for p in model.metadata_props if p.key not in entries}
    onnx.helper.set_model_props(model, {**kept, **entries})
    return model.SerializeToString()


def _check_dynamic_batch(path: str) -> None:
    """Raise unless the file's input ``z`` has a symbolic batch dimension."""
    import onnx

    dim = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    if not dim.dim_param:
        raise ValueError(f"expected a dynamic batch dimension on input 'z', got a fixed batch of {dim.dim_value}")


#: Largest ``max |onnx - torch| / max(1, max |torch|)`` accepted at a batch size other than the traced one.
_OTHER_BATCH_TOLERANCE = 1e-4


def _check_other_batch(model: nn.Module, path: str, batch: int) -> None:
    """Raise unless the file decodes a batch of ``batch`` (not the traced size) as the module does.

    A file can declare a dynamic batch and still hold values of the traced batch (the
    TorchScript exporter records a Python integer's value, e.g. ``torch.arange(B)``
    made from the batch size, as a constant), and then decodes only the traced samples
    right. Checked in ONNX Runtime when it is installed (the ``onnx`` extra has it).
    """
    if importlib.util.find_spec("onnxruntime") is None:
        return
    z = torch.randn(batch, _latent_size(model), generator=torch.Generator().manual_seed(1))  # (B, Z)
    with torch.no_grad():
        expected = _named_outputs(model(z))
    got = OnnxRunner(path, threads=1)(z)
    for (name, b), a in zip(expected, got):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"the file decodes a batch of {batch} to {name!r} of shape {tuple(a.shape)}, the module "
                             f"to {tuple(b.shape)}: it holds values of the traced batch")
        if not b.is_floating_point():  # the joint decoder's texel mask
            error = 0.0 if torch.equal(a.to(b.dtype), b) else math.inf
        else:
            error = float((a - b).abs().max()) / max(1.0, float(b.abs().max())) if b.numel() else 0.0
        if not error <= _OTHER_BATCH_TOLERANCE:
            raise ValueError(f"the file decodes a batch of {batch} wrongly ({name!r} off by {error:.2e} relative to "
                             "the module): it holds values of the traced batch")


def _export(model, z, path, names, exporter, dynamic_batch, opset_version) -> None:
    if exporter == "dynamo":
        dynamic_shapes = {"z": {0: torch.export.Dim("batch", min=1, max=65536)}} if dynamic_batch else None
        program = torch.onnx.export(
            model, (z,), None, dynamo=True, input_names=["z"], output_names=names,
            dynamic_shapes=dynamic_shapes, opset_version=opset_version, verbose=False,
        )
        program.save(path, external_data=False)
    else:
        dynamic_axes = None
        if dynamic_batch:
            dynamic_axes = {"z": {0: "batch"}, **{n: {0: "batch"} for n in names if n != "mask"}}
        with _stdout_discarded():
            torch.onnx.export(
                model, (z,), path, dynamo=False, input_names=["z"], output_names=names,
                dynamic_axes=dynamic_axes, opset_version=opset_version or 17, external_data=False,
            )


class OnnxRunner:
    """Run an exported decoder in ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        device: ``"cpu"`` (default) or a CUDA device (needs the CUDA provider).
        threads: intra-op threads (default: ONNX Runtime's choice).

    Calling the runner with a latent ``(B, Z)`` CPU tensor or numpy array returns the list of
    outputs as CPU tensors, in the file's output order (``output_names``);
    ``metadata`` holds the file's metadata (see :func:`export_onnx`).
    """

    def __init__(self, path: str | os.PathLike, device: torch.device | str = "cpu", threads: int | None = None):
        require_onnx("onnxruntime")
        import onnxruntime as ort

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such ONNX file")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        device = torch.device(device)
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError("device: ONNX Runtime has no CUDAExecutionProvider here; use device 'cpu'")
            providers: Sequence = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own classes subclass Exception alone
            raise ValueError(f"{path}: not an ONNX model ONNX Runtime can load "
                             f"({' '.join(str(exc).split())[:200]})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.device = device

    def __call__(self, z: torch.Tensor | np.ndarray) -> list[torch.Tensor]:
        if isinstance(z, np.ndarray):
            z = torch.from_numpy(np.asarray(z))
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z: expected a (B, Z) torch tensor or numpy array, got {type(z).__name__}")
        if z.is_meta or z.is_complex() or not (z.is_floating_point() or z.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"z: expected real latents, got {'a meta tensor' if z.is_meta else z.dtype}")
        width = self.session.get_inputs()[0].shape[1]
        if z.dim() != 2 or (isinstance(width, int) and z.shape[1] != width):
            raise ValueError(f"z: expected shape (B, {width}), got {tuple(z.shape)}")
        z_np = z.detach().to("cpu", torch.float32).contiguous().numpy()  # (B, Z)
        outputs = self.session.run(None, {self.input_name: z_np})
        return [torch.from_numpy(o) for o in outputs]
