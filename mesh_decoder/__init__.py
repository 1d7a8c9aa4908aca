"""mesh_decoder: graph-convolutional 3D face mesh decoders.

Subpackages, in the order a model is made:

* :mod:`mesh_decoder.mesh`: the :class:`~mesh_decoder.mesh.Mesh` container, templates
  (``face_template``), mesh files, UVs and PyTorch Geometric interop;
* :mod:`mesh_decoder.hierarchy`: down/up-sampling hierarchies (``build_hierarchy``,
  ``hierarchy_from_matrices``, ``save_hierarchy``/``load_hierarchy``);
* :mod:`mesh_decoder.nn`: spiral, Chebyshev and PyG decoders and encoders, the joint
  shape and UV-texture decoder, presets;
* :mod:`mesh_decoder.pca`: the linear 3DMM; :mod:`mesh_decoder.data`: synthetic faces and
  mesh folders; :mod:`mesh_decoder.train`: training, evaluation, configs;
* :mod:`mesh_decoder.render`, :mod:`mesh_decoder.fit`, :mod:`mesh_decoder.losses`:
  rendering, fitting to scans, landmarks or images, and mesh losses;
* :mod:`mesh_decoder.model_files`: safetensors model files; :mod:`mesh_decoder.bench`:
  the throughput benchmark and ONNX export.

The ``mesh-decoder`` command (``mesh-decoder --help``) runs them from a shell.
"""

__version__ = "0.1.0"
