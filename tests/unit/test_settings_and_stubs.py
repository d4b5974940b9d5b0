"""Settings validation, generated stubs, and the gateway's runtime without PyTorch (the other
layers: test_layers.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from samserve.gateway.settings import Settings, redact_url

ROOT = Path(__file__).resolve().parents[2]


def test_settings_read_samserve_env(monkeypatch):
    monkeypatch.setenv("SAMSERVE_PORT", "6000")
    monkeypatch.setenv("SAMSERVE_REDIS_URL", "redis://example:1/2")
    s = Settings()
    assert s.port == 6000 and s.redis_url == "redis://example:1/2"


@pytest.mark.parametrize(
    "field, value",
    [
        ("port", 70000),
        ("max_image_pixels", 0),
        ("triton_url", "nohostport"),
        ("checkpoint", "/nonexistent.pth"),
    ],
)
def test_invalid_settings_fail_at_start(field, value):
    with pytest.raises(ValidationError, match=field if field != "triton_url" else "host:port"):
        Settings(**{field: value})


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:pa55word@cache:6379/0", "redis://***@cache:6379/0"),
        ("rediss://admin:pa55word@[::1]:6380/2", "rediss://***@[::1]:6380/2"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("redis://cache:6379/0?password=pa55word&db=1", "redis://cache:6379/0?password=***&db=1"),
        (None, None),
    ],
    ids=["password", "user_and_password_ipv6", "no_credentials", "query_password", "unset"],
)
def test_redact_url_hides_credentials(url, shown):
    assert redact_url(url) == shown


def test_invalid_settings_do_not_echo_a_redis_password():
    with pytest.raises(ValidationError) as err:
        Settings(redis_url="http://:pa55word@cache:6379/0")
    assert "pa55word" not in str(err.value) and "***@cache" in str(err.value)
    with pytest.raises(ValidationError) as err:  # another field's error, the URL valid
        Settings(redis_url="redis://:pa55word@cache:6379/0", port=70000)
    assert "pa55word" not in str(err.value)


def test_generated_stubs_are_current():
    r = subprocess.run([sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_gateway_runtime_imports_neither_torch_nor_the_reference():
    code = (
        "import sys, samserve.gateway.app, samserve.client.cli, samserve.client, samserve.devtools.local_servers;"
        "bad = [m for m in ('torch', 'segment_anything', 'onnxruntime') if m in sys.modules];"
        "assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("sam=/ckpt/sam_vit_b_01ec64.pth", ("sam", "/ckpt/sam_vit_b_01ec64.pth", "vit_b")),
        ("mobile=/ckpt/mobile_sam.pt", ("mobile", "/ckpt/mobile_sam.pt", "vit_t")),
        ("shapes=models/x.pth:small", ("shapes", "models/x.pth", "small")),
        ("h2=C:/weights/model:vit_h", ("h2", "C:/weights/model", "vit_h")),
    ],
    ids=["meta_name", "mobile_sam_name", "explicit_type", "colon_in_path"],
)
def test_model_specs_parse(spec, expected):
    from samserve.contract import parse_model_spec

    name, path, model_type = parse_model_spec(spec)
    assert (name, str(path), model_type) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("noequals.pth", "expected NAME=CHECKPOINT"),
        ("Bad_Name=x.pth:vit_b", "NAME matching"),
        ("sam=weights.pth", "add :TYPE"),
    ],
)
def test_bad_model_specs_say_what_is_expected(spec, message):
    from samserve.contract import parse_model_spec

    with pytest.raises(ValueError, match=message):
        parse_model_spec(spec)


def test_models_settings_are_validated_at_start(tmp_path):
    ckpt = tmp_path / "mobile_sam.pt"
    ckpt.write_bytes(b"x")
    assert Settings(models=[f"mobile={ckpt}"]).models == [f"mobile={ckpt}"]
    with pytest.raises(ValidationError, match="does not exist"):
        Settings(models=["mobile=/nonexistent/mobile_sam.pt"])
    with pytest.raises(ValidationError, match="names must differ"):
        Settings(models=[f"a={ckpt}", f"a={ckpt}"])
