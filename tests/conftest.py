"""Fixtures shared by every test layer: small SynthTri datasets, tiny training configs, a tiny causal LM."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tvifm.config import load_config
from tvifm.config.schema import Config

SMALL_SIZE = (64, 32)
# mlflow.set_tracking_uri() and set_registry_uri() also write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI
# into os.environ, where every process a later test starts (a Ray head, a job driver) would inherit a
# server that is gone by then
_LEAKY_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _restore_leaky_env() -> Iterator[None]:
    """Put back the environment variables that libraries set as a side effect of a test."""
    saved = {key: os.environ.get(key) for key in _LEAKY_ENV}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SynthTri (36 identities, 64x32), generated once per test session."""
    from tvifm.data.synth import generate

    root = tmp_path_factory.mktemp("synth") / "synthtri"
    generate(root, ids=36, seed=3, image_size=SMALL_SIZE, images_per_cam=(3, 3), progress=False, workers=1)
    return root


def _tiny_config(root: Path, *overrides: str) -> Config:
    return load_config(
        "tiny",
        [
            f"data.root={root}",
            "data.image_size=[64, 32]",
            "data.ids_per_batch=4",
            "data.images_per_modality=2",
            "backbone.tiny_widths=[16, 16, 32, 32]",
            "text.context_length=48",
            "eval.trials=2",
            "eval.val_trials=1",
            "base.epochs=2",
            "base.warmup_epochs=0",
            "base.batches_per_epoch=4",
            "joint.epochs=2",
            "joint.warmup_epochs=0",
            "joint.batches_per_epoch=4",
            "base.eval_every=1",
            "joint.eval_every=1",
            *overrides,
        ],
    )


@pytest.fixture
def tiny_cfg(small_synth: Path) -> Callable[..., Config]:
    """``tiny_cfg(*overrides)``: the tiny preset on :func:`small_synth`, shrunk for tests (small images,
    narrow backbone, two short epochs per stage)."""
    return lambda *overrides: _tiny_config(small_synth, *overrides)


def _tiny_causal_lm(directory: Path) -> Path:
    """A 2-layer GPT-2 with a word-level tokenizer trained on a few sentences, saved like any checkpoint."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    corpus = [
        "rephrase the person's description using similar words, keep the meaning.",
        "description: a man with short black hair wearing a red jacket and blue jeans.",
        "rephrased: a guy with short black hair dressed in a red jacket and blue jeans.",
    ]
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2)
    config.eos_token_id = config.bos_token_id = tokenizer.eos_token_id
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained causal LM checkpoint (the LLM augmenter's path without a real LLM)."""
    return _tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"))
