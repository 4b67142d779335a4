"""The grid of a sweep: the config's settings times the command line's axes, each run named by the values
that vary, and the runs that share their first generations with another (sharing.py decides which)."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from testbed import config
from testbed.config import ConfigError
from testbed.sweep import sharing


@dataclass
class SweepRun:
    name: str
    overrides: list[str]  # key=value, in a stable order
    generations: int = 0  # filled in by prepare(), from the run's checked config
    pretrained: bool = False  # filled in by prepare(): the run fine-tunes a pretrained base (pretrain.source)
    prefix_from: str | None = None  # the run whose generations 0..prefix_until this one takes (shared prefix)
    prefix_until: int = 0


def _value(v) -> str:
    """A value as a run name and an override write it."""
    if isinstance(v, (list, dict)):  # e.g. mixing.schedule: JSON, which the override parser reads as YAML
        return json.dumps(v)
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _override(key: str, v) -> str:
    """key=value as `testbed run` reads it: an empty value is null (a string key takes "null" as a string)."""
    return f"{key}={'' if v is None else _value(v)}"


def _split(values: str) -> list[str]:
    """Split at the commas outside brackets and braces: 'a,[b,c],{d: 1, e: 2}' -> ['a', '[b,c]', '{d: 1, e: 2}']."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(values):
        depth += (c in "[{") - (c in "]}")
        if c == "," and depth == 0:
            parts, start = [*parts, values[start:i]], i + 1
    return [*parts, values[start:]]


def parse_axes(items: list[str]) -> dict[str, list]:
    """['a.b=1,2', 'c.d=[x, y]', 'sweep.grid.e=3'] -> {'a.b': ['1', '2'], 'c.d': ['x', 'y'], 'e': ['3']}: a grid
    axis each. Values are split at the commas outside brackets; a YAML list [x, y] gives the values x and y,
    except for a key that holds a list itself (mixing.schedule=[...],[...]: two values). A key written as
    its grid entry, sweep.grid.KEY, is KEY."""
    axes = {}
    for key, text in config.parse_overrides(items).items():
        key = key.removeprefix("sweep.grid.")
        values = []
        for part in (v.strip() for v in _split(text)):
            if part.startswith("[") and not config.takes_list(key):
                try:
                    listed = yaml.safe_load(part)
                except yaml.YAMLError:
                    listed = None
                if not isinstance(listed, list):
                    raise ConfigError(f"sweep axis '{key}': {part!r} is not a YAML list of values")
                values += listed
            elif part != "":
                values.append(part)
        if not values:
            raise ConfigError(f"sweep axis '{key}' has no values")
        axes[key] = values
    return axes


