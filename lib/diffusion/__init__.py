"""Small pixel-space diffusion models for the paper's central experiment.

Somepalli et al. find that diffusion models trained on small datasets replicate their
training images, and replicate less as the dataset grows. This package trains such models
on nested OpenMoji subsets (:mod:`lib.diffusion.train`), ships their fp16 EMA weights
(:mod:`lib.diffusion.export`), samples them (:mod:`lib.diffusion.sample`), loads any local
diffusers pipeline (:mod:`lib.diffusion.pipelines`) and measures replication per model
(:mod:`lib.diffusion.study`).

``torch`` and ``diffusers`` are imported inside the functions that need them, never here.
"""

from __future__ import annotations
