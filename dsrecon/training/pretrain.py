"""What teacher-space pretraining (``--pretrain-epochs``) fits: each member's latent model without
the measurement kernel (`kernel_free`) on the deconvolved teacher signals (`teacher_space`). The
stage itself is `Trainer.pretrain` (and `GroupTrainer.pretrain`): a second engine on these, whose
parameters the fit through the kernel starts from."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch

from dsrecon.models.convssm import ConvSSMNet
from dsrecon.training.batches import Prepared
from dsrecon.training.prepare import PreparedData


def kernel_free(net: ConvSSMNet) -> ConvSSMNet:
    """A copy of ``net`` that observes its latent itself (kernel taps [1]): the model of teacher-space pretraining."""
    p = copy.deepcopy(net)
    p.taps = torch.ones(1, 1, 1, dtype=p.taps.dtype, device=p.taps.device)
    p.__dict__.pop("_toeplitz_cache", None)
    return p


def teacher_space(data: PreparedData) -> PreparedData:
    """``data`` with every training split's observations replaced by its teacher signals (the frames
    with a reliable teacher; the rest masked out) and no validation split: what pretraining fits."""
    train = []
    for r in data.train:
        ok = r.mask & np.isfinite(r.teacher).all(axis=1)
        train.append(Prepared(np.where(ok[:, None], r.teacher, 0.0).astype(np.float32), ok, r.teacher, r.regressors,
                              f"{r.source} (teacher signals)", r.inputs))
    return replace(data, train=train, test=[])
