"""A learned prior trained on another model's data (issue 14 item 6): only when asked for
explicitly with the `train_data` option, which names the model options and lands in the
checkpoint's configuration (its path) and the run file's method options."""

import pytest
import torch

from interfaces.assimilator import Context
from interfaces.errors import UsageError
from interfaces.models.lorenz96 import Lorenz96
from interfaces.observations import build_operator
from losda_plugin import checkpoint
from losda_plugin.methods import LOSDA, training_data


def _context(tmp_path):
    model = Lorenz96()
    model.cache_dir = tmp_path
    clim = model.climatology(300).to(torch.float64)
    op = build_operator("every:2", model, torch.Generator().manual_seed(0))
    return Context(model=model, operator=op, climatology=clim, members=1, cache_dir=tmp_path)


def test_by_default_the_prior_trains_on_the_forecast_models_climatology(tmp_path):
    ctx = _context(tmp_path)
    model, clim = training_data(ctx, "")
    assert model is ctx.model and clim is ctx.climatology


def test_train_data_builds_the_named_model_and_its_own_climatology(tmp_path):
    ctx = _context(tmp_path)
    model, clim = training_data(ctx, "forcing=10")
    assert model.options["forcing"] == 10.0 and ctx.model.options["forcing"] == 8.0
    assert clim.shape == ctx.climatology.shape
    # A stronger forcing gives a more energetic attractor: the data really come from the other model.
    assert clim.std() > 1.05 * ctx.climatology.std()


def test_train_data_names_a_real_option(tmp_path):
    with pytest.raises(UsageError, match="unknown option 'nope'"):
        training_data(_context(tmp_path), "nope=1")


def test_train_data_gives_the_prior_its_own_checkpoint(tmp_path):
    ctx = _context(tmp_path)
    plain, other = LOSDA(), LOSDA(train_data="forcing=10")
    paths = {checkpoint.checkpoint_path(tmp_path, m.config(ctx)[0]) for m in (plain, other)}
    assert len(paths) == 2


def test_an_unset_train_data_leaves_the_checkpoint_name_as_before(tmp_path):
    """Adding the option must not orphan priors trained before it existed."""
    from losda_plugin.config import config_hash

    cfg = LOSDA().config(_context(tmp_path))[0]
    before = {k: v for k, v in cfg.items() if k != "train_data"}
    assert config_hash(cfg) == config_hash(before)
    assert config_hash({**cfg, "train_data": "forcing=10"}) != config_hash(before)


def test_forecast_backgrounds_carry_the_forecast_models_one_cycle_error(tmp_path):
    """train_backgrounds=forecast: the truths are the named model's forecasts and the backgrounds
    the forecast model's, from the same (here unperturbed) states, so each pair holds the forecast
    model's one-cycle error; without it both come from one model and agree."""
    from losda_plugin.training import make_pairs

    ctx = _context(tmp_path)
    truth_model, clim = training_data(ctx, "forcing=10")
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    same_t, same_b, _ = make_pairs(truth_model, clim, 50, 1e-9, 1e-9, gen())
    mixed_t, mixed_b, _ = make_pairs(truth_model, clim, 50, 1e-9, 1e-9, gen(), background_model=ctx.model)
    assert torch.allclose(same_t, mixed_t)  # the truths do not depend on where the backgrounds come from
    assert (same_b - same_t).abs().max() < 1e-4
    # F = 10 against F = 8 over one step of dt = 0.05: dx/dt differs by 2 everywhere, so about 0.1.
    error = (mixed_t - mixed_b).double()
    assert error.mean().item() == pytest.approx(0.1, rel=0.1) and error.std().item() < 0.05


def test_train_backgrounds_gives_the_prior_its_own_checkpoint_and_names_a_real_choice(tmp_path):
    from losda_plugin.config import config_hash

    ctx = _context(tmp_path)
    truth_only, mixed = LOSDA(train_data="forcing=10"), LOSDA(train_data="forcing=10", train_backgrounds="forecast")
    paths = {checkpoint.checkpoint_path(tmp_path, m.config(ctx)[0]) for m in (truth_only, mixed)}
    assert len(paths) == 2
    cfg = LOSDA().config(ctx)[0]
    assert config_hash(cfg) == config_hash({k: v for k, v in cfg.items() if k != "train_backgrounds"})
    with pytest.raises(UsageError, match="option 'train_backgrounds' of method 'losda' must be '' or 'forecast'"):
        LOSDA(train_backgrounds="reanalysis")
