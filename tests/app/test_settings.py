"""Settings come from FLYWHEEL_* variables; bad values are refused with the variable's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings, SettingsError


def test_defaults_and_overrides() -> None:
    assert Settings.from_env({}) == Settings()
    settings = Settings.from_env(
        {
            "FLYWHEEL_DATA_DIR": "/srv/lake",
            "FLYWHEEL_PROJECT": "checkout",
            "FLYWHEEL_DASHBOARD_PORT": "9000",
        }
    )
    assert (settings.data_dir, settings.project, settings.dashboard_port) == (
        Path("/srv/lake"),
        "checkout",
        9000,
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FLYWHEEL_PROJECT": "has space"}, "FLYWHEEL_PROJECT"),
        ({"FLYWHEEL_DASHBOARD_PORT": "http"}, "FLYWHEEL_DASHBOARD_PORT='http': not a port number"),
        ({"FLYWHEEL_DASHBOARD_PORT": "70000"}, "a port is 1-65535"),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environ)


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "lake"
    file.write_text("")
    with pytest.raises(SettingsError, match="is not a folder"):
        Settings.from_env({"FLYWHEEL_DATA_DIR": str(file)})
