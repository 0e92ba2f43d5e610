"""`--steps` with `--hidden auto`: the hidden-width decision is the dense model's, for every step.

Wave-20 smoke: khmersm `--target-macs 0.5 --steps 2` ended at 0.676 of the MACs. The dense analysis
turned the hidden width on (0.5 is out of reach without it) and step 1 pruned it; step 2 decided again
on its own model, whose caps count from its own widths (reachable said yes), so the stream stayed
frozen while the other groups were at the dense model's floors (`dense_floors`): the closest plan
kept 0.96 of step 2's target of 0.71."""

from __future__ import annotations

import sys

from conftest import FIXTURES
from onnxprune.iterative import prune_iteratively
from onnxprune.options import FinetuneOptions, PruneOptions, Target

sys.path.insert(0, str(FIXTURES / "transformers"))
import make_stream  # noqa: E402


def test_every_step_prunes_the_hidden_width_the_dense_analysis_turned_on(stream_calib):
    model = make_stream.build("rms")
    # the dense floor without the hidden width is 0.54 of the MACs: the dense analysis turns it on
    options = PruneOptions(target=Target(macs=0.5), round_to=4, bench_rounds=0)
    result = prune_iteratively(model, 2, calib=stream_calib, options=options, finetune=FinetuneOptions(epochs=2, lr=1e-4))
    report = result.report
    assert report["after"]["macs"] <= 0.51 * report["before"]["macs"], report["iterative"]["trail"]
    assert report["plan"]["hidden"][0]["after"] < make_stream.D  # the last step's plan cut the stream too
