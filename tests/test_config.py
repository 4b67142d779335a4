import dataclasses
from pathlib import Path

import pytest

from testbed import config
from testbed.config import Config, ConfigError

from .helpers import REPO


def test_defaults_load_and_overrides_win():
    cfg = config.load(None, ["train.lr=3e-4", "mixing.strategy=accumulate", "run.name=abc", "train.gen0_epochs=null"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.mixing.strategy == "accumulate"
    assert cfg.run.name == "abc"
    assert cfg.train.gen0_epochs is None
    assert cfg.model.layers == Config().model.layers


def test_yaml_then_cli(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 2e-5\n  epochs: 3\nmixing:\n  human_fraction: 0.25\n")
    cfg = config.load(f, ["train.epochs=4"])
    assert cfg.train.lr == pytest.approx(2e-5)  # YAML 1.1 reads 2e-5 as a string; still a number here
    assert cfg.train.epochs == 4
    assert cfg.mixing.human_fraction == 0.25


@pytest.mark.parametrize("overrides, message", [
    (["train.lrr=1"], "unknown config key 'train.lrr' (did you mean 'train.lr'?)"),
    (["nosuch.key=1"], "unknown config key 'nosuch'"),
    (["train.epochs=two"], "config key 'train.epochs': expected an integer, got 'two'"),
    (["train.epochs=1.5"], "config key 'train.epochs': expected an integer"),
    (["mixing.human_fraction=1.5"], "config key 'mixing.human_fraction': must be a fraction in [0, 1], got 1.5"),
    (["mixing.human_fraction=-0.1"], "config key 'mixing.human_fraction'"),
    (["run.generations=0"], "config key 'run.generations': must be at least 1, got 0"),
    (["data.block_size=512"], "config key 'data.block_size': 512 exceeds the model's context (model.context=128)"),
    (["eval.max_new_tokens=120"], "config key 'eval.max_new_tokens': prompt_tokens + max_new_tokens = 136 exceeds"),
    (["generation.mode=unconditional", "generation.max_new_tokens=128"],
     "config key 'generation.max_new_tokens': a start token + max_new_tokens = 129 exceeds"),
    (["generation.min_new_tokens=33"], "config key 'generation.min_new_tokens': must be in [0, "),
    (["train.precision=no"], "config key 'train.precision': no (YAML reads it as false) is no longer a value; "
                             "use 'fp32'"),
    (["train.precision=fp8"], "config key 'train.precision': expected one of fp32 | bf16 | fp16"),
    (["train.lora.rank=0"], "config key 'train.lora.rank': must be at least 1, got 0"),
    (["train.lora.dropout=1"], "config key 'train.lora.dropout': must be in [0, 1), got 1.0"),
    (["train.lora.target_modules=[]"], "config key 'train.lora.target_modules': must be a non-empty list"),
    (["train.lora.target_modules=q_proj"], "config key 'train.lora.target_modules': expected a list"),
    (["train.lora.rnk=4"], "unknown config key 'train.lora.rnk' (did you mean 'train.lora.rank'?)"),
    (["mixing.strategy=replce"], "config key 'mixing.strategy': expected one of replace"),
    (["generation.do_sample=maybe"], "config key 'generation.do_sample': expected true or false"),
    (["run.name=../escape"], "config key 'run.name'"),
    (["data.source=files"], "config key 'data.path': is required when data.source is 'files'"),
    (["train.lr"], "is not of the form key.sub=value"),
    # mixing.schedule (a YAML list on the command line): each error names the entry and the key
    (["mixing.schedule=[{from_generation: 2}, {from_generation: 3, human_fraction: 1.5}]"],
     "config key 'mixing.schedule[1].human_fraction': must be a fraction in [0, 1], got 1.5"),
    (["mixing.schedule=[{from_generation: 2, strategy: acumulate}]"],
     "config key 'mixing.schedule[0].strategy': expected one of replace | fixed_fraction"),
    (["mixing.schedule=[{from_generation: 2, human_frac: 0.5}]"],
     "unknown config key 'mixing.schedule[0].human_frac' (did you mean 'mixing.schedule[0].human_fraction'?)"),
    (["mixing.schedule=[{from_generation: 3}, {from_generation: 2}]"],
     "config key 'mixing.schedule[1].from_generation': must be in 4..run.generations=5 (entries in increasing "
     "order), got 2"),
    (["mixing.schedule=[{from_generation: 6}]"], "config key 'mixing.schedule[0].from_generation': must be in "
                                                 "1..run.generations=5"),
    (["mixing.schedule=[{strategy: accumulate}]"], "config key 'mixing.schedule[0].from_generation': is required"),
    (["mixing.schedule=[{from_generation: 2, human_pool: fresh}]"],
     "config key 'mixing.schedule[0].human_pool': fresh (set here or before) applies to strategy fixed_fraction"),
    (["mixing.schedule=[3]"], "config key 'mixing.schedule[0]': expected a mapping"),
    (["mixing.schedule=3"], "config key 'mixing.schedule': expected a list"),
    (["run.prefix_until=2"], "config key 'run.prefix_until': needs run.prefix_from"),
    (["data.language.domains=0"], "config key 'data.language.domains': must be at least 1, got 0"),
    (["data.language.domains=-1"], "config key 'data.language.domains': must be at least 1, got -1"),
    (["data.language.domains=2", "data.language.domain=2"],
     "config key 'data.language.domain': must be in 0..1 (data.language.domains=2), got 2"),
    (["data.language.domain=-1"], "config key 'data.language.domain': must be in 0..0"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as exc:
        config.load(None, overrides)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_schedule_gives_the_mixing_settings_of_each_generation():
    """Entries apply from their generation on and change only the keys they name (from the CLI as YAML)."""
    cfg = config.load(None, ["mixing.strategy=fixed_fraction", "mixing.human_pool=fresh",
                             "mixing.schedule=[{from_generation: 3, human_fraction: 1}, {from_generation: 5, "
                             "strategy: replace, human_pool: reuse}]"])
    at = {g: (m.strategy, m.human_fraction, m.human_pool) for g in range(1, 6) for m in [cfg.mixing.at(g)]}
    assert at == {1: ("fixed_fraction", 0.1, "fresh"), 2: ("fixed_fraction", 0.1, "fresh"),
                  3: ("fixed_fraction", 1.0, "fresh"), 4: ("fixed_fraction", 1.0, "fresh"),
                  5: ("replace", 1.0, "reuse")}
    assert isinstance(cfg.mixing.schedule[0]["human_fraction"], float)  # coerced as the key's type


def test_yaml_type_errors_and_sections(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("train: 3\n")
    with pytest.raises(ConfigError, match="'train': expected a mapping"):
        config.load(f)
    f.write_text("train:\n  epochs: true\n")
    with pytest.raises(ConfigError, match="'train.epochs': expected an integer, got True"):
        config.load(f)


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "must hold a mapping of sections, got list"),
    # A YAML error keeps what the parser was doing, the cause, and where.
    ("train: [unclosed\n", "is not valid YAML: while parsing a flow sequence (line 1, column 8): expected ',' or "
                           "']', but got '<stream end>' (line 2, column 1)"),
    ("train:\n  lr: 0.1\n\tepochs: 2\n", "is not valid YAML: while scanning for the next token: found character "
                                       "'\\t' that cannot start any token (line 3, column 1)"),
    # safe_load would keep the last of two values silently.
    ("train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n", "is not valid YAML: key 'lr' appears twice in one mapping "
                                                  "(lines 2 and 4)"),
    ("train: {lr: 0.1}\nmixing: {}\ntrain: {epochs: 2}\n", "key 'train' appears twice in one mapping (lines 1 and 3)"),
    # An empty file is refused, not run as the default.
    ("", "is empty: leave it out to run the built-in default"),
    ("# nothing set yet\n", "is empty: leave it out to run the built-in default"),
])
def test_bad_files(tmp_path: Path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        config.load(f)
    assert str(exc.value).startswith(f"config file {f} ") and message in str(exc.value), str(exc.value)


def test_a_merge_key_may_repeat_the_keys_it_merges(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("train: &fast {lr: 0.01, epochs: 1}\npretrain:\n  <<: *fast\n  lr: 0.02\n")
    cfg = config.load(f)
    assert (cfg.train.lr, cfg.pretrain.lr, cfg.pretrain.epochs) == (0.01, 0.02, 1)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        config.load("no/such/config.yaml")


def test_data_path_implies_files(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  source: hf\n  hf_name: wikitext\n")
    assert config.load(f, ["data.path=/some/dir"]).data.source == "files"
    assert config.load(f, ["data.path=/some/dir", "data.source=hf"]).data.source == "hf"
    assert config.load(None, ["data.path=/x"]).data.source == "files"


def test_a_sweep_run_s_config_is_the_one_its_command_loads(tmp_path: Path, monkeypatch):
    """A sweep builds each run's config in-process from the loaded file and the run's overrides (naming,
    sharing, validation); `testbed run FILE OVERRIDES` loads the same: data.path alone means data.source=files,
    and a relative path is the current directory's."""
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "c.yaml"
    f.write_text("train: {epochs: 3}\n")
    run = config.overridden(config.load(f), ["data.path=corpus", "tokenizer.name_or_path=./tok"])
    assert (run.data.source, run.data.path) == ("files", str(tmp_path / "corpus"))
    assert run.tokenizer.name_or_path == str(tmp_path / "tok")
    assert run == config.load(f, ["data.path=corpus", "tokenizer.name_or_path=./tok"])
    # A sweep setting's values (dotted keys, YAML types) give the same config as well.
    assert config.merge_values(config.load(f), {"data.path": "corpus"}) == config.load(f, ["data.path=corpus"])


def test_round_trip_and_diff():
    cfg = config.load(None, ["train.lr=0.01"])
    again = config.from_dict(__import__("yaml").safe_load(config.to_yaml(cfg)))
    assert again == cfg
    assert config.diff(cfg, config.load(None, ["train.lr=0.02", "run.seed=3"])) == ["run.seed", "train.lr"]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path):
    """Every file in configs/ loads, and every value it names reaches the config (none is dropped, renamed
    or overridden on the way; relative paths are made absolute against the file's directory)."""
    cfg = config.load(path)
    loaded = config.flatten(cfg.to_dict())
    written = {k: config.resolve_path(k, v, path.parent) if k in config.PATH_KEYS else v
               for k, v in config.flatten(config.read_yaml(path)).items() if not k.startswith("sweep.")}
    assert written, f"{path.name} sets nothing"
    assert {k: loaded.get(k, "missing") for k in written} == written


def test_eval_decoding_defaults_to_generation_and_is_checked_like_it():
    from testbed.evaluation import eval_decoding

    cfg = config.load(None, ["generation.num_beams=3", "generation.do_sample=false", "generation.top_p=0.8",
                             "generation.watermark.enabled=true"])
    assert eval_decoding(cfg) == dataclasses.replace(cfg.generation, watermark=config.WatermarkConfig())
    chosen = eval_decoding(config.load(None, ["generation.num_beams=3", "eval.decoding.num_beams=1",
                                              "eval.decoding.top_p=1.0"]))
    assert (chosen.num_beams, chosen.top_p, chosen.temperature) == (1, 1.0, 1.0)
    for key, value in (("top_p", "1.5"), ("num_beams", "0"), ("temperature", "0"), ("min_p", "1")):
        with pytest.raises(config.ConfigError, match=rf"config key 'eval\.decoding\.{key}': must"):
            config.load(None, [f"eval.decoding.{key}={value}"])
    with pytest.raises(config.ConfigError, match=r"unknown config key 'eval\.decoding\.beams'"):
        config.load(None, ["eval.decoding.beams=2"])


def test_default_yaml_is_the_builtin_default():
    assert config.load(REPO / "configs" / "default.yaml") == config.load(None)


def test_paper_configs_match_the_paper():
    for name, strategy, epochs in (("replace", "replace", 5), ("keep10", "fixed_fraction", 10)):
        cfg = config.load(REPO / "configs" / f"shumailov2024-opt125m-{name}.yaml")
        assert cfg.model.name_or_path == "facebook/opt-125m"
        assert (cfg.data.hf_name, cfg.data.hf_config, cfg.data.block_size) == ("wikitext", "wikitext-2-raw-v1", 64)
        assert cfg.data.preprocessing == "shumailov2024"
        t = cfg.train
        assert (t.lr, t.min_lr, t.batch_size, t.schedule, t.schedule_interval, t.warmup_steps) == \
            (2e-5, 1e-6, 128, "cosine", "epoch", 0)
        assert (t.weight_decay, t.weight_decay_all, t.max_grad_norm, t.precision, t.init) == \
            (0.01, True, 0.0, "fp32", "base")
        assert (t.epochs, t.gen0_epochs, cfg.mixing.strategy, cfg.run.generations) == (epochs, epochs, strategy, 9)
        g = cfg.generation
        assert (g.num_beams, g.do_sample, g.repetition_penalty) == (5, False, 1.0)
        assert (g.prompt_tokens, g.max_new_tokens, g.min_new_tokens) == (64, 64, 64)
        # Evaluation samples the model's own distribution, not the 5-beam search.
        d = cfg.eval.decoding
        assert (d.do_sample, d.num_beams, d.temperature, d.top_k, d.top_p, d.min_p, d.repetition_penalty) == \
            (True, 1, 1.0, 0, 1.0, 0.0, 1.0)
        assert t.select_best and cfg.sweep.grid == {"run.seed": [0, 1, 2, 3, 4]}
    assert config.load(REPO / "configs" / "shumailov2024-opt125m-keep10.yaml").mixing.human_fraction == 0.1


def test_every_key_is_described(capsys):
    """`testbed keys` has a description for every key, and finds a section by any part of its path."""
    from testbed.cli import main

    assert [d.key for d in config.describe_keys() if not d.comment.strip()] == []
    assert main(["keys", "slurm"]) == 0
    listed = [line.split("  ")[0] for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert listed and all(k.startswith("sweep.slurm.") for k in listed) and "sweep.slurm.gpus_per_run" in listed
    assert "accumulate_subsample" in config.describe_keys("mixing.strategy")[0].comment


def test_keys_shows_a_key_s_whole_comment(capsys):
    """`testbed keys KEY` prints the comment lines above the field in schema.py, joined, and wrapped."""
    from testbed.cli import main

    text = ("What generation g >= 1 trains on. replace: only the synthetic data of model g-1; fixed_fraction: that "
            "data with human_fraction of human examples; accumulate: the human data and every synthetic set so far; "
            "accumulate_subsample: that accumulated pool subsampled to the size of the human set")
    [doc] = config.describe_keys("mixing.strategy")
    assert (doc.type, doc.default, doc.comment) == ("replace | fixed_fraction | accumulate | accumulate_subsample",
                                                    "replace", text)
    assert main(["keys", "mixing.strategy"]) == 0
    head, *body = capsys.readouterr().out.splitlines()
    assert head == "mixing.strategy  replace | fixed_fraction | accumulate | accumulate_subsample = replace"
    assert " ".join(line.strip() for line in body) == text and all(len(line) <= 100 for line in body)
    # A comment at the end of the field's line, after the lines above it.
    assert config.describe_keys("train.gen0_epochs")[0].comment == \
        "generation 0 (e.g. from scratch) may need more; null = epochs"


@pytest.mark.parametrize("file, overrides, message", [
    # The value a new user expects to matter: 50% human data, but no generation mixes fixed_fraction.
    ("mixing: {human_fraction: 0.5}\n", [], "config key 'mixing.human_fraction': {file} sets 0.5, which this run "
     "ignores: it is read only with mixing.strategy=fixed_fraction in some generation"),
    ("", ["mixing.human_fraction=0.5"], "config key 'mixing.human_fraction': the command line sets 0.5, which this "
     "run ignores"),
    ("pretrain: {epochs: 4}\n", [], "config key 'pretrain.epochs': {file} sets 4, which this run ignores: it is read "
     "only with pretrain.source builtin or files"),
    ("curate: {minhash_threshold: 0.5}\n", [], "config key 'curate.minhash_threshold': {file} sets 0.5, which this "
     "run ignores: it is read only with curate.dedup=minhash"),
    ("generation: {mode: unconditional, prompt_tokens: 8}\n", [], "config key 'generation.prompt_tokens': {file} "
     "sets 8, which this run ignores: it is read only with generation.mode=prompted"),
    ("data: {source: hf, hf_name: wikitext, path: /some/dir}\n", [], "config key 'data.path': {file} sets "
     "'/some/dir', which this run ignores: it is read only with data.source=files"),
    # On a resume the saved config's values stand; the command line's are checked.
    ("SAVED", ["train.lora.rank=4"], "config key 'train.lora.rank': the command line sets 4, which this run ignores"),
])
def test_a_run_refuses_a_value_it_would_ignore(file, overrides, message, tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text(config.to_yaml(config.load(None)) if file == "SAVED" else file or "train: {epochs: 2}\n")
    config.load(f, overrides)  # a valid config: a sweep over it may still read the value
    with pytest.raises(ConfigError) as exc:
        config.load_run(f, overrides, saved=file == "SAVED")
    assert str(exc.value).startswith(message.format(file=f)), str(exc.value)


def test_a_run_takes_a_default_value_and_what_its_command_line_chose(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("mixing: {strategy: fixed_fraction, human_fraction: 0.5, human_pool: fresh}\n")
    # The command line chose replace for this run of a fixed_fraction file: the file's fraction is not an error.
    assert config.load_run(f, ["mixing.strategy=replace", "mixing.human_pool=reuse"]).mixing.human_fraction == 0.5
    # A key set to its default changes nothing (a sweep's run sets human_pool back to reuse like this).
    f.write_text("mixing: {human_fraction: 0.1, human_pool: reuse}\ncurate: {z_threshold: 4.0}\n")
    assert config.load_run(f) == config.load(None)
    # A file with a sweep section is the shared part of its runs: its values need not reach every run.
    f.write_text("mixing: {human_fraction: 0.5}\nsweep:\n  settings:\n    - {mixing.strategy: replace}\n"
                 "    - {mixing.strategy: fixed_fraction}\n")
    assert config.load_run(f, ["mixing.strategy=replace"]).mixing.human_fraction == 0.5


def test_a_mapping_key_on_the_command_line_adds_to_the_files_entries(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("eval:\n  corpora:\n    one: 'builtin:0'\nsweep:\n  slurm:\n    additional: {exclusive: true}\n")
    cfg = config.load(path, ["eval.corpora.two=builtin:all", "sweep.slurm.additional.comment=x"])
    assert cfg.eval.corpora == {"one": "builtin:0", "two": "builtin:all"}
    assert cfg.sweep.slurm.additional == {"exclusive": True, "comment": "x"}
