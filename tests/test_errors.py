"""A file that is not there is a FileNotFoundError from every loader (as the README promises), and still
the loader's own error, naming the path."""

import errno

import pytest

from mesh_decoder.errors import HierarchyError, MissingFileError, ModelFileError
from mesh_decoder.hierarchy import load_hierarchy
from mesh_decoder.mesh.io import load_mesh
from mesh_decoder.model_files import load_model, read_model_meta
from mesh_decoder.train import load_config, load_trained
from mesh_decoder.train.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta
from mesh_decoder.train.config import TrainConfigError


@pytest.mark.parametrize("name, load, own", [
    ("h.npz", load_hierarchy, HierarchyError),
    ("m.safetensors", load_model, ModelFileError),
    ("m.safetensors", read_model_meta, ModelFileError),
    ("c.safetensors", load_checkpoint, CheckpointError),
    ("c.safetensors", read_checkpoint_meta, CheckpointError),
    ("run", load_trained, ModelFileError),
    ("config.yaml", load_config, TrainConfigError),
])
def test_a_missing_file_is_a_file_not_found_error_of_the_loader(tmp_path, name, load, own):
    """Hierarchies, model files, checkpoints, run folders and configs raised their ValueError subclass
    alone for a missing file, so `except FileNotFoundError` (as around open or torch.load) missed them."""
    path = tmp_path / "missing" / name
    with pytest.raises(FileNotFoundError) as info:
        load(path)
    error = info.value
    assert isinstance(error, own) and isinstance(error, ValueError) and isinstance(error, MissingFileError)
    assert error.errno == errno.ENOENT and error.filename == str(path)
    assert str(error).startswith(f"{path}: ")


def test_a_missing_mesh_is_a_plain_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.obj"):
        load_mesh(tmp_path / "missing.obj")


@pytest.mark.parametrize("load", [load_hierarchy, load_model, load_config])
def test_a_folder_where_a_file_should_be_is_not_a_missing_file(tmp_path, load):
    """Only a path where nothing is counts as missing; a folder keeps the loader's own error."""
    with pytest.raises(ValueError) as info:
        load(tmp_path)
    assert not isinstance(info.value, FileNotFoundError)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("load", [load_model, read_model_meta, load_checkpoint, load_trained, load_config, load_mesh])
def test_an_empty_path_is_named_as_such(load):
    """An empty path (an unset shell variable in "$MODEL") printed as 'error: : cannot read ...', naming nothing."""
    with pytest.raises(ValueError) as info:
        load("")
    assert str(info.value).startswith("'' (an empty path): "), str(info.value)
    with pytest.raises(ValueError, match=r"^path: expected a file path, got ''$"):
        load_hierarchy("")  # checked before reading, as it always was
