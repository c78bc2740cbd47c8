"""Config loading: both bundled profiles load; bad values name the culprit key."""

from __future__ import annotations

import tomllib

import pytest

from kernels.config import CONFIG_DIR, ConfigError, load_config, parse_config


def _raw(name: str) -> dict:
    return tomllib.loads((CONFIG_DIR / f"{name}.toml").read_text())


def test_profiles_have_their_shapes(siat_config, uci_config):
    assert (siat_config.stream.n_channels, siat_config.stream.fs, siat_config.targets.n_targets) == (9, 1920.0, 16)
    assert (uci_config.stream.n_channels, uci_config.stream.fs, uci_config.targets.n_targets) == (4, 1000.0, 1)
    assert siat_config.n_features == 54


def test_round_trip_through_dict(siat_config):
    assert parse_config(siat_config.to_dict()) == siat_config


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d["frontend"]["bandpass"].__setitem__("colour", 1), "frontend.bandpass.colour"),
        (lambda d: d["stream"].__setitem__("fs", "fast"), "stream.fs"),
        (lambda d: d["frontend"]["window"].__setitem__("hop", 50.5), "frontend.window.hop"),
        (lambda d: d["frontend"]["bandpass"].__setitem__("high_hz", 960.0), "frontend.bandpass.high_hz"),
        (lambda d: d["frontend"]["window"].__setitem__("hop", 200), "frontend.window.hop"),
        (lambda d: d["targets"]["units"].pop(), "targets.units"),
        (lambda d: d["controller"]["rate"].pop(), "controller.rate"),
        (lambda d: d["stream"].pop("fs"), "stream.fs"),
        (lambda d: d["model"].__setitem__("arch", "transformer"), "model.arch"),
        (lambda d: d["frontend"]["wavelet"].__setitem__("wavelet", "db99"), "frontend.wavelet.wavelet"),
        (lambda d: d["frontend"]["wavelet"].__setitem__("level", 9), "frontend.wavelet.level"),
    ],
)
def test_bad_values_name_the_key(edit, key):
    data = _raw("siat_llmd")
    edit(data)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
        parse_config(data)


def test_nyquist_depends_on_the_profile_rate():
    data = _raw("uci_lower_limb")
    data["frontend"]["bandpass"]["high_hz"] = 500.0  # Nyquist at 1000 Hz
    with pytest.raises(ConfigError, match="Nyquist"):
        parse_config(data)


def test_unknown_profile_lists_the_bundled_ones():
    with pytest.raises(ConfigError, match="siat_llmd"):
        load_config("no_such_profile")


def test_malformed_toml_names_the_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[stream\nfs = 1")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(p)
