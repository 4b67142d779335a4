"""The experiment config: the schema (nested typed dataclasses), its checks, the layers that apply values to it
(defaults < YAML file < CLI overrides) and `testbed keys`, which describes it. Importers use this package; the
modules are where each part lives."""

from testbed.config.checks import (
    FIXED_FRACTION_KEYS,
    READ_IF,
    ReadIf,
    check,
    check_lengths,
    check_schedule,
    is_plain_name,
    unread_keys,
)
from testbed.config.keys import KeyDoc, describe_keys
from testbed.config.layers import (
    PATH_KEYS,
    Layer,
    apply,
    changes,
    diff,
    flatten,
    from_dict,
    is_local_path,
    load,
    load_run,
    merge_values,
    overridden,
    parse_overrides,
    read_yaml,
    resolve_corpus,
    resolve_path,
    takes_list,
    to_yaml,
)
from testbed.config.schema import (
    Config,
    ConfigError,
    CurateConfig,
    DataConfig,
    EvalConfig,
    EvalDecodingConfig,
    GenerationConfig,
    LanguageConfig,
    LoraConfig,
    MixingConfig,
    ModelConfig,
    PretrainConfig,
    RunConfig,
    SlurmConfig,
    SweepConfig,
    TokenizerConfig,
    TrainConfig,
    WatermarkConfig,
    one_line,
)

__all__ = [
    "FIXED_FRACTION_KEYS", "PATH_KEYS", "READ_IF", "Config", "ConfigError", "CurateConfig", "DataConfig",
    "EvalConfig", "EvalDecodingConfig", "GenerationConfig", "KeyDoc", "LanguageConfig", "Layer", "LoraConfig",
    "MixingConfig", "ModelConfig", "PretrainConfig", "ReadIf", "RunConfig", "SlurmConfig", "SweepConfig",
    "TokenizerConfig", "TrainConfig", "WatermarkConfig", "apply", "changes", "check", "check_lengths",
    "check_schedule", "describe_keys", "diff", "flatten", "from_dict", "is_local_path", "is_plain_name", "load",
    "load_run", "merge_values", "one_line", "overridden", "parse_overrides", "read_yaml", "resolve_corpus",
    "resolve_path", "takes_list", "to_yaml", "unread_keys",
]
