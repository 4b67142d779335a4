"""The experiment schema: nested typed dataclasses, their defaults, and the comment on each field (which
`testbed keys` shows). The error every config problem raises is defined here too."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters escaped: keys and values in messages come from
    the user's text, and a message stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(ValueError):
    """A user error in a config: the message is one line naming the key (or file) and the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {problem}")



@dataclass
class RunConfig:
    name: str | None = None  # run directory name; default: <config stem>-<timestamp>
    out_dir: str = "runs"  # parent directory of run directories
    seed: int = 0  # seeds everything: data, init, shuffling, generation, evaluation
    generations: int = 5  # recursive generations after generation 0 (models 0..N)
    keep_checkpoints: Literal["all", "last", "none"] = "all"  # gen_000 is always kept (it scores data)
    # A run directory whose generations 0..prefix_until this run takes instead of computing them (their
    # folders, synthetic sets and metrics rows; then it continues from prefix_until + 1): sweeps share each
    # common prefix among runs that differ only after it. The two configs must agree on everything those
    # generations depend on (sharing.prefix_values).
    prefix_from: str | None = None
    # the last generation taken from prefix_from (0: generation 0 alone; -1: the pretrained base alone, see pretrain)
    prefix_until: int = 0
    log_with: Literal["none", "tensorboard", "wandb"] = "none"  # trackers through accelerate: loss, lr, metrics
    # CPU runs: torch's thread count. null: torch's default (the core count), written into the run's
    # config.yaml, so that a resume uses the same count: sums split over other counts round differently.
    threads: int | None = None
    # CPU runs: torch's AVX2 kernels and MKL's compatible code path whatever else the CPU offers
    # (ATEN_CPU_CAPABILITY=avx2, MKL_CBWR=COMPATIBLE), for the same numbers on other x86 CPUs with AVX2.
    portable_numerics: bool = False


@dataclass
class LanguageConfig:
    """The built-in reference language (see testbed/language.py)."""

    seed: int = 1234  # the language itself (its vocabulary and probabilities)
    nouns: int = 1200  # words in the noun class (the largest: where the rare tail lives)
    verbs: int = 100  # words in the verb class; each verb has its own ranking of object nouns
    adjectives: int = 100  # words in the adjective class
    adverbs: int = 50  # words in the adverb class
    zipf_exponent: float = 1.1  # every class is Zipf-distributed with this exponent: larger, a thinner tail
    train_sentences: int = 12000  # sentences drawn for the human training split (fixed by run.seed)
    valid_sentences: int = 600  # sentences of the validation split (checkpoint selection)
    test_sentences: int = 1200  # sentences of the test split (ppl_human and the KL estimate)
    sentences_per_line: int = 8  # sentences joined into one line of the corpus
    domains: int = 1  # topics sharing grammar and vocabulary, each its own Zipf ranking of the nouns
    domain: int = 0  # the domain of the human text the run fine-tunes on (0..domains-1)


@dataclass
class DataConfig:
    # builtin: the reference language with known probabilities (testbed/language.py); files: a directory of
    # train/valid/test.txt (data.path); hf: a Hugging Face dataset (data.hf_name, needs the hub or its cache)
    source: Literal["builtin", "files", "hf"] = "builtin"
    # files: a directory holding train.txt, valid.txt, test.txt. Relative paths: in a config file relative to
    # the file's directory, on the command line to the current directory (the same for the keys below)
    path: str | None = None
    hf_name: str | None = None  # hf: dataset name, e.g. wikitext
    hf_config: str | None = None  # hf: dataset config, e.g. wikitext-2-raw-v1
    hf_text_column: str = "text"  # hf: the dataset column that holds the text
    block_size: int = 64  # training/evaluation blocks (the paper: 64 tokens)
    max_train_blocks: int | None = None  # cap the human training set (quick runs); null = all
    max_eval_blocks: int | None = None  # cap the validation and test blocks; null = all
    # How lines become a token stream. clean: lines stripped, empty ones dropped, end-of-text after each,
    # no special tokens. shumailov2024 (the authors' code): every raw line tokenized on its own with the
    # tokenizer's own special tokens (OPT's BOS before each), empty lines and the newline kept, no EOS added.
    preprocessing: Literal["clean", "shumailov2024"] = "clean"
    language: LanguageConfig = field(default_factory=LanguageConfig)


