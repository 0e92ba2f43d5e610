"""`onnxprune run RECIPE.toml|.json`: run a declared pipeline of passes (see recipe.py).

The recipe names the input, output, data and passes; flags given here override its paths. Exit codes
as for prune: 0 written, 1 invalid result or a missed gate (no model written, report still written),
2 bad recipe, input or usage.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    from onnxprune.cli.args import add_verbosity

    p = sub.add_parser("run", help="run a recipe: a pipeline of passes declared in TOML or JSON")
    p.add_argument("recipe", help="RECIPE.toml or RECIPE.json")
    p.add_argument("-o", "--output", help="output .onnx file (overrides the recipe's 'output')")
    p.add_argument("--report", help="write the JSON report here (overrides the recipe)")
    p.add_argument("--summary", metavar="SUMMARY.md", help="write a Markdown summary here (overrides the recipe)")
    p.add_argument("--plot", metavar="DIR", help="write PNG figures here (overrides the recipe; needs matplotlib)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    add_verbosity(p)


def run(args) -> int:
    from onnxprune.errors import BadInputError
    from onnxprune.load.model import load_model
    from onnxprune.report.outputs import check_destinations, deliver
    from onnxprune.passes import PassContext
    from onnxprune.passes.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    output = args.output or recipe.output
    if not output:
        raise BadInputError(f"{recipe.source}: no output; set 'output' in the recipe or pass -o OUT.onnx")
    plot_dir = args.plot or recipe.plot
    local_input = None if recipe.input.startswith("zoo:") else recipe.input
    out = check_destinations(output, local_input, args.force, plot_dir)
    model_path = recipe.model_path()
    model = load_model(model_path)
    context = PassContext(dense=model, calib=recipe.calibration, data=recipe.data, input_shapes=recipe.input_shapes,
                          seed=recipe.seed, threads=recipe.threads, bench_rounds=recipe.bench_rounds,
                          source=model_path)
    result = recipe.pipeline().run(model, context)
    result.report["recipe"] = recipe.source
    deliver(result.report, result.model, out, result.gates, force=args.force,
            report_path=args.report or recipe.report, summary_path=args.summary or recipe.summary,
            plot_dir=plot_dir, dense=model, quiet=args.quiet)
    return 0
