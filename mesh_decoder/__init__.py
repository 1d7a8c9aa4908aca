"""mesh_decoder: graph-convolutional 3D face mesh decoders."""

__version__ = "0.1.0"
