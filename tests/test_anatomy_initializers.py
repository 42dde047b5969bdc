"""Anatomy paper: persistent and data chain initialisations."""

import torch

from ebmkit.config import parse_config
from ebmkit.distributed import sharded_names
from ebmkit.experiment import build_experiment, load_trained
from ebmkit.training.loop import Trainer
from ebmkit_plugins.chain_initializers import DataInit, PersistentInit


def test_bank_changes_only_the_drawn_rows():
    init = PersistentInit((2,), size=10)
    before = init.bank.clone()
    z = init.sample(4)
    rows = init._rows.clone()
    assert len(set(rows.tolist())) == 4  # distinct rows: the write-back cannot collide
    assert torch.equal(z, before[rows])
    new = torch.full((4, 2), 7.0)
    init.update(new)
    untouched = torch.ones(10, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(init.bank[rows], new)
    assert torch.equal(init.bank[untouched], before[untouched])
    assert init.update(new) == {}  # no second write-back without a new draw
    assert sharded_names(init) == ("bank",)  # data-parallel runs shard the bank


def test_bank_is_updated_in_place_and_starts_as_configured():
    init = PersistentInit((3,), size=50, start="uniform", scale=0.5)
    assert init.bank.abs().max() <= 0.5
    ptr = init.bank.data_ptr()
    init.sample(5)
    init.update(torch.zeros(5, 3))
    assert init.bank.data_ptr() == ptr and int((init.bank == 0).all(1).sum()) == 5
    data = [torch.tensor([float(i), -float(i)]) for i in range(4)]
    from_data = PersistentInit((2,), size=6, start="data", dataset=data)
    assert torch.equal(from_data.bank[:4], torch.stack(data)) and torch.equal(from_data.bank[4], data[0])


def test_reinit_restarts_drawn_chains_from_noise():
    init = PersistentInit((2,), size=100, scale=1.0, reinit=1.0)
    init.bank.fill_(5.0)
    z = init.sample(20)
    assert z.abs().max() <= 1.0  # every chain restarted from U[-1, 1], none from the bank's 5.0
    none = PersistentInit((2,), size=100, reinit=0.0)
    none.bank.fill_(5.0)
    assert torch.all(none.sample(20) == 5.0)


def test_bank_size_defaults_to_the_dataset_and_round_trips_through_a_checkpoint(tiny, tmp_path):
    cfg = parse_config(tiny(initializer={"name": "persistent"}, training={"iterations": 3}))
    trainer = Trainer(build_experiment(cfg))
    n_data = len(trainer.experiment.dataset)
    assert len(trainer.initializer.bank) == n_data  # one chain per training image
    start = trainer.initializer.bank.clone()
    trainer.fit()
    bank = trainer.initializer.bank.clone()
    changed = (bank != start).flatten(1).any(1)
    assert 0 < int(changed.sum()) <= 3 * 16  # only drawn rows moved: at most iterations x batch
    # Rebuilt without the dataset (so without the size it gave), the bank is the checkpoint's.
    exp = load_trained(cfg.output.dir)
    assert torch.equal(exp.initializer.bank, bank)
    # A resumed trainer continues from the saved bank.
    resumed = Trainer(build_experiment(cfg))
    resumed.resume()
    assert resumed.iteration == 3 and torch.equal(resumed.initializer.bank, bank)


def test_data_init_adds_noise_of_the_stated_sd():
    data = torch.rand(4000, 2) * 2 - 1
    exact = DataInit(noise=0.0).sample(10, data=data[:10])
    assert torch.equal(exact, data[:10])
    z = DataInit(noise=0.1).sample(4000, data=data)
    assert abs(float((z - data).std()) - 0.1) < 0.005
    assert DataInit.needs_data
    # Without a batch it draws from the training set it was built with.
    from_set = DataInit(noise=0.0, dataset=[torch.ones(2) * 3]).sample(5)
    assert torch.equal(from_set, torch.full((5, 2), 3.0))


def test_data_init_trains(tiny):
    cfg = parse_config(tiny(initializer={"name": "data", "noise": 0.05}, training={"iterations": 2}))
    last = Trainer(build_experiment(cfg)).fit()
    assert last["iteration"] == 2
