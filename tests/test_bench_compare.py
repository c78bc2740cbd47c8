"""bench.compare: regression detection over two real reports written by bench.report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.compare import compare, load_report, main
from bench.report import result, write_report


def _report(path, step_us: float, loop_ms: float, throughput: float, extra: bool = False):
    rng = np.random.default_rng(0)
    res = [
        result("step", "siat_llmd", "step_us", "us", step_us * (1 + 0.01 * rng.random(100)),
               baseline=("eager", 20 * step_us * np.ones(10))),
        result("loop", "idle", "e2e_ms", "ms", loop_ms * np.ones(50)),
        result("loop", "replay", "throughput", "x", [throughput]),
    ]
    if extra:
        res.append(result("loop", "new_case", "e2e_ms", "ms", [1.0]))
    write_report(res, path)
    return path


def test_no_regression_exit_0(tmp_path, capsys):
    old = _report(tmp_path / "old.json", 10.0, 0.5, 300.0)
    new = _report(tmp_path / "new.json", 11.0, 0.55, 280.0, extra=True)
    assert main([str(old), str(new), "--factor", "1.2"]) == 0
    out = capsys.readouterr().out
    assert "3 figures compared, 0 worse than 1.2×" in out
    assert "REGRESSED" not in out


@pytest.mark.parametrize("which", ["time", "throughput"])
def test_regression_exit_1_both_directions(tmp_path, capsys, which):
    old = _report(tmp_path / "old.json", 10.0, 0.5, 300.0)
    new = _report(tmp_path / "new.json", 10.0 if which == "throughput" else 30.0, 0.5,
                  100.0 if which == "throughput" else 300.0)
    assert main([str(old), str(new), "--factor", "1.5"]) == 1
    out = capsys.readouterr().out
    bad = [ln for ln in out.splitlines() if "REGRESSED" in ln]
    assert len(bad) == 1 and ("throughput" in bad[0] if which == "throughput" else "step_us" in bad[0])
    rows = compare(load_report(old), load_report(new), 1.5)
    worst = max(rows, key=lambda r: r.worse_by)
    assert worst.worse_by == pytest.approx(3.0, rel=0.02)


def test_p99_is_compared_on_request(tmp_path):
    old = _report(tmp_path / "old.json", 10.0, 0.5, 300.0)
    data = json.loads(old.read_text())
    data["results"][1]["p99"] *= 10  # only the tail got worse
    new = tmp_path / "new.json"
    new.write_text(json.dumps(data))
    assert main([str(old), str(new)]) == 0
    assert main([str(old), str(new), "--stats", "p50,p99"]) == 1


def test_bad_input_exit_2_names_the_file(tmp_path, capsys):
    good = _report(tmp_path / "old.json", 10.0, 0.5, 300.0)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main([str(good), str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err
    other = tmp_path / "other.json"
    write_report([result("x", "y", "z", "us", [1.0])], other)
    assert main([str(good), str(other)]) == 2
    assert "no figure in common" in capsys.readouterr().err
    with pytest.raises(ValueError, match="factor"):
        compare({}, {}, 0.5)
