"""The bounds of specs and checkpoints, in-process: what the command-line cases do not reach."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from cnnlab import spec as S
from cnnlab import zoo
from cnnlab.checkpoint import _sha256, load_checkpoint, load_tensors, read_json
from cnnlab.errors import CnnlabError
from cnnlab.model import spec as model_spec


def _tiny(*layers, input=(1, 12, 12), classes=4):
    return {"input": list(input), "classes": classes, "layers": [*layers, {"type": "dense"}]}


# ---------------------------------------------------------------- specs
@pytest.mark.parametrize("name", ["resnet20", "mnist-fakecnn", "googlenet"])
def test_size_checks_leave_the_random_weights_unchanged(name, monkeypatch):
    torch.manual_seed(0)
    checked = S.build(zoo.spec(name)).state_dict()
    monkeypatch.setattr(model_spec, "_check_sizes", lambda *args: None)
    torch.manual_seed(0)
    unchecked = S.build(zoo.spec(name)).state_dict()
    assert all(torch.equal(checked[k], unchecked[k]) for k in checked)


def test_multiply_adds_are_capped_before_allocation():
    conv = {"type": "conv", "filters": 1000, "kernel": 31}  # 0.96e9 parameters, 1.1e12 MACs
    with pytest.raises(S.SpecError, match=r"layer 1 \(conv 'conv1'\): .*multiply-adds per example"):
        S.build(_tiny(conv, input=(1000, 64, 64)))


def test_stochastic_pooling_windows_are_counted():
    pool = {"type": "pool", "mode": "stochastic", "size": 300, "stride": 1}
    with pytest.raises(S.SpecError, match=r"its pooling windows would hold"):
        S.build(_tiny(pool, input=(3, 600, 600)))


def test_yaml_aliases_to_their_own_node_and_deep_set_values(tmp_path):
    (tmp_path / "s.yaml").write_text("input: &a [1, *a]\nclasses: 2\nlayers: [{type: dense}]\n")
    with pytest.raises(
        S.SpecError, match=r"s.yaml: not valid YAML at line 1 \(an alias refers to the node"
    ):
        S.load_spec(tmp_path / "s.yaml")
    base = _tiny()
    with pytest.raises(
        S.SpecError, match=r"--set .*: the value: not valid YAML .*nested more than 32"
    ):
        S.apply_overrides(base, ["input=" + "[" * 5000 + "]" * 5000])


def test_shared_python_structures_are_never_walked():
    laugh: list = ["x"] * 10
    for _ in range(12):  # 10**13 leaves if anything walked it
        laugh = [laugh] * 10
    for spec, message in [
        ({**_tiny(), "description": laugh}, r"field 'description': expected text, got \[\[\["),
        ({**_tiny(), "name": laugh}, r"field 'name': expected text"),
        (
            _tiny({"type": "conv", "filters": laugh, "kernel": 3}),
            r"field 'filters': expected an integer",
        ),
        (_tiny({"type": laugh}), r"layer 1 \(\[\[\[.*\): unknown layer type"),
        (_tiny({"type": "relu", "name": laugh, "colour": 1}), r"unknown field 'colour'"),
    ]:
        with pytest.raises(S.SpecError, match=message) as err:
            S.build(spec)
        assert len(str(err.value)) < 600 and "\n" not in str(err.value)


def test_unhashable_and_odd_keys_are_spec_errors():
    for layer, message in [
        ({"type": ["conv"]}, "unknown layer type"),
        ({"type": "relu", 3: 1}, "unknown field 3"),
        ({"type": "relu", "repeat": True}, "field 'repeat'"),
    ]:
        with pytest.raises(S.SpecError, match=message):
            S.build(_tiny(layer))
    with pytest.raises(S.SpecError, match=r"field 'input': expected \[C, H, W\]"):
        S.build(_tiny(input=(True, 12, 12)))


# ---------------------------------------------------------------- checkpoints
@pytest.fixture
def ckpt(run_copy):
    return run_copy / "checkpoints" / "best.json"


def _rewrite(ckpt, tensors):
    weights = ckpt.with_suffix(".safetensors")
    save_file(tensors, str(weights))
    meta = json.loads(ckpt.read_text())
    meta["weights_sha256"] = _sha256(weights)
    ckpt.write_text(json.dumps(meta))


def test_checksum_none_means_unrecorded_but_text_must_be_a_digest(ckpt):
    weights = ckpt.with_suffix(".safetensors")
    assert load_tensors(weights, None).keys() == load_file(str(weights)).keys()  # resume state
    assert load_tensors(weights, _sha256(weights))
    for bad in ("", "ab", _sha256(weights).upper(), 12):
        with pytest.raises(CnnlabError, match="is not a SHA-256"):
            load_tensors(weights, bad)


def test_weights_of_the_wrong_shape_or_missing_are_named(ckpt):
    tensors = load_file(str(ckpt.with_suffix(".safetensors")))
    _rewrite(ckpt, {**tensors, "conv1.weight": torch.zeros(4, 1, 5, 5)})
    with pytest.raises(
        CnnlabError,
        match=r"tensor 'conv1.weight' has shape \(4, 1, 5, 5\), the spec needs \(4, 1, 3, 3\)",
    ):
        load_checkpoint(ckpt)
    _rewrite(ckpt, {k: v for k, v in tensors.items() if k != "conv1.bias"})
    with pytest.raises(
        CnnlabError,
        match=r"weights do not fit the spec \(Missing key\(s\) in state_dict: \"conv1.bias\"",
    ):
        load_checkpoint(ckpt)


@pytest.mark.parametrize(
    "fields,message",
    [
        (
            {"history": [{"epoch": 1}]},
            r"field 'history\[0\]': expected a row with the numbers epoch",
        ),
        (
            {"history": [{"epoch": 1, "train_loss": 1, "train_acc": 1, "val_loss": 1}]},
            r"history\[0\]",
        ),
        ({"config": []}, "field 'config': expected a mapping"),
        ({"channels": 3}, "field 'channels'"),
        ({"classes": ["a", "b", "c", "d", "e"]}, "field 'classes': expected 4 names"),
        ({"input_dtype": "float64"}, "field 'input_dtype': expected uint8 or float32"),
        (
            {"input_recipe": {"channels": 1, "size": [12, 12], "pad": [3, 3]}},
            "field 'input_recipe': expected null or",
        ),
        (
            {"input_recipe": {"channels": 1, "size": [-2, 12], "pad": [7, 0]}},
            "field 'input_recipe'",
        ),
        ({"input_recipe": {"channels": 1, "size": "12x12", "pad": [0, 0]}}, "field 'input_recipe'"),
        ({"input_recipe": [1, 2]}, "field 'input_recipe'"),
    ],
)
def test_metadata_fields(ckpt, fields, message):
    meta = json.loads(ckpt.read_text())
    ckpt.write_text(json.dumps({**meta, **fields}))
    with pytest.raises(CnnlabError, match=message):
        load_checkpoint(ckpt)
    for key in ("input_shape", "classes", "weights_sha256"):
        ckpt.write_text(json.dumps({k: v for k, v in meta.items() if k != key}))
        with pytest.raises(CnnlabError, match=f"lacks '{key}'"):
            load_checkpoint(ckpt)


def test_json_the_parser_cannot_convert(tmp_path):
    (tmp_path / "m.json").write_text('{"epoch": ' + "9" * 5000 + "}")
    with pytest.raises(CnnlabError, match=r"m.json: corrupt checkpoint metadata"):
        read_json(tmp_path / "m.json")