@dataclass
class TokenizerConfig:
    # A hub name, a directory saved by save_pretrained, or a directory with vocab.json + merges.txt.
    # null: the model's own tokenizer if model.name_or_path is set, else a BPE trained on the human
    # training split. A local path starts with / . ~ or exists; relative ones as for data.path.
    name_or_path: str | None = None
    vocab_size: int = 3072  # for a trained BPE


@dataclass
class ModelConfig:
    # hub name or local path (one that starts with / . ~ or exists; relative as for data.path); null: build
    # `arch` from scratch
    name_or_path: str | None = None
    arch: Literal["gpt2", "opt", "llama", "gpt_neox"] = "gpt2"  # gpt_neox: Pythia's
    layers: int = 2  # from scratch (name_or_path null): transformer blocks
    width: int = 128  # from scratch: hidden size (the MLP is 4x as wide)
    heads: int = 4  # from scratch: attention heads (width must divide by it)
    context: int = 128  # maximum positions
    # Run code that a hub checkpoint ships (custom model classes): only for checkpoints you trust
    trust_remote_code: bool = False


@dataclass
class WatermarkConfig:
    """Kirchenbauer et al. (2023) green-list watermark, through transformers' WatermarkingConfig (same
    fields and defaults): generation adds `bias` to the logits of a `greenlist_ratio` share of the
    vocabulary, re-drawn from the previous `context_width` tokens and `hashing_key`."""

    enabled: bool = False  # watermark the synthetic data of every generation (curate.detector=watermark reads it)
    greenlist_ratio: float = 0.25  # share of the vocabulary on the green list at each step
    bias: float = 2.0  # added to the green tokens' logits: larger, an easier detection and a larger distortion
    hashing_key: int = 15485863  # the secret key of the green lists (detector and generator must share it)
    seeding_scheme: Literal["lefthash", "selfhash"] = "lefthash"  # how the previous tokens seed the green list
    context_width: int = 1  # previous tokens that seed each step's green list


@dataclass
class GenerationConfig:
    # prompted: continue the first prompt_tokens of each human training block (the paper); unconditional:
    # sample from the start token alone
    mode: Literal["prompted", "unconditional"] = "prompted"
    prompt_tokens: int = 32  # prompted: the first k tokens of each human training block
    max_new_tokens: int = 32  # tokens generated after the prompt (an example ends earlier at end-of-text)
    min_new_tokens: int = 0  # = max_new_tokens: end-of-text is never chosen, every example has that length
    num_samples: int | None = None  # synthetic examples per generation; null = as many as human ones
    do_sample: bool = True  # false: greedy (num_beams 1) or beam search
    num_beams: int = 1  # > 1: beam search (the paper uses 5); its samples describe the search
    temperature: float = 1.0  # divides the logits before sampling: below 1 sharper, above 1 flatter
    top_k: int = 0  # 0: off
    top_p: float = 0.9  # truncation: the tail is never sampled, so collapse shows quickly
    min_p: float = 0.0  # 0: off
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the text (1: off)
    # Sequences per generate call; a batch that does not fit in memory is redone in smaller pieces with the
    # same random draws, so results do not depend on it fitting
    batch_size: int = 256
    watermark: WatermarkConfig = field(default_factory=WatermarkConfig)


