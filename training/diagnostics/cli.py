"""Measure vanishing and exploding gradients: `rnn-zoo-diagnose --help`.

    rnn-zoo-diagnose gradients --preset ptb_small --variants simple_rnn lstm gru gated_lstm
    rnn-zoo-diagnose gradients --run runs/ptb_small
    rnn-zoo-diagnose long-dependency --variants simple_rnn lstm gru --lengths 5 10 20 50
    rnn-zoo-diagnose clipping --recurrent_radius 1.5 --clip_norm 1
    rnn-zoo-diagnose initial-state --preset sst_lstm --data ../shared/data/sst2 --steps 300

Each writes its plot (PNG), `summary.json` and `summary.md` to --output_dir.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from training.cli import parse_assignment, quiet_tensorflow_logs, zoo_catalog

PROG = "rnn-zoo-diagnose"


def _variant(text: str) -> str:
    from training.diagnostics.variants import parse_variant

    try:
        parse_variant(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    from training.diagnostics.variants import DEFAULT_VARIANTS

    catalog = zoo_catalog()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Vanishing and exploding gradients, measured on zoo models: gradient norm "
                    "against distance, a long-dependency task per cell, clipping traces, and zero "
                    "against learned initial state. Writes PNG plots, summary.json and summary.md.",
        epilog="Variants: a cell (" + ", ".join(catalog.CELL_TYPES) + ") or gated_lstm:GATES "
               "(e.g. gated_lstm:none, gated_lstm:input+forget). Presets: "
               + ", ".join(catalog.list_presets()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, help_text):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--output_dir", default=f"runs/diagnostics/{name}",
                             help="where the plot and summaries go (default %(default)s)")
        command.add_argument("--seed", type=int, default=0)
        return command

    gradients = add("gradients", "Norm of dL_T/dh_t and dL_T/dx_t against the distance T - t, the "
                    "effective memory, and (SimpleRNN) the spectral radius.")
    gradients.add_argument("--preset", choices=catalog.list_presets(), help="fresh models of this preset")
    gradients.add_argument("--variants", nargs="+", type=_variant, metavar="VARIANT",
                           help="with --preset: one fresh model per cell variant (default: the "
                                "preset's own cell)")
    gradients.add_argument("--set", dest="model_options", action="append", default=[],
                           type=parse_assignment, metavar="KEY=VALUE",
                           help="a model option for the preset, e.g. hidden_dim=64 (repeatable)")
    gradients.add_argument("--vocabulary_size", type=int, default=1000,
                           help="vocabulary of the fresh models (default %(default)s)")
    gradients.add_argument("--run", dest="runs", action="append", default=[], metavar="RUN_DIR",
                           help="a trained run directory (repeatable)")
    gradients.add_argument("--max_distance", type=int, default=100)
    gradients.add_argument("--positions", type=int, default=4,
                           help="end positions T averaged over (default %(default)s)")
    gradients.add_argument("--rows", type=int, default=16, help="batch rows (default %(default)s)")

    long = add("long-dependency", "Train each cell variant on the first-token task at several "
               "lengths; held-out accuracy against length.")
    long.add_argument("--variants", nargs="+", type=_variant, default=list(DEFAULT_VARIANTS),
                      metavar="VARIANT")
    long.add_argument("--lengths", nargs="+", type=int, default=[5, 10, 20, 50, 100])
    long.add_argument("--steps", type=int, default=300, help="training steps per run")
    long.add_argument("--seeds", nargs="+", type=int, default=[0])
    long.add_argument("--num_classes", type=int, default=2)
    long.add_argument("--hidden_dim", type=int, default=32)
    long.add_argument("--optimizer", choices=("adam", "sgd"), default="sgd")
    long.add_argument("--learning_rate", type=float, default=1.0)
    long.add_argument("--clip_norm", type=float, default=5.0)
    long.add_argument("--init_scale", type=float, default=0.1,
                      help="uniform init as in Zaremba et al.; 0 for the Keras initializers "
                           "(default %(default)s)")

    clipping = add("clipping", "Gradient-norm traces of a SimpleRNN in the exploding regime, "
                   "trained with and without global-norm clipping.")
    clipping.add_argument("--recurrent_radius", type=float, default=1.5,
                          help="spectral radius the recurrent matrix is rescaled to")
    clipping.add_argument("--clip_norm", type=float, default=1.0)
    clipping.add_argument("--steps", type=int, default=200)
    clipping.add_argument("--length", type=int, default=50)
    clipping.add_argument("--learning_rate", type=float, default=0.1)

    initial = add("initial-state", "Zero against learned initial state on a real task: early "
                  "training loss and dev figure.")
    initial.add_argument("--preset", required=True, choices=catalog.list_presets())
    initial.add_argument("--data", dest="source", required=True,
                         help="the task's data, as rnn-zoo-train --data takes it")
    initial.add_argument("--dev_data", dest="dev_source")
    initial.add_argument("--steps", type=int, default=300, help="training steps per run")
    initial.add_argument("--seeds", nargs="+", type=int, default=[0])
    initial.add_argument("--max_train", type=int, help="first N train sentences (tokens for LMs)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "gradients" and not (args.preset or args.runs):
        build_parser().parse_args([args.command, "--help"])  # exits
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_tensorflow_logs()
    from training.errors import DataError

    command = " ".join([PROG] + [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)])
    handlers = {"gradients": run_gradients, "long-dependency": run_long_dependency,
                "clipping": run_clipping, "initial-state": run_initial_state}
    try:
        paths = handlers[args.command](args, command)
    except (DataError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


def _bar(total: int, description: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="step", leave=False)


def run_gradients(args, command: str):
    from training.diagnostics.gradient_flow import gradient_flow
    from training.diagnostics.plots import plot_gradient_flow
    from training.diagnostics.report import gradients_markdown, write_summary
    from training.diagnostics.sources import from_preset, from_run

    length = args.max_distance + args.positions
    inputs = []
    if args.preset:
        for variant in args.variants or [None]:
            inputs.append(from_preset(args.preset, variant=variant, options=dict(args.model_options),
                                      vocabulary_size=args.vocabulary_size, rows=args.rows,
                                      length=length, seed=args.seed))
    inputs += [from_run(run, rows=args.rows, length=length, seed=args.seed) for run in args.runs]
    flows, entries = {}, {}
    with _bar(len(inputs) * args.positions, "gradients") as bar:
        for item in inputs:
            flow = gradient_flow(item.model, item.token_ids, targets=item.targets,
                                 char_ids=item.char_ids, max_distance=args.max_distance,
                                 num_ends=args.positions, seed=args.seed,
                                 progress=lambda: bar.update(1))
            flows[item.name] = flow
            entries[item.name] = {"source": item.source, **flow.to_dict()}
    title = "gradient norm against distance"
    png = plot_gradient_flow(flows, f"{args.output_dir}/gradient_flow.png", title)
    data = {"command": command, "models": entries}
    return [png, *write_summary(args.output_dir, data, gradients_markdown(entries, command))]


def run_long_dependency(args, command: str):
    from training.diagnostics.long_dependency import train_on_task
    from training.diagnostics.plots import plot_long_dependency
    from training.diagnostics.report import long_dependency_markdown, write_summary

    settings = {"steps": args.steps, "batch_size": 32, "num_classes": args.num_classes,
                "hidden_dim": args.hidden_dim, "optimizer": args.optimizer,
                "learning_rate": args.learning_rate, "clip_norm": args.clip_norm,
                "init_scale": args.init_scale or None, "seeds": args.seeds}
    results = []
    runs = [(variant, length, seed) for length in args.lengths for variant in args.variants
            for seed in args.seeds]
    with _bar(len(runs) * args.steps, "long-dependency") as bar:
        for variant, length, seed in runs:
            bar.set_postfix_str(f"{variant} L={length}")
            result = train_on_task(variant, length, steps=args.steps, num_classes=args.num_classes,
                                   hidden_dim=args.hidden_dim, optimizer=args.optimizer,
                                   learning_rate=args.learning_rate, clip_norm=args.clip_norm,
                                   init_scale=args.init_scale or None, seed=seed,
                                   progress=lambda: bar.update(1))
            results.append(result.to_dict())
            logging.info("%s L=%d seed %d: accuracy %.3f", variant, length, seed, result.accuracy)
    chance = 1.0 / args.num_classes
    png = plot_long_dependency(results, f"{args.output_dir}/long_dependency.png", chance,
                               "first-token task: " + ", ".join(
                                   f"{k}={v}" for k, v in settings.items() if k in
                                   ("optimizer", "learning_rate", "init_scale", "steps")))
    data = {"command": command, "settings": settings, "chance": chance, "results": results}
    return [png, *write_summary(args.output_dir, data,
                                long_dependency_markdown(results, settings, chance, command))]


def run_clipping(args, command: str):
    from training.diagnostics.clipping import clipping_traces, summarize_traces
    from training.diagnostics.plots import plot_clipping
    from training.diagnostics.report import clipping_markdown, write_summary

    settings = {"recurrent_radius": args.recurrent_radius, "clip_norm": args.clip_norm,
                "steps": args.steps, "length": args.length, "learning_rate": args.learning_rate,
                "seed": args.seed}
    with _bar(2 * args.steps, "clipping") as bar:
        traces = clipping_traces(recurrent_radius=args.recurrent_radius, clip_norm=args.clip_norm,
                                 steps=args.steps, length=args.length,
                                 learning_rate=args.learning_rate, seed=args.seed,
                                 progress=lambda: bar.update(1))
    summary = summarize_traces(traces)
    png = plot_clipping(traces, f"{args.output_dir}/clipping.png",
                        f"SimpleRNN, spectral radius {args.recurrent_radius}, SGD {args.learning_rate}")
    data = {"command": command, "settings": settings, "summary": summary,
            "traces": {name: trace.to_dict() for name, trace in traces.items()}}
    return [png, *write_summary(args.output_dir, data, clipping_markdown(summary, settings, command))]


def run_initial_state(args, command: str):
    from training.diagnostics.initial_state import compare_initial_states, summarize_initial_states
    from training.diagnostics.plots import plot_initial_state
    from training.diagnostics.report import initial_state_markdown, write_summary
    from training.run import resolve_config

    config = resolve_config(preset=args.preset, data={"source": args.source,
                                                      "dev_source": args.dev_source,
                                                      "max_train": args.max_train},
                            seed=args.seed)
    with _bar(2 * len(args.seeds) * args.steps, "initial-state") as bar:
        result = compare_initial_states(config, steps=args.steps, seeds=args.seeds,
                                        progress=lambda: bar.update(1))
    summary = summarize_initial_states(result)
    metric = "perplexity" if config["task"] == "language_model" else "accuracy"
    png = plot_initial_state(result, summary, f"{args.output_dir}/initial_state.png", metric,
                             f"{args.preset}: zero against learned initial state")
    settings = {"preset": args.preset, "data": args.source, "steps": args.steps,
                "seeds": args.seeds, "optimizer": config["training"]["optimizer"],
                "learning_rate": config["training"]["learning_rate"],
                "clip_norm": config["training"].get("clip_norm"),
                "batch_size": config["training"]["batch_size"]}
    data = {"command": command, "settings": settings, "summary": summary, "runs": result["runs"]}
    return [png, *write_summary(args.output_dir, data,
                                initial_state_markdown(summary, settings, command))]


if __name__ == "__main__":
    sys.exit(main())
