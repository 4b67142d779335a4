"""Batched, seeded generation of synthetic examples (prompted or unconditional) with the KV cache."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from testbed.batching import run_fitting
from testbed.config import Config, GenerationConfig, WatermarkConfig
from testbed.data import spread
from testbed.mixing import Examples, synthetic_examples
from testbed.model import autocast, evaluating, start_token


def candidates(scores: torch.Tensor, decoding: GenerationConfig) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The tokens that temperature / top-k / top-p / min-p leave, and their (unnormalised) probabilities.

    Same result as transformers' warpers in that order, without their full-vocabulary sort: top-p only
    needs the largest probabilities, so `topk` grows until it holds the nucleus of every row. Returns
    (token ids, weights) with ids None when the candidates are the whole vocabulary.
    """
    probs = (scores.float() / decoding.temperature).softmax(dim=-1)
    vocab = probs.shape[-1]
    if decoding.top_k == 0 and decoding.top_p >= 1.0:
        ids, weights = None, probs
    else:
        k = min(decoding.top_k or 64, vocab)
        while True:
            if k > vocab // 8:  # a large top-k costs more than the full sort transformers does
                weights, ids = probs.sort(dim=-1, descending=True)
                keep = decoding.top_k or vocab
                weights, ids = weights[:, :keep], ids[:, :keep]
                break
            weights, ids = probs.topk(k, dim=-1)  # descending
            if decoding.top_k or decoding.top_p >= 1.0 or (weights.sum(dim=-1) >= decoding.top_p).all():
                break  # every row's nucleus lies in the top k
            k *= 4
        if decoding.top_p < 1.0:
            # Keep a token if the probability ranked strictly above it is below top_p (renormalised after
            # top-k, as transformers does); the most probable token always stays.
            mass = weights / weights.sum(dim=-1, keepdim=True) if decoding.top_k else weights
            weights = weights * ((mass.cumsum(dim=-1) - mass) < decoding.top_p)
    if decoding.min_p > 0:
        top = weights.max(dim=-1, keepdim=True).values
        weights = weights * (weights >= decoding.min_p * top)
    return ids, weights


class StepDraws:
    """The uniforms of one batch's sampling: a (rows, 1) draw per decode step from the call's generator, made
    the first time a step asks for it, as one sampler over the whole batch draws them. Pieces of the batch
    (redone after running out of memory, testbed/batching.py) read the same numbers, and the generator
    advances as if the batch had run whole, so later batches draw the same too."""

    def __init__(self, generator: torch.Generator, rows: int):
        self.generator, self.rows = generator, rows
        self.steps: list[torch.Tensor] = []

    def at(self, step: int) -> torch.Tensor:
        while len(self.steps) <= step:
            self.steps.append(torch.rand(self.rows, 1, generator=self.generator, device=self.generator.device))
        return self.steps[step]


class InverseCDFSampler(LogitsProcessor):
    """Draws the next token itself and leaves only that token finite, so greedy decoding takes it.

    Truncation by `candidates`, then the row's uniform through the candidates' CDF (cumsum + searchsorted):
    the same distribution as transformers' warpers + torch.multinomial, which on a CPU cost most of a small
    model's decode step. The uniforms are rows `rows` of `draws` (a piece of the batch): a piece redone
    after running out of memory samples what the whole batch would have. Runs after transformers' own
    processors (e.g. the repetition penalty).
    """

    def __init__(self, decoding: GenerationConfig, draws: StepDraws, rows: slice = slice(None)):
        self.decoding, self.draws, self.rows = decoding, draws, rows
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ids, weights = candidates(scores, self.decoding)
        cdf = weights.cumsum(dim=-1)
        u = self.draws.at(self.step)[self.rows].to(cdf.device) * cdf[:, -1:]
        self.step += 1
        pick = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[-1] - 1)
        token = pick if ids is None else ids.gather(1, pick)
        return torch.full_like(scores, -math.inf).scatter_(1, token, 0.0)


def draws_own_uniforms(decoding: GenerationConfig) -> bool:
    """Plain sampling (one beam, no watermark) goes through InverseCDFSampler, on every device."""
    return decoding.do_sample and decoding.num_beams == 1 and not decoding.watermark.enabled


def decoding_kwargs(decoding: GenerationConfig, draws: StepDraws | None = None, rows: slice = slice(None)) -> dict:
    """`generate` keyword arguments for the configured decoding: greedy, beam search or sampling.

    Plain sampling draws through InverseCDFSampler on top of greedy decoding, from `draws` (see there):
    measured faster than torch.multinomial on a CPU, and the same samples for a batch redone in pieces, on
    every device. Beam sampling and sampling under a watermark use transformers' own sampler (from the
    generator `generate` seeds; a batch redone in pieces after running out of memory draws differently there).
    """
    kwargs = dict(num_beams=decoding.num_beams, repetition_penalty=decoding.repetition_penalty)
    if decoding.watermark.enabled:  # its logits processor runs before the sampler below
        kwargs["watermarking_config"] = watermarking_config(decoding.watermark)
    # The model's own generation_config may carry sampling defaults: name every knob.
    off = dict(do_sample=False, temperature=None, top_k=None, top_p=None)
    # transformers applies the watermark after every other processor, so it must also draw the token.
    if draws_own_uniforms(decoding):
        if draws is None:
            raise ValueError("plain sampling needs its draws (one uniform per row and step)")
        kwargs.update(off, logits_processor=LogitsProcessorList([InverseCDFSampler(decoding, draws, rows)]))
    elif decoding.do_sample:
        kwargs.update(do_sample=True, temperature=decoding.temperature, top_k=decoding.top_k, top_p=decoding.top_p,
                      min_p=decoding.min_p or None)
    else:
        kwargs.update(off)
    return kwargs