@dataclass
class MixingConfig:
    # What generation g >= 1 trains on. replace: only the synthetic data of model g-1; fixed_fraction: that
    # data with human_fraction of human examples; accumulate: the human data and every synthetic set so far;
    # accumulate_subsample: that accumulated pool subsampled to the size of the human set
    strategy: Literal["replace", "fixed_fraction", "accumulate", "accumulate_subsample"] = "replace"
    human_fraction: float = 0.1  # fixed_fraction: share of human examples in the training set
    fixed_subset: bool = False  # fixed_fraction: the same human subset every generation
    # fixed_fraction: the synthetic part is the continuations of the blocks the human part does not take, so
    # each training block appears once, as itself or as its model's continuation. With fixed_subset: true this
    # is the Shumailov et al. code's draw (it reseeds every call: the same tenth each cycle). Needs every
    # human block prompted once (prompted mode, generation.num_samples null) and no curation filter.
    complementary: bool = False
    # fixed_fraction: reuse: the human examples are drawn from generation 0's training blocks; fresh: each
    # generation gets human blocks no earlier generation saw, from the training split beyond
    # data.max_train_blocks (the "fresh data loop"); pretrain: drawn from the pretraining corpus's blocks (the
    # base's data, e.g. every domain of the built-in language: healing with what the base knew)
    human_pool: Literal["reuse", "fresh", "pretrain"] = "reuse"
    # Mixing that changes by generation: entries {from_generation: k, <keys above>}, in increasing k
    # (1..run.generations); each sets the keys it names from generation k on, the others keep their values.
    # The keys above hold from generation 1 until the first entry.
    schedule: list[dict[str, Any]] = field(default_factory=list)

    def at(self, generation: int) -> MixingConfig:
        """The mixing settings of `generation` (>= 1): these keys with every schedule entry up to it applied."""
        values = {k: v for entry in self.schedule if entry["from_generation"] <= generation
                  for k, v in entry.items() if k != "from_generation"}
        return dataclasses.replace(self, schedule=[], **values)


@dataclass
class CurateConfig:
    """What reaches training (testbed/curate.py). Filters on each generation's synthetic set (the producer's
    curation) run before mixing; the detector screens the mixed pool, as a scraper would."""

    # none | watermark (transformers' WatermarkDetector; needs generation.watermark.enabled) | oracle (flags
    # drawn from the known provenance at detector_tpr / detector_fpr). Flagged examples are dropped, human
    # ones included.
    detector: Literal["none", "watermark", "oracle"] = "none"
    z_threshold: float = 4.0  # watermark: flag a text whose z-score exceeds this
    detector_tpr: float = 0.9  # oracle: chance a synthetic example is flagged
    detector_fpr: float = 0.01  # oracle: chance a human example is flagged
    # none | exact (normalised text) | minhash (near-duplicates, datasketch MinHash-LSH): within a generation
    # and, when earlier synthetic data stays in the pool (accumulate), against earlier generations
    dedup: Literal["none", "exact", "minhash"] = "none"
    minhash_threshold: float = 0.8  # Jaccard similarity above which two texts are duplicates
    minhash_shingle: int = 2  # words per shingle (short texts need short shingles)
    minhash_perm: int = 128  # minhash: permutations per signature (more: a sharper threshold, slower)
    # Perplexity filter under generation 0: texts beyond the human 99th percentile are dropped as gibberish,
    # then the share perplexity_keep with the highest (or, as an ablation, lowest) perplexity is kept. 1: off
    perplexity_keep: float = 1.0
    perplexity_order: Literal["highest", "lowest"] = "highest"  # which end of the perplexity ranking is kept
    verifier: Literal["none", "grammar"] = "none"  # grammar (built-in language): keep only grammatical texts
    # importance: resample the screened pool with weights (1 - c)^resample_bias, c the detector's confidence
    # that a text is synthetic (Drayson et al. 2025): upsampled by resample_upsample, at most
    # resample_max_repeats copies of one example
    resample: Literal["none", "importance"] = "none"
    resample_bias: float = 10.0  # importance: the exponent of (1 - c); larger, synthetic-looking texts rarer
    resample_upsample: float = 1.5  # importance: the resampled pool's size over the screened pool's
    resample_max_repeats: int = 3  # importance: copies of one example at most


