"""Registry validation: a registry naming unknown things is rejected with the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from anju.errors import ConfigError, RegistryError
from anju.registry import CityIndex, load_registry, sample_registry_path

DATA = Path(__file__).parent / "data"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "city.yaml"
    p.write_text(text, encoding="utf-8")
    return p


GOOD = (DATA / "city.yaml").read_text(encoding="utf-8")


def test_the_test_city_and_the_sample_city_load() -> None:
    city = CityIndex(load_registry(DATA / "city.yaml"))
    assert city.devices["jx-nh-0001-elev-03"].maintenance_org == "org-otis-jx"
    assert city.devices["jx-nh-0001-elev-03"].district == "330402"
    sample = CityIndex(load_registry(sample_registry_path()))
    assert len(sample.communities) >= 3


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('district: "330411"', 'district: "330499"', "unknown district '330499'"),
        ("property: org-vanke-jx", "property: org-nobody", "unknown property organisation"),
        ("gateway: gw-jx-xz-0001-a, building", "gateway: gw-nowhere, building", "unknown gateway"),
        (
            "kind: smoke_detector, gateway: gw-jx-xz",
            "kind: toaster, gateway: gw-jx-xz",
            "unknown device kind 'toaster'",
        ),
        (
            "maintenance: org-otis-jx,",
            "maintenance: org-greentown-jx,",
            "unknown maintenance organisation",
        ),
    ],
)
def test_unknown_references_name_the_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    with pytest.raises(RegistryError) as err:
        load_registry(_write(tmp_path, text))
    line = _line_of(text, new)
    assert message in str(err.value)
    assert f"city.yaml:{line}:" in str(err.value)


def test_duplicate_device_and_unknown_key(tmp_path: Path) -> None:
    text = GOOD.replace("jx-nh-0001-smoke-3-0801", "jx-nh-0001-smoke-3-1201")
    with pytest.raises(RegistryError, match="listed twice"):
        load_registry(_write(tmp_path, text))
    text = GOOD.replace("    street: 南湖街道\n", "    stret: 南湖街道\n")
    with pytest.raises(RegistryError) as err:
        load_registry(_write(tmp_path, text))
    assert f"city.yaml:{_line_of(text, 'stret')}:" in str(err.value)
    assert "stret" in str(err.value)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_registry(_write(tmp_path, "districts: [\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_registry(tmp_path / "nope.yaml")
