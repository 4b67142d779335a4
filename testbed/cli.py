"""Command line: testbed run | validate | plan | keys | sweep | report | paper-check | data | gaussian |
categorical.

User errors (config, data, model, run directory, a full disk) print one line and exit with code 2;
--debug shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from pathlib import Path

from testbed import config, rundir
from testbed.config import ConfigError
from testbed.data import HUB_CORPORA
from testbed.errors import DataError, ModelError

USER_ERRORS = (ConfigError, DataError, ModelError, rundir.RunDirError)


def _config_file(path: str | None, instead: str = "") -> str | None:
    """The config path as given; a directory there is a one-line error that says so (`instead`: what a
    directory would be right for)."""
    if path is not None and Path(path).is_dir():
        raise ConfigError(f"{path} is a directory: expected a YAML config file such as configs/default.yaml"
                          f"{instead}")
    return path


def _split_args(args: list[str]) -> tuple[str | None, list[str]]:
    """The optional config (or run directory) followed by key.sub=value overrides."""
    path = None
    if args and "=" not in args[0]:
        path, args = args[0], args[1:]
    for a in args:
        if "=" not in a:
            raise ConfigError(f"expected key.sub=value overrides after the config, got {a!r}")
    return path, args


def _resolve(args: list[str], resume: bool) -> tuple[config.Config, Path, str | None]:
    """Load the config and decide the run directory, without touching the disk."""
    path, overrides = _split_args(args)
    if path is not None and Path(path).is_dir() and (resume or Path(path, "config.yaml").is_file()):
        if not resume:  # testbed run RUN_DIR --resume
            raise rundir.RunDirError(f"{path} is a run directory: pass --resume to continue it")
        run_dir = Path(path)
        _check_run_dir(run_dir)
        cfg = config.load_run(run_dir / "config.yaml", overrides, saved=True)
        return cfg, run_dir, str(run_dir / "config.yaml")
    cfg = config.load_run(_config_file(path, " (or a run directory, with --resume)"), overrides)
    if resume and cfg.run.name is None:
        raise ConfigError("config key 'run.name': --resume needs the run's name (run.name=NAME) or its directory")
    cfg.run.name = cfg.run.name or rundir.default_name(path)
    return cfg, rundir.run_path(cfg.run.out_dir, cfg.run.name), path


def check_tracker(log_with: str) -> None:
    """A tracker that is not installed stops the run before any work (accelerate would only warn and log
    nothing); installed means what accelerate itself checks."""
    from accelerate import utils

    available = {"wandb": utils.is_wandb_available, "tensorboard": utils.is_tensorboard_available}
    if log_with in available and not available[log_with]():
        raise ConfigError(f"config key 'run.log_with': {log_with} is not installed; install it with "
                          f"`pip install {log_with}`, or set run.log_with=none")


def _check_run_dir(run_dir: Path) -> None:
    if not (run_dir / "config.yaml").is_file():
        raise rundir.RunDirError(f"{run_dir} is not a run directory (no config.yaml): nothing to resume")


def cmd_run(ns: argparse.Namespace) -> int:
    from accelerate import PartialState

    from testbed import loop
    from testbed.report.tables import format_table, write_report

    cfg, run_dir, _ = _resolve(ns.args, ns.resume)
    check_tracker(cfg.run.log_with)
    if ns.resume:
        _check_run_dir(run_dir)
        changed = config.changes(config.from_dict(config.read_yaml(run_dir / "config.yaml")), cfg)
        if changed and not ns.allow_config_change:
            raise ConfigError(f"config differs from the one saved in {run_dir} at: {', '.join(changed)} "
                              "(pass --allow-config-change to resume with it anyway)")
        rundir.check_resumable(run_dir, cfg.run.generations)
        if changed:  # the run saves the new config once it has resolved it (loop.prepare)
            print(f"resuming with a changed config: {', '.join(changed)}", flush=True)
    else:
        rundir.refuse_existing(run_dir)  # before any work; rundir.create checks again when it makes it
    lowest = rundir.BASE if cfg.pretrain.source != "none" else 0  # -1: the pretrained base alone
    if ns.stop_after is not None and not lowest <= ns.stop_after <= cfg.run.generations:
        raise ConfigError(f"--stop-after must be in {lowest}..run.generations={cfg.run.generations}, "
                          f"got {ns.stop_after}")
    rows, baseline = loop.run(cfg, run_dir, resume=ns.resume, stop_after=ns.stop_after)
    state = PartialState()
    if ns.stop_after is not None and ns.stop_after < cfg.run.generations:
        if state.is_main_process:
            done = "the pretrained base" if ns.stop_after == rundir.BASE else f"generation {ns.stop_after}"
            print(f"stopped after {done}; continue with: testbed run {run_dir} --resume")
    elif state.is_main_process:  # accelerate launch: the main process reports
        print()
        print(format_table(rows, baseline, cfg.eval.corpora))
        written = write_report([run_dir])
        print(f"\nresults: {run_dir}/metrics.jsonl (one row per generation), {run_dir}/human_baseline.json")
        print("report and plots: " + ", ".join(str(p) for p in written))
    # Every process leaves together and closes the process group: one that exits while the others still
    # hold it can abort in the communication library's teardown.
    state.wait_for_everyone()
    state.destroy_process_group()
    return 0


def cmd_validate(ns: argparse.Namespace) -> int:
    from testbed.sweep.validate import validate

    path, overrides = _split_args(ns.args)
    runs = validate(_config_file(path), overrides)
    cfg = runs[0][1]
    check_tracker(cfg.run.log_with)
    from testbed.data import load_corpus, read_text_file  # the loader's own checks: present, UTF-8, not empty

    for data in {c.data.path: c.data for _, c in runs if c.data.source == "files"}.values():
        load_corpus(data, cfg.run.seed)
    files = {Path(c.pretrain.path, "train.txt") for _, c in runs if c.pretrain.source == "files"}
    files |= {Path(src, "test.txt") for _, c in runs for src in c.eval.corpora.values()
              if not src.startswith(("builtin:", "hf:"))}
    for f in sorted(files):
        read_text_file(f)
    shape = f"{cfg.model.arch} {cfg.model.layers}x{cfg.model.width}"
    model = cfg.model.name_or_path or (f"{shape} (from scratch)" if cfg.pretrain.source == "none" else
                                       f"{shape} (pretrained first: pretrain.source={cfg.pretrain.source})")
    what = f"{len(runs)} runs, the first: " if len(runs) > 1 else ""
    print(f"ok: {path or 'built-in default'}: {what}{cfg.run.generations} generations, data {cfg.data.source}, "
          f"model {model}, mixing {cfg.mixing.strategy}"
          + (f", eval.corpora {', '.join(cfg.eval.corpora)}" if cfg.eval.corpora else ""))
    return 0


def cmd_plan(ns: argparse.Namespace) -> int:
    from testbed.sweep import plan
    from testbed.sweep.validate import sweep_configs

    path, overrides = _split_args(ns.args)
    _config_file(path)
    gpu_check = plan.load_gpu_check(ns.gpu_check) if ns.gpu_check else None
    memory = plan.parse_memory(ns.gpu_memory) if ns.gpu_memory else None
    print(plan.report(path, overrides, sweep_configs(path, overrides), gpu_check, memory))
    return 0


def cmd_sweep(ns: argparse.Namespace) -> int:
    from testbed.sweep.command import run_all
    from testbed.sweep.status import show_status

    if ns.status:
        return show_status(Path(ns.status))
    if ns.config is None:
        raise ConfigError("testbed sweep needs a config (or --status SWEEP_DIR)")
    _config_file(ns.config, " (a sweep directory: --status SWEEP_DIR)")
    if ns.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {ns.jobs}")
    slurm = {"partition": ns.partition, "time_min": ns.time_min, "cpus_per_run": ns.cpus_per_run,
             "mem_gb": ns.mem_gb, "array_parallelism": ns.array_parallelism}
    return run_all(ns.config, ns.axes, ns.out, ns.list, launcher=ns.launcher, jobs=ns.jobs,
                   gpus_per_run=ns.gpus_per_run, slurm_flags=slurm, wait=ns.wait, share=not ns.no_share)


def cmd_report(ns: argparse.Namespace) -> int:
    from testbed.report.tables import write_report

    for path in write_report([Path(p) for p in ns.dirs], Path(ns.out) if ns.out else None):
        print(f"wrote {path}")
    return 0


def cmd_paper_check(ns: argparse.Namespace) -> int:
    from testbed.report.paper import paper_check

    return paper_check([Path(p) for p in ns.dirs])


def cmd_keys(ns: argparse.Namespace) -> int:
    import textwrap

    for doc in config.describe_keys(ns.prefix or ""):
        print(f"{doc.key}  {doc.type} = {doc.default}")
        if doc.comment:
            print(textwrap.fill(doc.comment, 100, initial_indent="    ", subsequent_indent="    "))
    return 0


def cmd_data(ns: argparse.Namespace) -> int:
    from testbed.data import write_hub_corpus

    for path in write_hub_corpus(ns.name, Path(ns.out_dir)):
        print(f"wrote {path}")
    print(f"use it with: data.source=files data.path={ns.out_dir}")
    return 0


def cmd_gaussian(ns: argparse.Namespace) -> int:
    from testbed.toys import gaussian

    for flag, value, least in (("--samples", ns.samples, 2), ("--generations", ns.generations, 0),
                               ("--repeats", ns.repeats, 2)):
        if value < least:  # the unbiased variance needs two samples; a spread over chains needs two chains
            raise ConfigError(f"testbed gaussian: {flag} must be at least {least}, got {value}")
    out = Path(ns.out or f"runs/gaussian-M{ns.samples}-N{ns.generations}-R{ns.repeats}-seed{ns.seed}")
    gaussian.run(ns.samples, ns.generations, ns.repeats, ns.seed, out)
    return 0


def cmd_categorical(ns: argparse.Namespace) -> int:
    from testbed.toys import categorical

    for flag, value, least in (("--outcomes", ns.outcomes, 2), ("--samples", ns.samples, 2),
                               ("--generations", ns.generations, 1), ("--repeats", ns.repeats, 2)):
        if value < least:
            raise ConfigError(f"{flag} must be at least {least}, got {value}")
    if ns.samples > categorical.MAX_SAMPLES:
        raise ConfigError(f"--samples must be at most {categorical.MAX_SAMPLES} (the exact chain is an (M+1) x (M+1) "
                          f"matrix), got {ns.samples}")
    if not ns.zipf >= 0:
        raise ConfigError(f"--zipf must be a number >= 0, got {ns.zipf}")
    out = Path(ns.out or f"runs/categorical-V{ns.outcomes}-M{ns.samples}-N{ns.generations}-R{ns.repeats}"
                         f"-s{ns.zipf:g}-seed{ns.seed}")
    categorical.run(ns.outcomes, ns.samples, ns.generations, ns.repeats, ns.zipf, ns.seed, out)
    return 0


def _global_flags(default) -> argparse.ArgumentParser:
    """The flags every command takes, before or after its name. Under a command they default to SUPPRESS, so
    that a flag given before the command is not reset there."""
    g = argparse.ArgumentParser(add_help=False)
    g.add_argument("--debug", action="store_true", default=default, help="show tracebacks for user errors")
    return g


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed", description="Recursive fine-tuning and model-collapse metrics.",
                                parents=[_global_flags(False)])
    sub = p.add_subparsers(dest="command", required=True)
    common = _global_flags(argparse.SUPPRESS)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=[common], **kwargs)
        parser.set_defaults(parser=parser)  # parse_args may parse the command's arguments again
        return parser

    keys_help = "every config key, its type, default and meaning: testbed keys [PREFIX]"
    r = command("run", help="run an experiment (no config: the built-in default)", epilog=keys_help)
    r.add_argument("args", nargs="*", metavar="CONFIG|RUN_DIR key.sub=value",
                   help="a YAML config (or a run directory with --resume), then overrides")
    r.add_argument("--resume", action="store_true", help="continue a run from its last completed generation")
    r.add_argument("--allow-config-change", action="store_true",
                   help="resume even though the config differs from the saved one")
    r.add_argument("--stop-after", type=int, metavar="G",
                   help="stop once generation G is complete (-1: the pretrained base; continue later with --resume)")
    r.set_defaults(func=cmd_run)

    v = command("validate", help="check a config without running it", epilog=keys_help)
    v.add_argument("args", nargs="*", metavar="CONFIG key.sub=value")
    v.set_defaults(func=cmd_validate)

    pl = command("plan", help="parameters and peak memory per stage of each run of a config or sweep, "
                                     "computed from the model's config; with --gpu-check, the projected time")
    pl.add_argument("args", nargs="*", metavar="CONFIG key.sub=value")
    pl.add_argument("--gpu-check", metavar="JSON", help="the JSON scripts/gpu_check.py wrote: projects each run's time")
    pl.add_argument("--gpu-memory", metavar="SIZE", help="the GPU's memory, e.g. 80GiB or 80GB: says whether each run "
                    "fits it (default: the GPU check's device)")
    pl.set_defaults(func=cmd_plan)

    s = command("sweep", help="run the grid of runs of a config (its sweep section and key=v1,v2 axes)")
    s.add_argument("config", nargs="?", help="a YAML config; its optional sweep: section lists settings and a grid")
    s.add_argument("axes", nargs="*", metavar="key.sub=v1,v2", help="more axes of the grid")
    s.add_argument("--out", help="the sweep directory (default: <run.out_dir>/<config stem>-sweep)")
    s.add_argument("--list", action="store_true", help="print one `testbed run` command per run, run nothing")
    s.add_argument("--status", metavar="SWEEP_DIR", help="show each run's state, job id and last log line")
    s.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: processes on this machine; slurm: job arrays through submitit")
    s.add_argument("--jobs", type=int, default=1, help="local: runs at once")
    s.add_argument("--gpus-per-run", type=int, help="GPUs each run gets (local: CUDA_VISIBLE_DEVICES)")
    s.add_argument("--wait", action="store_true", help="slurm: block until every run has finished")
    s.add_argument("--no-share", "--no-share-gen0", dest="no_share", action="store_true",
                   help="compute every generation in every run (by default runs that would compute the same first "
                        "generations share them)")
    for flag, kind, text in (("--partition", str, "partition"), ("--time-min", int, "time limit per run, minutes"),
                             ("--cpus-per-run", int, "CPUs per run"), ("--mem-gb", float, "memory per run"),
                             ("--array-parallelism", int, "runs at once, at most")):
        s.add_argument(flag, type=kind, help=f"slurm: {text} (default: the config's sweep.slurm section)")
    s.set_defaults(func=cmd_sweep)

    rp = command("report", help="report.md and plots over runs and sweeps (mean ± std over seeds; "
                                                "plots: mean and the seeds' range)")
    rp.add_argument("dirs", nargs="+", metavar="RUN_OR_SWEEP_DIR")
    rp.add_argument("--out", help="where to write (default: the directory given, or the parent of the first)")
    rp.set_defaults(func=cmd_report)

    pc = command("paper-check", help="a Shumailov et al. (2024) run or sweep beside the paper's numbers, "
                                            "with every deviation from its protocol; exit 0 only when all hold "
                                            "on runs of that protocol")
    pc.add_argument("dirs", nargs="+", metavar="RUN_OR_SWEEP_DIR")
    pc.set_defaults(func=cmd_paper_check)

    k = command("keys", help="each config key with its type, default and comment (from testbed/config/schema.py)")
    k.add_argument("prefix", nargs="?", metavar="PREFIX", help="a section (train) or a key (train.lr); default: all")
    k.set_defaults(func=cmd_keys)

    d = command("data", help="write a hub corpus as train.txt, valid.txt and test.txt (online), for "
                             "data.source=files")
    d.add_argument("name", choices=list(HUB_CORPORA),
                   help=", ".join(f"{k}: {v[0]}/{v[1]}" for k, v in HUB_CORPORA.items()))
    d.add_argument("out_dir", metavar="OUT_DIR", help="where to write the three files (made if missing)")
    d.set_defaults(func=cmd_data)

    gp = command("gaussian", help="the Gaussian refit toy against its closed forms")
    gp.add_argument("--samples", type=int, default=100, help="M: samples per generation")
    gp.add_argument("--generations", type=int, default=50, help="N")
    gp.add_argument("--repeats", type=int, default=10000, help="R: independent chains")
    gp.add_argument("--seed", type=int, default=0)
    gp.add_argument("--out", help="output directory (default runs/gaussian-M..-N..-R..-seed..)")
    gp.set_defaults(func=cmd_gaussian)

    cp = command("categorical", help="the categorical refit toy: survival of rare outcomes against the "
                                            "exact Markov chain")
    cp.add_argument("--outcomes", type=int, default=1000, help="V: outcomes of the Zipf law")
    cp.add_argument("--samples", type=int, default=1000, help="M: samples per generation (at most 2000)")
    cp.add_argument("--generations", type=int, default=50, help="N")
    cp.add_argument("--repeats", type=int, default=1000, help="R: independent chains")
    cp.add_argument("--zipf", type=float, default=1.1, help="s: p_r proportional to r^-s")
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--out", help="output directory (default runs/categorical-V..-M..-N..-R..-s..-seed..)")
    cp.set_defaults(func=cmd_categorical)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as a namespace. Under a subcommand argparse takes positionals only before the first
    flag; words after one (testbed sweep CONFIG --list key=v1,v2) have the command's own arguments parsed
    again, positionals and flags intermixed."""
    argv = sys.argv[1:] if argv is None else argv
    ns, strays = build_parser().parse_known_args(argv)
    if not strays:
        return ns
    rest = argv[argv.index(ns.command) + 1:]  # only flags without values can come before the command
    return ns.parser.parse_intermixed_args(rest, argparse.Namespace(command=ns.command, debug=ns.debug))


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # keep the terminal for progress bars and results
    # A pre-empted job gets SIGTERM: leave like Ctrl-C (writes are atomic; finished generations are kept).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        code = ns.func(ns)
        sys.stdout.flush()  # a reader that has gone shows here, not at exit
        return code
    except BrokenPipeError:  # testbed keys | head: the reader has what it wanted; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's last flush goes nowhere
        return 128 + signal.SIGPIPE  # 141, as a command that SIGPIPE ended
    except USER_ERRORS as exc:
        if ns.debug:
            raise
        print(f"error: {config.one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno != errno.ENOSPC or ns.debug:
            raise
        print(f"error: disk full while writing {exc.filename or 'the run directory'}: finished generations "
              "are intact; free space and continue with --resume", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished generations are kept; continue with: testbed run RUN_DIR --resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
