"""What runs when the user does not say: `--calib` switches criterion, scope, recovery and the per-group
cap to the data-aware defaults (docs/benchmarks.md, "Defaults that use the data"); every flag overrides
them. And a warning met on the way never turns a failure's one-line error into two lines."""

from __future__ import annotations

import json
import logging

import pytest

from conftest import FIXTURES
from onnxprune import options as options_module
from onnxprune import progress
from onnxprune.cli.exits import run
from onnxprune.cli.main import main
from onnxprune.errors import BadInputError
from onnxprune.options import PruneOptions, Target

DIGITS = FIXTURES / "digits_cnn.onnx"
CALIB = FIXTURES / "digits_calib.npz"
RESOLVED = ("criterion", "scope", "recover", "max_layer_ratio")


def _resolved(has_data: bool, **given) -> tuple:
    options = PruneOptions(target=Target(macs=0.5), **given).resolved(has_data)
    return tuple(getattr(options, name) for name in RESOLVED)


def test_data_changes_the_defaults():
    assert _resolved(True) == ("fisher_comp_ordered", "auto", "sequential", 0.5)
    assert _resolved(False) == ("l2", "local", "none", 0.9)


def test_mild_targets_probe_squashed_outputs_as_logits():
    # above VIEWS_BELOW of the MACs (no views) fisher probes sigmoid/softmax outputs as logits; at and
    # below it fisher_comp_ordered (with views), for targets whose share is unknown (latency) plain fisher;
    # a given criterion wins
    mild = options_module.VIEWS_BELOW + 0.1
    resolved = PruneOptions(target=Target(macs=mild)).resolved(True)
    assert (resolved.criterion, resolved.calib_views, resolved.max_layer_ratio) == ("fisher_logit", 1, 0.5)
    assert PruneOptions(target=Target(ratio=0.1)).resolved(True).criterion == "fisher_logit"  # keeps ~0.81
    deep = PruneOptions(target=Target(macs=options_module.VIEWS_BELOW)).resolved(True)
    assert (deep.criterion, deep.calib_views) == ("fisher_comp_ordered", options_module.DEFAULT_VIEWS)
    assert PruneOptions(target=Target(latency=0.9)).resolved(True).criterion == "fisher"
    assert PruneOptions(target=Target(macs=mild), criterion="fisher").resolved(True).criterion == "fisher"
    assert PruneOptions(target=Target(macs=mild)).resolved(False).criterion == "l2"
    heavy = options_module.FISHER_MAX_BYTES + 1
    assert PruneOptions(target=Target(macs=mild)).resolved(True, heavy).criterion == "reconstruction"


def test_given_options_win_and_the_cap_follows_the_criterion():
    # a criterion other than fisher keeps the cap it was measured with; a given cap is kept as given
    assert _resolved(True, criterion="reconstruction") == ("reconstruction", "auto", "sequential", 0.9)
    assert _resolved(True, criterion="fisher_recon") == ("fisher_recon", "auto", "sequential", 0.5)
    assert _resolved(True, max_layer_ratio=0.7) == ("fisher_comp_ordered", "auto", "sequential", 0.7)
    assert _resolved(True, scope="blend") == ("fisher_comp_ordered", "blend", "sequential", 0.5)
    assert _resolved(True, criterion="fisher_parts") == ("fisher_parts", "auto", "sequential", 0.5)
    assert PruneOptions(target=Target(latency=0.5)).resolved(True).scope == "global"  # a latency target
    assert _resolved(False, max_layer_ratio=0.3, scope="global") == ("l2", "global", "none", 0.3)
    assert _resolved(True, criterion="activation", scope="local", recover="lstsq", max_layer_ratio=0.8) == (
        "activation", "local", "lstsq", 0.8)


def test_heavy_weights_rank_by_reconstruction_unless_told(tmp_path, capsys, monkeypatch):
    # fisher's backward pass would hold a second copy of every weight: over the limit the data-aware
    # default ranks by reconstruction (per-layer statistics only); a given criterion still wins
    heavy = options_module.FISHER_MAX_BYTES + 1
    assert PruneOptions(target=Target(macs=0.5)).resolved(True, heavy).criterion == "reconstruction"
    assert PruneOptions(target=Target(macs=0.5), criterion="fisher").resolved(True, heavy).criterion == "fisher"
    assert PruneOptions(target=Target(macs=0.5)).resolved(False, heavy).criterion == "l2"
    monkeypatch.setattr(options_module, "FISHER_MAX_BYTES", DIGITS.stat().st_size - 1)  # the digits CNN is "heavy"
    _, ran = _report_options(tmp_path, capsys, "--calib", CALIB, "--calib-limit", "16")
    assert ran == {"criterion": "reconstruction", "scope": "auto", "recover": "sequential", "max_layer_ratio": 0.9}


def test_a_cap_outside_zero_one_is_refused():
    with pytest.raises(BadInputError, match="--max-layer-ratio"):
        PruneOptions(target=Target(macs=0.5), max_layer_ratio=1.5)


def _report_options(tmp_path, capsys, *flags) -> dict:
    out, report = tmp_path / "m.onnx", tmp_path / "r.json"
    code = main(["prune", str(DIGITS), "-o", str(out), "--target-macs", "0.6", "--round-to", "1",
                 "--bench-rounds", "0", "--report", str(report), "-q", *map(str, flags)])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(report.read_text())
    return doc, {name: doc["options"][name] for name in RESOLVED}


def test_the_command_line_reports_the_defaults_it_ran(tmp_path, capsys):
    doc, with_data = _report_options(tmp_path, capsys, "--calib", CALIB, "--calib-limit", "16")
    assert with_data == {"criterion": "fisher_comp_ordered", "scope": "auto", "recover": "sequential", "max_layer_ratio": 0.5}
    for group in doc["plan"]["per_group"]:  # the cap holds: no group loses more than half its channels
        assert group["kept"] >= group["channels"] - int(group["channels"] * 0.5), group
    _, without = _report_options(tmp_path, capsys, "--force")
    assert without == {"criterion": "l2", "scope": "local", "recover": "none", "max_layer_ratio": 0.9}


def test_flags_override_the_data_aware_defaults(tmp_path, capsys):
    _, given = _report_options(tmp_path, capsys, "--calib", CALIB, "--calib-limit", "16", "--criterion",
                               "reconstruction", "--scope", "local", "--recover", "lstsq", "--max-layer-ratio", "0.8")
    assert given == {"criterion": "reconstruction", "scope": "local", "recover": "lstsq", "max_layer_ratio": 0.8}


def _warn_then(outcome):
    def command() -> int:
        logging.getLogger("onnxprune").warning("fisher: a fallback")
        if outcome == "bad":
            raise BadInputError("the input is wrong")
        return 0
    return command


def test_a_warning_before_a_failure_leaves_one_line_and_prints_after_a_success(capsys):
    progress.configure()
    assert run(_warn_then("bad")) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["onnxprune: error: the input is wrong"]
    assert run(_warn_then("ok")) == 0
    assert capsys.readouterr().err.strip().splitlines() == ["onnxprune: WARNING: fisher: a fallback"]
