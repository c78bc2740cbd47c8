"""Plain bad input to the real CLI (a subprocess each): one line naming what was wrong, exit 2,
never a traceback; and nothing already recorded is lost on the way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
import zipfile

import numpy as np
import pytest

from rt.player import Player
from rt.recordings import load_recording
from tests.loop_helpers import random_bundle
from tests.recording_helpers import uci_map_rows, uci_rows, uci_text


def _cli(*args: str, timeout: float = 120) -> tuple[int, list[str]]:
    """Exit status and the stderr lines of ``exoloop ARGS`` (liblsl's own log lines left out)."""
    p = subprocess.run([sys.executable, "-m", "rt.cli", *args], capture_output=True, text=True, timeout=timeout,
                       env=os.environ.copy())
    return p.returncode, [ln for ln in p.stderr.splitlines() if ln.strip() and "INFO|" not in ln]


def _one_error(rc: int, lines: list[str], command: str, *needles: str) -> None:
    assert rc == 2, lines
    assert not any("Traceback" in ln for ln in lines), "\n".join(lines)
    errors = [ln for ln in lines if ln.startswith(f"exoloop {command}")]
    assert len(errors) == 1, lines
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, uci_config):
    return random_bundle(tmp_path_factory.mktemp("b") / "ok.exo", uci_config)


@pytest.fixture(scope="module")
def list_manifest(tmp_path_factory):
    path = tmp_path_factory.mktemp("b") / "list.exo"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("manifest.json", json.dumps(["not", "a", "manifest"]))
    return path


def test_record_missing_stream_and_existing_out(tmp_path):
    name = f"nosuch-{uuid.uuid4().hex[:8]}"
    _one_error(*_cli("record", "--name", name, "--out", str(tmp_path / "r.exorec"), "--timeout", "0.3", "--quiet"),
               "record", f"no LSL stream with name {name!r}")
    assert not (tmp_path / "r.exorec").exists()
    old = tmp_path / "old.exorec"
    old.write_bytes(b"an earlier recording")
    _one_error(*_cli("record", "--name", name, "--out", str(old), "--timeout", "0.3", "--quiet"),
               "record", f"{old}: exists", "--overwrite")
    _one_error(*_cli("record", "--name", name, "--out", str(old), "--overwrite", "--timeout", "0.3", "--quiet"),
               "record", "no LSL stream")
    assert old.read_bytes() == b"an earlier recording"  # the stream was not found: nothing removed
    _one_error(*_cli("record", "--name", name, "--out", str(tmp_path), "--quiet"), "record", "is a directory")
    _one_error(*_cli("record", "--name", name, "--out", str(tmp_path / "x"), "--timeout", "-1"),
               "record", "--timeout", "> 0")


def test_record_overwrite_replaces_once_the_stream_is_found(tmp_path, uci_files, uci_config):
    rec = load_recording(uci_files[0], config=uci_config)
    name = f"ow-{uuid.uuid4().hex[:8]}"
    old = tmp_path / "old.exorec"
    old.write_bytes(b"an earlier recording")
    stop = threading.Event()
    player = Player(rec, name, loop=True)
    th = threading.Thread(target=player.run, kwargs={"stop": stop}, daemon=True)
    th.start()
    try:
        rc, lines = _cli("record", "--name", name, "--out", str(old), "--overwrite", "--duration", "0.5", "--quiet")
    finally:
        stop.set()
        th.join(5)
        player.close()
    assert rc == 0, lines
    assert load_recording(old).n_samples > 100


def test_bundle_whose_manifest_is_a_json_list(tmp_path, uci_files, list_manifest):
    for args, command in ((["evaluate", str(list_manifest), str(uci_files[0])], "evaluate"),
                          (["replay", str(uci_files[0]), "--model", str(list_manifest)], "replay")):
        _one_error(*_cli(*args), command, f"{list_manifest}: manifest.json is not a bundle manifest", "JSON list")


