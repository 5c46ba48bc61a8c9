"""llmdiet's safetensors reader: one tensor at a time, aliases restored, damage reported in one line."""

from __future__ import annotations

import pytest
import torch

from llmdiet.artifacts import BackendError, TensorFile, load_tensors, save_tensors


def _saved(tmp_path):
    shared = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tensors = {"a.weight": shared, "b.weight": shared, "codes": torch.tensor([[1, -2], [3, -4]], dtype=torch.int8)}
    path = tmp_path / "w.safetensors"
    save_tensors(tensors, path, {"format": "test"})
    return path, tensors


def test_reads_each_tensor_alone_and_restores_aliases(tmp_path):
    path, tensors = _saved(tmp_path)
    file = TensorFile(path)
    assert file.metadata == {"format": "test"} and file.aliases == {"b.weight": "a.weight"}
    assert set(file.names()) == set(tensors) and "codes" in file and "nope" not in file
    assert torch.equal(file.read("codes"), tensors["codes"]) and file.read("codes").dtype == torch.int8
    assert torch.equal(file.read("b.weight"), tensors["a.weight"])  # an alias reads its target's bytes
    everything, metadata = load_tensors(path)
    assert everything["a.weight"] is everything["b.weight"]  # one tensor again, as saved
    subset = file.read_all(["b.weight"])
    assert list(subset) == ["b.weight"] and torch.equal(subset["b.weight"], tensors["a.weight"])


def test_damage_is_one_line_naming_the_file(tmp_path):
    path, _ = _saved(tmp_path)
    with pytest.raises(BackendError, match="tensor 'nope' is missing"):
        TensorFile(path).read("nope")
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # the last tensor cut short
    file = TensorFile(path)
    last = max(file.names()[:2], key=lambda n: file._header[n]["data_offsets"][1])
    with pytest.raises(BackendError, match=r"w\.safetensors: not a readable safetensors file .*cut short") as err:
        file.read(last)
    assert "\n" not in str(err.value) and "--overwrite_output_dir" in str(err.value)
    path.write_bytes(data[:6])
    with pytest.raises(BackendError, match="not a readable safetensors file"):
        TensorFile(path)
    with pytest.raises(BackendError, match="weights file not found"):
        TensorFile(tmp_path / "missing.safetensors")
