"""The README is the front door: its commands, its example and its tables stay true."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def _readme() -> str:
    with open(README, encoding="utf-8") as fh:
        return fh.read()


def test_two_commands_come_first():
    text = _readme()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert "make bench" in first_block and "make test" in first_block


def test_two_commands_say_where_make_bench_writes():
    """`make bench` writes outside the committed results (so `make test` still passes after it), and the README
    says where, and how to add a run to the tables."""
    import argparse

    from mesh_decoder.bench.harness import add_bench_arguments

    default = add_bench_arguments(argparse.ArgumentParser()).get_default("output_dir")
    assert os.path.normpath(default) != os.path.join("benchmarks", "results")
    ignored = subprocess.run(["git", "check-ignore", "-q", os.path.join(default, "decode_x.json")], cwd=ROOT)
    assert ignored.returncode in (0, 128)  # 0: git ignores it; 128: not a git checkout (an unpacked release)
    section = _readme().split("## In Python")[0]
    assert f"`{default}/`" in section and "readme_tables.py" in section
    assert "--output-dir benchmarks/results" in section


def test_every_repository_path_the_readme_names_exists():
    """The README told readers to run `jupyter execute notebooks/quickstart.ipynb`, a file that never existed
    (the notebooks are numbered)."""
    text = _readme()
    paths = set(re.findall(r"(?<![\w/.-])((?:notebooks|benchmarks|configs|mesh_decoder|tests)/[\w./-]*\w)", text))
    assert len(paths) > 10, paths  # the pattern finds them
    missing = sorted(p for p in paths if "*" not in p and not os.path.exists(os.path.join(ROOT, p)))
    assert not missing, missing


def test_result_tables_match_committed_files():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "readme_tables.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_python_example_runs(tmp_path):
    """The first Python block runs (in a scratch folder: it writes a textured face)."""
    code = re.search(r"```python\n(.*?)```", _readme(), flags=re.S).group(1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code + "\nassert tuple(out.texture.shape) == (8, 3, 256, 256)\n"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == ["face.mtl", "face.obj", "face.png"]


def test_interop_example_runs(tmp_path):
    """The second Python block (PyTorch Geometric) runs after the first, on its output."""
    blocks = re.findall(r"```python\n(.*?)```", _readme(), flags=re.S)
    assert len(blocks) >= 2 and "to_pyg" in blocks[1]
    check = ("\nassert tuple(meshes.vertices.shape) == (8, 5023, 3) and torch.equal(meshes.vertices, out.vertices)"
             "\nassert torch.equal(meshes.faces, torch.from_numpy(template.faces))"
             "\nassert tuple(graphs.face.shape) == (3, 8 * template.num_faces)\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", blocks[0] + blocks[1] + check],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_tables_skip_empty_files_and_mark_interrupted_runs(tmp_path, monkeypatch, capsys):
    """A run stopped by Ctrl-C: a file without rows is skipped, one with some rows is labelled as partial."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("readme_tables", os.path.join(ROOT, "benchmarks", "readme_tables.py"))
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    with open(os.path.join(ROOT, "benchmarks", "results", "decode_cuda-nvidia-h200.json"), encoding="utf-8") as fh:
        full = json.load(fh)
    partial = dict(full, rows=[r for r in full["rows"] if r["decoder"] == "spiralnet++-coma"][:5],
                   environment=dict(full["environment"], interrupted=True))
    empty = dict(full, rows=[], environment=dict(full["environment"], interrupted=True))
    for name, doc in (("decode_cuda-card.json", partial), ("decode_cpu-empty.json", empty)):
        (tmp_path / name).write_text(json.dumps(doc), encoding="utf-8")
    monkeypatch.setattr(tables, "RESULTS", str(tmp_path))
    decode, targets = tables.decode(), tables.targets()
    assert "an interrupted run" in decode and "decode_cpu-empty" not in decode
    assert "`decode_cuda-card.json` (an interrupted run" in targets
    assert "decode_cpu-empty.json: skipped, expected benchmark rows, found none" in capsys.readouterr().err