def test_recording_without_any_target_value_is_an_error_naming_it(tmp_path, bundle):
    rows = uci_rows(200)
    p = tmp_path / "no_angle.txt"
    p.write_text(uci_map_rows(uci_text(rows), lambda cells: cells[:4] + [""]))  # the angle column empty
    assert np.isnan(load_recording(p).targets).all()
    out = tmp_path / "m.json"
    _one_error(*_cli("evaluate", str(bundle), str(p), "--json", str(out)), "evaluate",
               f"{p}: no target value in any sample")
    assert not out.exists()
    _one_error(*_cli("train", str(p), str(p), "--config", "uci_lower_limb", "--out", str(tmp_path / "m.exo")),
               "train", f"{p}: no target value in any sample")


def test_evaluate_with_no_frame_to_score_is_an_error(tmp_path, bundle):
    """Targets present, but the recording (0.3 s) ends before the front end's warm-up: no frame
    can be scored, so no metric (it would be NaN)."""
    p = tmp_path / "short.txt"
    p.write_text(uci_text(uci_rows(300)))
    _one_error(*_cli("evaluate", str(bundle), str(p)), "evaluate", "no frame to score target(s) knee_flexion in short")


@pytest.mark.parametrize("args, needle", [
    (["--chunk", "0"], "argument --chunk"),
    (["--speed", "nan"], "argument --speed"),
    (["--speed", "-1"], "argument --speed"),
    (["--config", "no_such_profile"], "no_such_profile"),
])
def test_play_bad_arguments(uci_files, args, needle):
    _one_error(*_cli("play", str(uci_files[0]), "--name", "x", "--quiet", *args), "play", needle)


def test_plain_bad_input_to_every_recording_command(tmp_path, uci_files, bundle):
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\n")
    missing = tmp_path / "missing.txt"
    rec = str(uci_files[0])
    for args, command, needle in [
        (["play", str(missing), "--name", "x"], "play", "no such file"),
        (["play", str(junk), "--name", "x"], "play", "unknown recording format"),
        (["replay", str(missing), "--model", str(bundle)], "replay", "no such file"),
        (["replay", rec, "--model", str(junk)], "replay", "unreadable model bundle"),
        (["replay", rec, "--model", str(bundle), "--config", "siat_llmd"], "replay", "does not match"),
        (["features", str(junk), "--config", "uci_lower_limb", "--out", str(tmp_path / "f.npz")], "features",
         "unknown recording format"),
        (["features", rec, "--config", "uci_lower_limb", "--out", str(tmp_path / "f.npz"), "--stats", str(junk)],
         "features", "cannot read norm stats"),
        (["evaluate", str(bundle), str(missing)], "evaluate", "no such file"),
        (["train", str(junk), "--config", "uci_lower_limb", "--out", str(tmp_path / "m.exo")], "train",
         "unknown recording format"),
        (["run", "--name", "x", "--model", str(missing), "--no-forecaster"], "run", "not found"),
        (["run", "--name", "x", "--model", str(bundle), "--resolve-timeout", "-1"], "run", "--resolve-timeout"),
    ]:
        _one_error(*_cli(*args), command, needle)


def test_damaged_exorec_is_read_with_a_warning(tmp_path, uci_files, uci_config):
    """A command reading a damaged .exorec goes on with the intact blocks and prints the
    damaged block's offset (a logged warning), exit 0."""
    from bench.synth import write_recording

    rec = load_recording(uci_files[0], config=uci_config)
    path = write_recording(tmp_path / "r.exorec", uci_config, rec.samples[:5000], rec.targets[:5000])
    data = bytearray(path.read_bytes())
    third = [i for i in range(len(data)) if data[i:i + 4] == b"BLK2"][2]
    data[third + 100] ^= 0x55
    path.write_bytes(bytes(data))
    rc, lines = _cli("features", str(path), "--config", "uci_lower_limb", "--out", str(tmp_path / "f.npz"))
    assert rc == 0, lines
    assert any(f"r.exorec: byte {third}: corrupt block (payload CRC mismatch)" in ln for ln in lines), lines
    assert not any("Traceback" in ln for ln in lines)
