"""docs/configuration.md is generated from the typed configs: it must match what the generator
writes from the code as it is now (a field added, renamed or re-described shows up here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "scripts" / "gen_config_reference.py"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_reference_is_current() -> None:
    generator = _generator()
    expected = generator.render()
    current = generator.OUT.read_text(encoding="utf-8")
    assert current == expected, (
        "docs/configuration.md is out of date with the config classes: "
        "run python scripts/gen_config_reference.py and commit the result"
    )


def test_every_registered_model_and_service_field_is_documented() -> None:
    from kinrec.models.registry import available_models, get_model_class
    from kinrec.serving.config import ServingConfig

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name in available_models():
        assert f"### `{name}`" in text, name
        for field in get_model_class(name).Config.model_fields:
            assert f"| `{field}` |" in text, f"{name}.{field}"
    for field in ServingConfig.model_fields:
        assert f"| `{field}` |" in text, field
