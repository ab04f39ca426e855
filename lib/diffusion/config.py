"""The training configuration and the UNet and noise schedule it describes."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

ATTENTION_CHOICES = ("none", "mid", "bottom")
"""``none``: no attention; ``mid``: self-attention in the middle block only; ``bottom``:
also in the down and up blocks at the lowest resolution."""

PREDICTION_CHOICES = ("v_prediction", "epsilon")
"""What the UNet predicts. ``v_prediction`` (the default) regresses v = sqrt(abar) * noise -
sqrt(1 - abar) * image, which at high noise is the image itself, so the global colour of a
sample is learned with full weight. With ``epsilon`` that colour is a tiny part of the loss
at high noise and is amplified by 1/sqrt(abar) when sampling: after 2,000 steps on 100
OpenMoji emoji every sample came out on a strongly tinted background (README)."""

RESUMABLE_FIELDS = frozenset({"steps", "checkpoint_every", "keep_checkpoints"})
"""Fields a resumed run may change; every other field must match the stored config."""


@dataclass(frozen=True)
class TrainConfig:
    """A pixel-space DDPM training run. Sizes in pixels; ``lr`` per step; ``steps`` in total.

    The default is the "small" model measured in NOTES.md: 1.1 M parameters at 32x32.
    """

    image_size: int = 32
    block_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention: str = "mid"
    batch_size: int = 64
    lr: float = 3e-4
    lr_warmup_steps: int = 100
    weight_decay: float = 1e-6
    grad_clip: float = 1.0
    steps: int = 5000
    ema_decay: float = 0.999
    seed: int = 0
    flip: bool = True
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_channels", tuple(int(c) for c in self.block_channels))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field and what is valid."""
        levels = len(self.block_channels)
        if levels < 1 or any(c < 1 for c in self.block_channels):
            raise ValueError(f"block_channels must be positive, got {self.block_channels}")
        if self.image_size < 8 or self.image_size % (2 ** (levels - 1)):
            raise ValueError(
                f"image_size must be at least 8 and divisible by {2 ** (levels - 1)} "
                f"for {levels} blocks, got {self.image_size}"
            )
        if self.attention not in ATTENTION_CHOICES:
            raise ValueError(f"attention must be one of {ATTENTION_CHOICES}, not {self.attention}")
        if self.prediction_type not in PREDICTION_CHOICES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_CHOICES}, not {self.prediction_type!r}"
            )
        if self.beta_schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
            raise ValueError(f"unknown beta_schedule {self.beta_schedule!r}")
        for name in ("layers_per_block", "batch_size", "steps", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.keep_checkpoints < 1 or self.lr_warmup_steps < 0:
            raise ValueError("keep_checkpoints must be >= 1 and lr_warmup_steps >= 0")
        if not (self.lr > 0 and 0.0 <= self.ema_decay < 1.0):
            raise ValueError(f"need lr > 0 and 0 <= ema_decay < 1, got {self.lr}, {self.ema_decay}")

    @property
    def norm_groups(self) -> int:
        """GroupNorm groups: 32 where the channel counts allow it, else their common divisor."""
        return math.gcd(32, *self.block_channels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["block_channels"] = list(self.block_channels)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training config field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def resumed_with(self, **overrides: Any) -> TrainConfig:
        """This config with the fields a resumed run may change (``None`` leaves a field).

        Raises:
            ValueError: an override of another field differs from this config.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        if "block_channels" in given:
            given["block_channels"] = tuple(given["block_channels"])
        clashes = [
            f"{k} (run: {getattr(self, k)!r}, asked: {v!r})"
            for k, v in given.items()
            if k not in RESUMABLE_FIELDS and getattr(self, k) != v
        ]
        if clashes:
            raise ValueError(
                "a resumed run keeps its training config; these differ: " + "; ".join(clashes)
            )
        return replace(self, **{k: v for k, v in given.items() if k in RESUMABLE_FIELDS})


def build_unet(config: TrainConfig) -> Any:
    """A fresh ``diffusers.UNet2DModel`` (float32, on the CPU) for ``config``."""
    from diffusers import UNet2DModel

    levels = len(config.block_channels)
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if config.attention == "bottom" and levels > 1:
        down[-1] = "AttnDownBlock2D"
        up[0] = "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=config.image_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=config.layers_per_block,
        block_out_channels=config.block_channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        add_attention=config.attention != "none",
        norm_num_groups=config.norm_groups,
        attention_head_dim=min(8, config.block_channels[-1]),
    )


def build_noise_scheduler(config: TrainConfig) -> Any:
    """The ``diffusers.DDPMScheduler`` of the forward process and of what the UNet predicts."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        clip_sample=True,
    )
