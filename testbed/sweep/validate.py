"""`testbed validate`: what a run or every run of a sweep needs, checked before anything is queued.

Beyond the config's own checks (config.check, and config.load_run's: no value the run ignores): local model,
tokenizer and data paths exist and hold their files (config.json, tokenizer files); hub names resolve
from the local cache when the hub is offline (HF_HUB_OFFLINE=1; online nothing is downloaded here); a sweep's
settings and grid values each give a valid config, then every run of the grid does (as `sweep --list`).
Every problem is a ConfigError naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from testbed import config
from testbed.config import Config, ConfigError, is_local_path
from testbed.model import offline
from testbed.sweep.grid import check_setting_names, prepare

# Files whose presence in the hub cache means a model or a tokenizer can be loaded offline.
_MODEL_FILES = ("config.json",)
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.json")


def in_hub_cache(name: str, files: tuple[str, ...]) -> bool:
    """Whether the local hub cache holds one of `files` of the repository `name`."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return any(isinstance(try_to_load_from_cache(name, f), str) for f in files)
    except ValueError:  # not a valid repository id
        return False


def holds_tokenizer(directory: Path) -> bool:
    """Whether a directory holds what the run loads a tokenizer from: save_pretrained's tokenizer_config.json
    or tokenizer.json, or a byte-level BPE's vocab.json with merges.txt (model.load_tokenizer)."""
    return any((directory / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json")) or \
        all((directory / f).is_file() for f in ("vocab.json", "merges.txt"))


def _check_local(key: str, directory: Path, model: bool, tokenizer: bool) -> None:
    """A local model (`model`) or tokenizer directory holds its files."""
    if not directory.exists():
        raise ConfigError(f"config key '{key}': {directory} does not exist")
    if not directory.is_dir():
        raise ConfigError(f"config key '{key}': {directory} is not a directory (save_pretrained writes one)")
    if model and not (directory / "config.json").is_file():
        raise ConfigError(f"config key '{key}': {directory} holds no config.json, so no model (save_pretrained "
                          "writes one)")
    if tokenizer and not holds_tokenizer(directory):
        own = "; or set tokenizer.name_or_path" if model else ""
        raise ConfigError(f"config key '{key}': {directory} holds no tokenizer files (tokenizer_config.json, "
                          f"tokenizer.json, or vocab.json with merges.txt){own}")


def _check_name(key: str, name: str | None, model: bool, tokenizer: bool) -> None:
    """A model or tokenizer name: a local directory with its files, or a hub name (offline: in the cache)."""
    if name is None:
        return
    files = (_MODEL_FILES if model else ()) + (_TOKENIZER_FILES if tokenizer else ())
    if is_local_path(name):
        _check_local(key, Path(name).expanduser(), model, tokenizer)
    elif offline() and not in_hub_cache(name, files):
        from huggingface_hub.constants import HF_HUB_CACHE

        raise ConfigError(f"config key '{key}': '{name}' is a hub name, the hub is offline (HF_HUB_OFFLINE) and "
                          f"the local cache ({HF_HUB_CACHE}) does not hold it: download it once online, or "
                          "set a local directory")


def _check_dataset(cfg: Config) -> None:
    """Offline, a hub dataset must be in the datasets cache; its builder resolves from there or fails."""
    if not (offline() or os.environ.get("HF_DATASETS_OFFLINE", "0").lower() in ("1", "true", "yes")):
        return
    import datasets

    try:
        datasets.load_dataset_builder(cfg.data.hf_name, cfg.data.hf_config)
    except Exception as exc:  # noqa: BLE001 - any failure means the run's load_dataset fails the same way
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config key 'data.hf_name': dataset '{cfg.data.hf_name}' ({cfg.data.hf_config}) "
                          f"cannot be loaded offline: {first}") from None


def check_resources(cfg: Config) -> None:
    """Model, tokenizer and data: local paths exist and hold their files, hub names resolve (offline: from
    the cache)."""
    if cfg.data.source == "files" and not Path(cfg.data.path).is_dir():  # type: ignore[arg-type]
        raise ConfigError(f"config key 'data.path': {cfg.data.path} is not a directory")
    _check_name("model.name_or_path", cfg.model.name_or_path, model=True,
                tokenizer=cfg.tokenizer.name_or_path is None)  # the model's own tokenizer
    _check_name("tokenizer.name_or_path", cfg.tokenizer.name_or_path, model=False, tokenizer=True)
    if cfg.data.source == "hf":
        _check_dataset(cfg)


def _with(path: str | None, overrides: list[str], values: dict[str, Any], where: str) -> None:
    """The config with a sweep setting's or grid value's dotted keys on top checks, or the error names `where`."""
    try:
        config.merge_values(config.load(path, overrides), values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def sweep_configs(path: str | None, overrides: list[str]) -> list[tuple[str, Config]]:
    """Every run of the config (one, or a sweep's grid) as (name, checked config). Each setting and each grid
    value is checked alone first, so an error names it; then the runs, as `sweep --list` plans them."""
    cfg = config.load(path, overrides)
    if path is None or not (cfg.sweep.settings or cfg.sweep.grid):
        return [("run", config.load_run(path, overrides))]
    check_setting_names(cfg)
    for i, setting in enumerate(cfg.sweep.settings):
        label = f"sweep.settings[{i}]" + (f" ({setting['name']})" if "name" in setting else "")
        _with(path, overrides, {k: v for k, v in setting.items() if k != "name"}, label)
    for key, values in cfg.sweep.grid.items():
        if not isinstance(values, list):
            raise ConfigError(f"config key 'sweep.grid.{key}': expected a list of values, got {values!r}")
        for v in values:
            _with(path, overrides, {key: v}, f"sweep.grid.{key}={v}")
    _, runs = prepare(path, overrides, None)
    return [(r.name, config.load_run(path, r.overrides)) for r in runs]


def validate(path: str | None, overrides: list[str]) -> list[tuple[str, Config]]:
    """Check the config, or every run of its sweep, and what each needs; return the runs' configs."""
    runs = sweep_configs(path, overrides)
    checked = set()
    for name, cfg in runs:
        needs = (cfg.data.source, cfg.data.path, cfg.data.hf_name, cfg.data.hf_config, cfg.model.name_or_path,
                 cfg.tokenizer.name_or_path)
        if needs in checked:
            continue
        checked.add(needs)
        try:
            check_resources(cfg)
        except ConfigError as exc:
            raise ConfigError(str(exc) if len(runs) == 1 else f"sweep run {name}: {exc}") from None
    return runs