def setting_slug(name: str) -> str:
    """A setting's name as its runs' directory names carry it: letters, digits and . _ = - only."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", name).strip("-")


def check_setting_names(cfg: config.Config) -> None:
    """A setting's optional `name` (its label in reports; its runs' names carry it, see setting_slug) is a
    non-empty string, no two name the same runs, and a setting with a list or mapping value has one (such a
    value cannot name a run)."""
    names = [s.get("name") for s in cfg.sweep.settings]
    for i, (name, raw) in enumerate(zip(names, cfg.sweep.settings)):
        key = f"sweep.settings[{i}]"
        if name is not None and (not isinstance(name, str) or not setting_slug(name)):
            raise ConfigError(f"config key '{key}.name': expected a non-empty string with a letter or digit, "
                              f"got {name!r}")
        if name is None and any(isinstance(v, (list, dict)) for v in raw.values()):
            raise ConfigError(f"config key '{key}.name': a setting with a list or mapping value needs a name "
                              "(it names the setting's runs)")
    given = [setting_slug(n) for n in names if n is not None]
    if len(set(given)) != len(given):
        raise ConfigError(f"config key 'sweep.settings': two settings share a name ({', '.join(given)})")


def _resolve(cfg: config.Config, values: dict) -> tuple[dict, config.Config]:
    """One run's values and config: `values` less the keys that the run does not read (mixing.human_fraction
    under replace) as far as it stays valid without them, so that its command sets nothing it ignores and an
    axis over such a key makes no runs that differ."""
    run = config.overridden(cfg, [_override(k, v) for k, v in values.items()])
    for key in sorted(config.unread_keys(run).keys() & values.keys()):
        fewer = {k: v for k, v in values.items() if k != key}
        with contextlib.suppress(ConfigError):
            run, values = config.overridden(cfg, [_override(k, v) for k, v in fewer.items()]), fewer
    return values, run


def _check_read(cfg: config.Config, settings: list[dict], grid: dict, cli_axes: dict, read_by: list[set],
                unread: list[dict[str, config.ReadIf]]) -> None:
    """Every value the sweep is given reaches a run that reads it: each grid axis, each setting's keys (by a
    run of that setting) and the config's own values that are not the default, unless an axis of the command
    line decides that they are not read (data.path=DIR over a file's data.hf_name). `read_by`: the keys each
    setting's runs were given; `unread`: what each run does not read."""

    def when(key: str) -> str:
        return next((f" (it is read only with {u[key].when})" for u in unread if key in u), "")

    for key in grid:
        if not any(key in read for read in read_by):
            raise ConfigError(f"config key '{key}': no run of the sweep reads it{when(key)}")
    for i, (setting, read) in enumerate(zip(settings, read_by)):
        ignored = sorted(setting.keys() - grid.keys() - read)
        if ignored:
            raise ConfigError(f"sweep.settings[{i}]: config key '{ignored[0]}': no run of the setting reads it"
                              f"{when(ignored[0])}")
    values, defaults = config.flatten(cfg.to_dict()), config.flatten(config.Config().to_dict())
    given = grid.keys() | {k for s in settings for k in s}
    ignored = sorted(k for k in set.intersection(*(set(u) for u in unread)) - given
                     if values[k] != defaults[k] and not unread[0][k].decided_by(cli_axes))
    if ignored:
        raise ConfigError(f"config key '{ignored[0]}': the config sets {values[ignored[0]]!r}, which no run of the "
                          f"sweep reads{when(ignored[0])}")


def expand(cfg: config.Config, cli_axes: dict[str, list]) -> list[SweepRun]:
    """settings x grid (CLI axes replace file axes of the same key); each run named by what varies. A
    setting's `name` labels it in reports and stands for its own values in run names (needed when a value is
    a list or mapping, e.g. mixing.schedule); it is not a config key.

    A grid axis over a key that a setting sets replaces the setting's value there, and the setting's name,
    which stood for that value, goes. A run leaves out the values it does not read (mixing.human_fraction
    under replace), and runs that then compute the same thing under the same name are one run; a value that
    no run reads is an error (_check_read)."""
    check_setting_names(cfg)
    grid = {**cfg.sweep.grid, **cli_axes}
    settings = [{k: v for k, v in s.items() if k != "name"} for s in cfg.sweep.settings] or [{}]
    # A setting whose key the grid sets loses its name, unless a list or mapping value needs it (the grid's
    # value then joins the name in its runs' names).
    names = [None if set(setting) & set(grid) and not any(isinstance(v, (list, dict)) for v in setting.values())
             else s.get("name") for s, setting in zip(cfg.sweep.settings, settings)] or [None]
    made: list[tuple[str | None, dict, dict]] = []  # (setting name, setting, values) of each distinct run
    resolved: list[dict] = []
    read_by: list[set] = [set() for _ in settings]  # the keys each setting's runs are given
    unread: list[dict[str, config.ReadIf]] = []
    for name, setting, read in zip(names, settings, read_by):
        for combo in itertools.product(*grid.values()):
            values, run_cfg = _resolve(cfg, {**setting, **dict(zip(grid, combo))})
            read.update(values)
            unread.append(config.unread_keys(run_cfg))
            run = {k: v for k, v in config.flatten(run_cfg.to_dict()).items() if k not in unread[-1]}
            if (name, run) not in zip((m[0] for m in made), resolved):
                made.append((name, setting, values))
                resolved.append(run)
    _check_read(cfg, settings, grid, cli_axes, read_by, unread)
    # The keys whose value (or absence) differs between runs name them; a named setting stands for its own.
    keys = {k for _, _, values in made for k in values}
    varying = {k for k in keys if len({_value(v[k]) if k in v else None for _, _, v in made}) > 1}
    runs = []
    for name, setting, values in made:
        # A path or hub name (model.name_or_path as an axis) is named by its last part: names are not paths.
        parts = [f"{k}={_value(v).rstrip('/').rsplit('/', 1)[-1]}" for k, v in values.items()
                 if k in varying and (name is None or k not in setting or k in grid)]
        runs.append(SweepRun(",".join(([setting_slug(name)] if name else []) + parts) or "run",
                             [_override(k, v) for k, v in values.items()]))
    names = [r.name for r in runs]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError(f"sweep runs are not distinct: two runs would be named {n!r} (name the settings, "
                              "or give values that differ in their last part)")
    return runs


def share_prefixes(runs: list[SweepRun], configs: list[config.Config], sweep_dir: Path) -> list[SweepRun]:
    """Each run takes, from the earlier run it agrees with longest, the generations 0..k that both compute
    alike (sharing.shared_prefix: e.g. one seed's settings that differ only in mixing share generation 0;
    runs that switch from replace to human data at different generations share the replace generations up
    to the earlier switch), so each common prefix is computed once. Beyond generation 0 the leader must keep
    every checkpoint (run.keep_checkpoints=all), since the follower continues from model k. Runs come back
    in an order where each leader precedes its followers."""
    depth: dict[str, int] = {}
    for i, (r, cfg) in enumerate(zip(runs, configs)):
        best, until = None, sharing.NONE
        for j in range(i):
            k = sharing.shared_prefix(configs[j], cfg)
            k = min(k, 0) if configs[j].run.keep_checkpoints != "all" else k
            if k > until:
                best, until = j, k
        depth[r.name] = 0
        if best is not None:
            r.prefix_from, r.prefix_until = runs[best].name, until
            r.overrides = [*r.overrides, f"run.prefix_from={sweep_dir / runs[best].name}", f"run.prefix_until={until}"]
            depth[r.name] = depth[runs[best].name] + 1
    return sorted(runs, key=lambda r: depth[r.name])


def _own_items(cli_items: list[str]) -> tuple[list[str], list[str]]:
    """The command line's settings of the sweep itself (a sweep.* key other than sweep.grid.KEY, e.g.
    sweep.slurm.time_min=30: they set how the sweep runs, not a run), and the other items (the axes)."""
    own = [i for i in cli_items if i.startswith("sweep.") and not i.startswith("sweep.grid.")]
    return own, [i for i in cli_items if i not in own]


def sweep_config(path: str, cli_items: list[str]) -> config.Config:
    """The sweep's config: the file with the command line's sweep.* settings on top (e.g. its Slurm request)."""
    return config.load(path, _own_items(cli_items)[0])


def prepare(path: str, cli_items: list[str], out: str | None, share: bool = False) -> tuple[Path, list[SweepRun]]:
    """Check every run's config (errors name the key) and decide the sweep directory: --out, else
    `<run.out_dir>/<config stem>-sweep` with run.out_dir from the command line or the config. With
    `share`, runs that would compute the same first generations share them (see share_prefixes)."""
    cfg = sweep_config(path, cli_items)
    axes = parse_axes(_own_items(cli_items)[1])
    if "run.name" in axes:
        raise ConfigError("config key 'run.name': a sweep names its runs by their values; it cannot be set")
    out_dir = axes.pop("run.out_dir", [cfg.run.out_dir])
    if len(out_dir) > 1:
        raise ConfigError("config key 'run.out_dir': one sweep has one directory; use --out DIR")
    if out is not None and "run.out_dir" in config.parse_overrides(cli_items):
        raise ConfigError("config key 'run.out_dir': give either run.out_dir or --out, not both")
    runs = expand(cfg, axes)
    configs = [config.load_run(path, r.overrides) for r in runs]  # as `testbed run` will check each
    for r, c in zip(runs, configs):
        r.generations, r.pretrained = c.run.generations, c.pretrain.source != "none"
    sweep_dir = (Path(out) if out else Path(out_dir[0]) / f"{Path(path).stem}-sweep").resolve()
    return sweep_dir, share_prefixes(runs, configs, sweep_dir) if share else runs


def run_command(path: str, run: SweepRun, sweep_dir: Path, resume: bool = False) -> list[str]:
    args = ["testbed", "run", path, *run.overrides, f"run.out_dir={sweep_dir}", f"run.name={run.name}"]
    return [*args, "--resume"] if resume else args
