"""Export and verification: ONNX equals PyTorch, and a wrong model fails the build loudly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from build_engines.export_onnx import export_decoder
from build_engines.models import build_small_sam, load_checkpoint, state_dict_digest
from build_engines.verify import VerificationError, verify_decoder


def test_repository_has_configs_models_and_parameters(model_repository, served_model_id):
    info = json.loads((model_repository / "build_info.json").read_text())
    assert info["model_id"] == served_model_id and info["img_size"] == "256"
    assert info["verification"]["encoder_max_abs_diff"] < 1e-3
    for name in ("sam_encoder", "sam_decoder"):
        assert (model_repository / name / "1" / "model.onnx").stat().st_size > 0
        config = (model_repository / name / "config.pbtxt").read_text()
        assert f'string_value: "{served_model_id}"' in config


def test_verification_fails_past_tolerance(tmp_path):
    loaded = build_small_sam(seed=3)
    path = export_decoder(loaded.sam, tmp_path / "decoder.onnx")
    with torch.no_grad():
        loaded.sam.mask_decoder.iou_prediction_head.layers[-1].bias.add_(0.5)  # PyTorch now disagrees
    with pytest.raises(VerificationError, match="decoder"):
        verify_decoder(loaded.sam, path)


def test_model_id_follows_the_weights():
    a, b, c = build_small_sam(seed=0), build_small_sam(seed=0), build_small_sam(seed=1)
    assert a.model_id == b.model_id != c.model_id
    assert a.model_id == f"small-{state_dict_digest(a.sam)[:16]}"


def test_cpu_and_gpu_repositories_of_one_checkpoint_serve_under_different_ids(small_sam):
    """One Redis shared by a CPU (FP32 ONNX) and a GPU (FP16 TensorRT) deployment of the same
    weights: their embeddings differ, so their ids (and so their cache keys) must."""
    from build_engines.repository import model_parameters
    from samserve.contract import cache_key

    cpu, gpu = (model_parameters(small_sam, target)["model_id"] for target in ("cpu", "gpu"))
    assert cpu == f"{small_sam.model_id}-cpu-fp32" and gpu == f"{small_sam.model_id}-gpu-fp16"
    assert cache_key(cpu, "1", "ab" * 32) != cache_key(gpu, "1", "ab" * 32)


def test_checkpoint_loads_through_the_reference_registry(tmp_path):
    """The path real checkpoints take: a vit_b state_dict on disk, loaded by sam_model_registry."""
    from segment_anything import sam_model_registry

    sam = sam_model_registry["vit_b"]()
    path = tmp_path / "sam_vit_b.pth"
    torch.save(sam.state_dict(), path)
    loaded = load_checkpoint(path, "vit_b")
    assert loaded.img_size == 1024 and loaded.model_id.startswith("vit_b-") and not loaded.random_weights
    with pytest.raises(ValueError, match="model_type"):
        load_checkpoint(path, "vit_x")


def test_a_repository_of_another_layout_is_stale_and_the_current_one_is_kept(model_repository, tmp_path):
    """A deployment upgraded to this version must not serve a repository built for the last
    one (whose models neither return nor check model ids): --if-stale rebuilds only those."""
    from build_engines.repository import BUILD_INFO, is_current
    from samserve.contract import REPOSITORY_LAYOUT

    assert json.loads((model_repository / BUILD_INFO).read_text())["repository_layout"] == REPOSITORY_LAYOUT
    assert is_current(model_repository)
    old = tmp_path / "old"
    old.mkdir()
    (old / BUILD_INFO).write_text(json.dumps({"target": "gpu", "model_id": "vit_b-0123"}))  # layout 1: no field
    assert not is_current(old) and not is_current(tmp_path / "missing")
    # a repository whose inputs are not recorded (built by hand, or by an older version) is stale
    # for --if-stale; the next test shows a current one kept
    assert is_current(model_repository) and not is_current(model_repository, "0" * 64)


def test_serve_builds_one_repository_for_several_models_and_reuses_it(small_sam, tmp_path):
    """`samserve serve --model shapes=...:small --model mobile=mobile_sam.pt`: every model's set
    under its prefix, built once, the first the default."""
    from build_engines.models import build_mobile_sam, save_small_checkpoint
    from build_engines.repository import is_complete
    from samserve.client.cli import _prepare_models_repository
    from samserve.contract import config_parameters

    save_small_checkpoint(small_sam.sam.state_dict(), tmp_path / "shapes.pth")
    torch.save(build_mobile_sam(seed=1).sam.state_dict(), tmp_path / "mobile_sam.pt")
    specs = [f"shapes={tmp_path / 'shapes.pth'}:small", f"mobile={tmp_path / 'mobile_sam.pt'}"]
    repo = _prepare_models_repository(specs, tmp_path / "repos")
    assert is_complete(repo)
    assert {p.name for p in repo.iterdir() if p.is_dir()} >= {"shapes__sam_encoder", "mobile__sam_amg"}
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = text_format.Parse((repo / "mobile__sam_encoder" / "config.pbtxt").read_text(), mc.ModelConfig())
    params = config_parameters(json_format.MessageToDict(config, preserving_proto_field_name=True))
    assert config.name == "mobile__sam_encoder"
    assert (params["served_name"], params["model_prefix"], params["default_model"]) == ("mobile", "mobile__", "false")
    ensemble = (repo / "shapes__sam_amg" / "config.pbtxt").read_text()
    assert 'model_name: "shapes__sam_encoder"' in ensemble and 'model_name: "shapes__sam_amg_generate"' in ensemble
    mtime = (repo / "build_info.json").stat().st_mtime_ns
    assert _prepare_models_repository(specs, tmp_path / "repos") == repo
    assert (repo / "build_info.json").stat().st_mtime_ns == mtime  # reused, not rebuilt


def test_build_engines_takes_a_models_file_with_several_families(small_sam, tmp_path):
    """What the Kubernetes init container runs with the models ConfigMap: a SAM and a SAM 2.1
    checkpoint (sam2.1_hiera_*.pt layout) in one repository, the first the default."""
    from build_engines.__main__ import main
    from build_engines.models import save_small_checkpoint
    from build_engines.repository import BUILD_INFO, is_complete
    from build_engines.sam2_models import build_sam2_model, save_sam2_checkpoint

    save_small_checkpoint(small_sam.sam.state_dict(), tmp_path / "shapes.pth")
    save_sam2_checkpoint(build_sam2_model("sam2.1_scaled", seed=3), tmp_path / "tiny2.pt")
    models = tmp_path / "models.txt"
    models.write_text(
        f"# the default first\nshapes={tmp_path / 'shapes.pth'}:small\n\ns2={tmp_path / 'tiny2.pt'}:sam2.1_scaled\n"
    )
    main(["--out", str(tmp_path / "repo"), "--models-file", str(models)])
    assert is_complete(tmp_path / "repo")
    info = json.loads((tmp_path / "repo" / BUILD_INFO).read_text())["models"]
    assert (info["shapes"]["family"], info["s2"]["family"]) == ("sam", "sam2")
    assert (info["shapes"]["default_model"], info["s2"]["default_model"]) == ("true", "false")
    assert "dims: [ 1024, -1, -1 ]" in (tmp_path / "repo" / "s2__sam_decoder" / "config.pbtxt").read_text()


def test_a_bad_models_file_names_its_line(tmp_path):
    from samserve.contract import read_models_file

    bad = tmp_path / "models.txt"
    bad.write_text("a=/m/sam_vit_b_01ec64.pth\nb=/m/unknown.pt\n")
    with pytest.raises(ValueError, match=r"models.txt:2: model 'b=/m/unknown.pt': add :TYPE"):
        read_models_file(bad)
    bad.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no models"):
        read_models_file(bad)
    bad.write_text("big=/m/sam2.1_hiera_large.pt\n")
    assert read_models_file(bad) == ["big=/m/sam2.1_hiera_large.pt"]


def test_if_stale_keys_on_the_checkpoints_bytes_and_concurrent_builders_take_turns(small_sam, tmp_path, caplog):
    """Issue 34 #8: the repository directory and --if-stale key on the checkpoints' contents, so
    a checkpoint replaced in place is built anew; two builders of one directory on one node
    (two init containers on a hostPath) take turns: one builds, the other finds it current."""
    import logging
    import threading

    from build_engines.__main__ import main
    from build_engines.models import build_small_sam, save_small_checkpoint
    from build_engines.repository import built_inputs, is_complete

    checkpoint = tmp_path / "shapes.pth"
    save_small_checkpoint(small_sam.sam.state_dict(), checkpoint)
    models = tmp_path / "models.txt"
    models.write_text(f"shapes={checkpoint}:small\n")
    engines = tmp_path / "engines"
    args = ["--if-stale", "--keyed-out", str(engines), "--models-file", str(models)]
    errors: list[BaseException] = []

    def build(path_file: str) -> None:
        try:
            main([*args, "--path-file", str(tmp_path / path_file)])
        except BaseException as exc:  # reported below
            errors.append(exc)

    with caplog.at_level(logging.INFO, logger="build_engines"):
        builders = [threading.Thread(target=build, args=(f"path-{i}",), daemon=True) for i in range(2)]
        for b in builders:
            b.start()
        for b in builders:
            b.join(600)
    assert not errors, errors
    first = Path((tmp_path / "path-0").read_text().strip())
    assert first == Path((tmp_path / "path-1").read_text().strip()) and first.parent == engines
    assert is_complete(first)
    assert caplog.text.count("is current") == 1  # the second found the first's work
    assert not [p.name for p in engines.iterdir() if ".partial-" in p.name or ".old-" in p.name]

    # the same file name, other bytes (a checkpoint replaced in place): another directory
    save_small_checkpoint(build_small_sam(img_size=256, seed=7).sam.state_dict(), checkpoint)
    main([*args, "--path-file", str(tmp_path / "path-2")])
    second = Path((tmp_path / "path-2").read_text().strip())
    assert second != first and is_complete(second) and built_inputs(second) != built_inputs(first)
    # and a fixed --out built from the old bytes is stale for --if-stale
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="build_engines"):
        main(["--if-stale", "--out", str(first), "--models-file", str(models)])
    assert "is current" not in caplog.text and built_inputs(first) == built_inputs(second)


def test_a_failed_build_leaves_no_partial_directory(tmp_path):
    from build_engines.repository import write_cpu_repository

    out = tmp_path / "engines" / "repo"
    with pytest.raises(VerificationError):
        write_cpu_repository(build_small_sam(seed=4), out, tolerance=-1.0)  # no export can pass
    assert list(out.parent.iterdir()) == []
