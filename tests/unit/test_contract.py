"""samserve/contract.py is what the checked-in Triton configs and the build say: tensor names,
model names and config parameters agree everywhere."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from samserve import contract
from samserve.contract import ModelInfo

ROOT = Path(__file__).resolve().parents[2]


def tensors(config: Path) -> tuple[str, list[str], list[str]]:
    """(model name, input names, output names) of a config.pbtxt, in order."""
    text = config.read_text()
    name = re.search(r'^name: "([^"]+)"', text, re.M).group(1)

    def block(kind: str) -> list[str]:
        m = re.search(rf"^{kind} \[(.*?)^\]", text, re.M | re.S)
        return re.findall(r'name: "([^"]+)"', m.group(1))

    return name, block("input"), block("output")


EXPECTED = {
    "sam_encoder": (contract.ENCODER, [contract.ENCODER_INPUT], [*contract.ENCODER_OUTPUTS, contract.RUNTIME]),
    "sam_decoder": (
        contract.DECODER,
        list(contract.DECODER_REQUEST_INPUTS),
        [*contract.DECODER_OUTPUTS, contract.RUNTIME],
    ),
    "sam_amg_generate": (contract.AMG_GENERATE, list(contract.AMG_INPUTS), list(contract.AMG_OUTPUTS)),
}


@pytest.mark.parametrize("folder", list(EXPECTED))
def test_checked_in_configs_use_the_contracts_names(folder):
    name, inputs, outputs = tensors(ROOT / "model_repository" / folder / "config.pbtxt")
    assert (name, inputs, outputs) == EXPECTED[folder]


def test_the_amg_ensemble_maps_the_contracts_names():
    name, inputs, outputs = tensors(ROOT / "model_repository" / "sam_amg" / "config.pbtxt")
    assert name == contract.AMG
    assert inputs == [contract.ENCODER_INPUT, *contract.AMG_INPUTS[1:-1]]  # model_id comes from the encoder
    assert outputs == [*contract.AMG_OUTPUTS, *contract.ENCODER_OUTPUTS]


def test_model_info_round_trips_through_config_parameters():
    info = ModelInfo("vit_b-0123456789abcdef", "vit_b", 1024, np.array([1.5, 2, 3], np.float32), np.ones(3), 0.25)
    back = ModelInfo.from_parameters(info.to_parameters())
    assert back.model_id == info.model_id and back.img_size == 1024 and back.mask_threshold == 0.25
    np.testing.assert_array_equal(back.pixel_mean, info.pixel_mean)
    config = {"parameters": {k: {"string_value": v} for k, v in info.to_parameters().items()}}
    assert contract.config_parameters(config) == info.to_parameters()


def test_missing_parameters_name_what_is_missing():
    with pytest.raises(KeyError, match="img_size"):
        ModelInfo.from_parameters({"model_id": "x", "pixel_mean": "[0,0,0]", "pixel_std": "[1,1,1]"})


def test_model_ids_and_cache_keys():
    assert contract.model_id("vit_h", "ab" * 32) == "vit_h-" + "ab" * 8
    key = contract.cache_key("vit_h-x", "1", "cd" * 32)
    assert key == f"samserve:emb:vit_h-x:1:{'cd' * 32}" and contract.lock_key(key) == key + ":lock"