@dataclass
class LoraConfig:
    """Low-rank adapters through peft: each generation trains a fresh adapter on the weights train.init names,
    then merges it into them, so every checkpoint is a plain model (loads with from_pretrained)."""

    enabled: bool = False  # train LoRA adapters instead of every weight (large models on one GPU)
    rank: int = 16  # the adapters' rank: larger, more capacity and memory
    alpha: float = 32.0  # the update is scaled by alpha / rank
    dropout: float = 0.05  # dropout on the adapters' input
    # Module names to adapt; null: peft's default for the architecture (llama, opt: q_proj, v_proj;
    # gpt2: c_attn; gpt_neox: query_key_value)
    target_modules: list[str] | None = None


@dataclass
class TrainConfig:
    epochs: int = 2  # passes over each generation's training set (the paper: 5)
    gen0_epochs: int | None = 6  # generation 0 (e.g. from scratch) may need more; null = epochs
    lr: float = 2e-3  # AdamW's peak learning rate (after warmup), for every generation
    min_lr: float = 0.0  # cosine decays to this
    schedule: Literal["cosine", "constant", "linear"] = "cosine"  # the learning rate's decay within a generation
    # step: the schedule advances every optimizer step; epoch: it is held within an epoch and advances per
    # epoch (torch's CosineAnnealingLR(T_max=epochs) stepped once an epoch, as the paper's code does)
    schedule_interval: Literal["step", "epoch"] = "step"
    warmup_steps: int = 0  # linear warmup from 0 to lr over this many optimizer steps
    # Examples of one step over all processes (accelerate launch splits it evenly); the effective batch is
    # batch_size x grad_accum, whatever the process count.
    batch_size: int = 16
    grad_accum: int = 1  # micro-batches per optimizer step (less memory for the same effective batch)
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    weight_decay_all: bool = False  # false: decay weight matrices only; true: biases and norms too (torch's default)
    max_grad_norm: float = 1.0  # 0: no clipping
    # Where generation g >= 1 starts: previous: model g-1 (drift compounds in the weights); base: the
    # pretrained (or freshly initialised) base model; gen0: the generation-0 model
    init: Literal["previous", "base", "gen0"] = "previous"
    # Packing: put an end-of-text between consecutive synthetic examples that do not end with one
    # (unrelated continuations are otherwise glued together)
    eos_between_examples: bool = False
    select_best: bool = True  # keep the checkpoint best on human validation (evaluated every epoch)
    eval_every: int = 0  # also evaluate every N optimizer steps (0: only at epoch ends)
    # Weights are always fp32 master weights; bf16/fp16 autocast the forward passes of training, evaluation,
    # generation and scoring alike (fp16 adds a gradient scaler). On a CPU measure before choosing bf16.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False  # torch.compile the training model (pays off on long runs; compiling takes ~1 min)
    # Recompute activations in the backward pass: less memory for about a third more compute (large models)
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class EvalDecodingConfig:
    """How evaluation samples are drawn, key by key; null: generation's value of the same key (by default
    evaluation decodes as generation does). Evaluation samples are never watermarked. Under beam search
    (generation.num_beams > 1) the samples' diversity describes the search, not the model's distribution:
    set do_sample=true, num_beams=1 here to measure the model."""

    do_sample: bool | None = None  # null: generation.do_sample
    num_beams: int | None = None  # null: generation.num_beams
    temperature: float | None = None  # null: generation.temperature
    top_k: int | None = None  # null: generation.top_k
    top_p: float | None = None  # null: generation.top_p
    min_p: float | None = None  # null: generation.min_p
    repetition_penalty: float | None = None  # null: generation.repetition_penalty


