import math

import pytest
import torch

from ebmkit.config import ScheduleConfig
from ebmkit.training.schedule import apply_lr, lr_factor


def test_warmup_is_linear_then_flat():
    cfg = ScheduleConfig(warmup=4)
    assert [lr_factor(cfg, i, 100, 1e-3) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_multiplicative_decay_to_a_floor():
    cfg = ScheduleConfig(decay="multiplicative", gamma=0.5, every=10, min_lr=1e-4)
    base = 1e-3
    assert lr_factor(cfg, 9, 100, base) == 1.0
    assert lr_factor(cfg, 10, 100, base) == 0.5
    assert lr_factor(cfg, 25, 100, base) == 0.25
    assert lr_factor(cfg, 99, 100, base) == pytest.approx(0.1)  # 1e-4 / 1e-3


def test_linear_and_cosine_anneal_after_start():
    lin = ScheduleConfig(decay="linear", start=0.5)
    assert lr_factor(lin, 40, 100, 1.0) == 1.0
    assert lr_factor(lin, 75, 100, 1.0) == pytest.approx(0.5)
    cos = ScheduleConfig(decay="cosine")
    assert lr_factor(cos, 50, 100, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_apply_lr_sets_every_group():
    opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": 0.1},
                           {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.01}])
    apply_lr(opt, [0.1, 0.01], ScheduleConfig(warmup=2), 0, 10)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.005]