def watermarking_config(w: WatermarkConfig):
    """transformers' WatermarkingConfig of generation.watermark (the detector needs the same one)."""
    from transformers import WatermarkingConfig

    return WatermarkingConfig(greenlist_ratio=w.greenlist_ratio, bias=w.bias, hashing_key=w.hashing_key,
                              seeding_scheme=w.seeding_scheme, context_width=w.context_width)


def synthetic_prompts(cfg: Config, train_blocks: np.ndarray, seed: int, bos: int) -> np.ndarray:
    """The prompts of one synthetic set: the first prompt_tokens of human training blocks, drawn evenly
    across the split when generation.num_samples asks for fewer than there are blocks (every block, in
    order, by default); a column of start tokens when unconditional."""
    gen = cfg.generation
    n = gen.num_samples or len(train_blocks)
    if gen.mode == "unconditional":
        return np.full((n, 1), bos, dtype=np.int64)
    return train_blocks[spread(len(train_blocks), n, seed), : gen.prompt_tokens]


def continuation_lengths(ids: np.ndarray, eos: int) -> np.ndarray:
    """Length of each continuation up to and including its first eos (the rest is padding)."""
    is_eos = ids == eos
    return np.where(is_eos.any(axis=1), is_eos.argmax(axis=1) + 1, ids.shape[1])


@torch.inference_mode()
def generate(model, prompts: np.ndarray, decoding: GenerationConfig, max_new_tokens: int, batch_size: int,
             seed: int, eos: int, desc: str = "generate") -> tuple[np.ndarray, np.ndarray]:
    """Continue every prompt row; return (ids (n, max_new_tokens) padded with eos, lengths).

    `prompts` is (n, k) token ids; unconditional generation passes a column of the start token.
    The seed fixes every draw, so the same model, prompts, seed and batch_size give the same continuations,
    also when a batch is redone in smaller pieces after running out of memory (testbed/batching.py).
    """
    torch.manual_seed(seed)
    n = len(prompts)
    out = np.full((n, max_new_tokens), eos, dtype=np.int64)
    with evaluating(model) as device:
        generator = torch.Generator(device).manual_seed(seed) if draws_own_uniforms(decoding) else None

        def piece(a: int, b: int, start: int, draws: StepDraws | None) -> None:
            batch = torch.as_tensor(prompts[a:b], device=device)
            result = model.generate(
                input_ids=batch, attention_mask=torch.ones_like(batch), max_new_tokens=max_new_tokens,
                min_new_tokens=min(decoding.min_new_tokens, max_new_tokens) or None, pad_token_id=eos,
                eos_token_id=eos, use_cache=True, **decoding_kwargs(decoding, draws, slice(a - start, b - start)),
            )
            new = result[:, batch.shape[1] :].cpu().numpy()
            out[a:b, : new.shape[1]] = new

        for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False):
            stop = min(start + batch_size, n)
            draws = StepDraws(generator, stop - start) if generator is not None else None
            run_fitting("generate", batch_size, start, stop, partial(piece, start=start, draws=draws))
    return out, continuation_lengths(out, eos)


def generate_sharded(model, prompts: np.ndarray, decoding: GenerationConfig, max_new_tokens: int, batch_size: int,
                     seed: int, eos: int, accelerator, desc: str = "generate") -> tuple[np.ndarray, np.ndarray]:
    """`generate` with the prompts split across processes (accelerate launch); every process gets all results.

    Process r generates its contiguous share with seed + r, so one process reproduces `generate` exactly.
    """
    share = np.array_split(np.arange(len(prompts)), accelerator.num_processes)[accelerator.process_index]
    ids, lengths = generate(model, prompts[share], decoding, max_new_tokens, batch_size,
                            seed + accelerator.process_index, eos, desc)
    parts = gather_object([(ids, lengths)])  # in process order; a no-op with one process
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def decode(tokenizer, ids: np.ndarray, lengths: np.ndarray) -> list[str]:
    """Texts of padded id rows, each cut at its length, without special tokens."""
    rows = [row[:n] for row, n in zip(ids.tolist(), lengths.tolist())]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def synthesize(model, cfg: Config, train_blocks: np.ndarray, tokenizer, accelerator, generation: int,
               seed: int) -> tuple[Examples, list[str]]:
    """The generation stage: model g-1 writes generation g's synthetic set (batched, seeded, split across
    processes, under the run's autocast), as examples with provenance and as texts."""
    gen = cfg.generation
    prompts = synthetic_prompts(cfg, train_blocks, seed, start_token(tokenizer))
    with autocast(cfg.train.precision, accelerator.device):
        ids, lengths = generate_sharded(model, prompts, gen, gen.max_new_tokens, gen.batch_size, seed,
                                        tokenizer.eos_token_id, accelerator, desc=f"gen {generation} generate")
    return synthetic_examples(ids, lengths, generation), decode(tokenizer, ids, lengths)
