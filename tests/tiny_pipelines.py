"""A tiny Stable Diffusion pipeline folder written with ``save_pretrained``: the same
components and file layout as a real local copy (tokenizer, CLIP text encoder, UNet with
cross-attention, VAE, scheduler), random weights, a 26-letter vocabulary, 16 x 16 px output."""

from __future__ import annotations

import json
import string
from pathlib import Path


def write_tiny_text_to_image_pipeline(folder: Path) -> Path:
    """Write a random-weight ``StableDiffusionPipeline`` into ``folder``; returns ``folder``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    letters = list(string.ascii_lowercase)
    vocab = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]
    words = folder.parent / f"{folder.name}-vocab"
    words.mkdir(parents=True, exist_ok=True)
    (words / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (words / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        vocab_file=str(words / "vocab.json"),
        merges_file=str(words / "merges.txt"),
        model_max_length=16,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
    )
    StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder
