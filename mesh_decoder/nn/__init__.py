"""Layers on fixed-topology meshes: spiral and Chebyshev convolutions, PyG adapter, pooling."""

from .cheb_conv import ChebConv, LaplacianRows, laplacian_matmul, laplacian_rows
from .graph import fast_paths_enabled, mesh_edge_index, plain_formulation
from .pool import DownSample, UpSample
from .pyg_conv import PSEUDO_COORDINATES, PyGConv, pseudo_coordinates
from .spiral_conv import (
    SpiralConv,
    clear_caches,
    convert_spiralnet_state_dict,
    project_gather,
    spiral_bags,
    spiral_gather,
    spiral_weight_blocks,
    weight_blocks_scope,
)
from .up_spiral_conv import UpSpiralConv

__all__ = [
    "ChebConv",
    "DownSample",
    "LaplacianRows",
    "PyGConv",
    "PSEUDO_COORDINATES",
    "pseudo_coordinates",
    "SpiralConv",
    "UpSample",
    "UpSpiralConv",
    "clear_caches",
    "convert_spiralnet_state_dict",
    "fast_paths_enabled",
    "laplacian_matmul",
    "laplacian_rows",
    "mesh_edge_index",
    "plain_formulation",
    "project_gather",
    "spiral_bags",
    "spiral_gather",
    "spiral_weight_blocks",
    "weight_blocks_scope",
]

# Decoders, encoders, autoencoder, UV texture operators and presets.
from .texture import TexelGather, UVSampler, sample_uv, uv_corners  # noqa: E402
from .decoders import (  # noqa: E402
    ACTIVATIONS,
    ChebDecoder,
    GraphDecoder,
    JointDecoder,
    JointOutput,
    PyGDecoder,
    SpiralDecoder,
    UVTextureDecoder,
    decoder_from_config,
)
from .encoders import ChebEncoder, GraphEncoder, PyGEncoder, SpiralEncoder, encoder_from_config  # noqa: E402
from .autoencoder import MeshAutoencoder  # noqa: E402
from .presets import (  # noqa: E402
    PRESETS,
    decoder_from_preset,
    encoder_from_preset,
    preset_hierarchy_params,
    preset_mismatch,
)

__all__ += [
    "ACTIVATIONS",
    "TexelGather",
    "UVSampler",
    "sample_uv",
    "uv_corners",
    "GraphDecoder",
    "SpiralDecoder",
    "ChebDecoder",
    "PyGDecoder",
    "UVTextureDecoder",
    "JointDecoder",
    "JointOutput",
    "decoder_from_config",
    "GraphEncoder",
    "SpiralEncoder",
    "ChebEncoder",
    "PyGEncoder",
    "encoder_from_config",
    "MeshAutoencoder",
    "PRESETS",
    "decoder_from_preset",
    "encoder_from_preset",
    "preset_hierarchy_params",
    "preset_mismatch",
]