@dataclass
class EvalConfig:
    num_samples: int = 128  # evaluation samples for the diversity metrics
    prompt_tokens: int = 16  # prompted mode: prefix of each test block used as prompt
    max_new_tokens: int = 32  # tokens per evaluation sample
    batch_size: int = 64  # sequences per forward or generate call when evaluating (memory, not results)
    tail_rank: int = 200  # tail = words ranked below this in human training frequency
    tail_tokens: int = 256  # tail_token_mass: tokens outside the human training text's most frequent this many
    kl_alpha: float = 0.5  # unigram_kl: add-alpha smoothing of both unigram distributions
    decoding: EvalDecodingConfig = field(default_factory=EvalDecodingConfig)
    # Extra evaluation sets, name -> where its text comes from: builtin:D (domain D of the built-in language),
    # builtin:all (the mixture of its domains), hf:NAME or hf:NAME/CONFIG (a hub dataset's test split), or a
    # directory holding test.txt. Each adds ppl_NAME with its head/tail split (ppl_NAME_head, ppl_NAME_tail: by
    # the token's frequency in that corpus's own test text) and, on the built-in language, kl_per_word_NAME
    # to every row; generation 0's row also scores the base model on it (ppl_NAME_zero_shot)
    corpora: dict[str, str] = field(default_factory=dict)


@dataclass
class PretrainConfig:
    """A base model trained from scratch before generation 0, as a hub model was pretrained, so that generation
    0 fine-tunes a model that knows more than its fine-tuning data. Trained once, saved in the run's base/
    folder, and shared by every run of a sweep with the same pretraining (and model, tokenizer) values."""

    # none: generation 0 trains a random init (model.name_or_path null) or the named checkpoint, which is then
    # the base; builtin: the built-in language's mixture of all data.language.domains; files: pretrain.path
    source: Literal["none", "builtin", "files"] = "none"
    path: str | None = None  # files: a directory holding train.txt, the pretraining text
    sentences: int = 24000  # builtin: sentences drawn from the mixture of the domains
    max_blocks: int | None = None  # cap the pretraining blocks (data.block_size tokens each); null = all
    epochs: int = 2  # passes over the pretraining blocks
    lr: float = 2e-3  # peak learning rate of pretraining (the rest of the optimizer is train's)
    # The base's own seed (its corpus draw, initialisation and data order), apart from run.seed: runs of
    # every seed fine-tune one base, as they would one hub checkpoint
    seed: int = 0


@dataclass
class SlurmConfig:
    """`testbed sweep --launcher slurm`: one array task per run, or per part of a run (flags override these)."""

    partition: str | None = None  # null: the cluster's default partition
    time_min: int = 240  # time limit per run; a run that reaches it is requeued and resumes
    gpus_per_run: int = 0  # sbatch --gpus-per-node (one node a run); 0: CPU runs
    cpus_per_run: int = 1  # sbatch --cpus-per-task (a run's OMP_NUM_THREADS)
    mem_gb: float | None = None  # null: the partition's default
    array_parallelism: int = 64  # runs at once, at most
    max_requeues: int = 3  # time-limit requeues per run (pre-emptions requeue without a limit)
    account: str | None = None  # sbatch --account: the account charged (null: the user's default)
    qos: str | None = None  # sbatch --qos: the quality of service (null: the account's default)
    constraint: str | None = None  # sbatch --constraint: node features, e.g. h100 or "a100|h100"
    # Any other sbatch options, name: value (e.g. {reservation: R, exclude: node7, hold: true}); passed as
    # submitit's slurm_additional_parameters, they override the keys above where they name the same option.
    additional: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepConfig:
    """Used by `testbed sweep` only (`testbed run` ignores it): runs = settings x grid."""

    # Alternatives, each a mapping of dotted keys to values, e.g. {mixing.strategy: replace}, and an optional
    # `name`: the setting's label in reports (default: its values that vary, short).
    settings: list[dict[str, Any]] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)  # dotted key -> values: the cross product
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


