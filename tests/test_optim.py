"""TF1-semantics momentum, the SGDR schedule and the EMA ramp (SPEC 1.8, 1.10)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ieg_tf import optim


def test_tf1_momentum_matches_a_then_theta_update_under_a_changing_learning_rate():
    rates = [0.1, 0.05, 0.2]
    # boundaries are inclusive (step <= 0 -> 0.1, step <= 1 -> 0.05): the schedule sees the pre-increment step
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0, 1], rates)
    opt = optim.TF1Momentum(schedule, momentum=0.9)
    v = keras.Variable(np.array([1.0, -2.0], np.float32))
    opt.build([v])
    theta, a = np.array([1.0, -2.0]), np.zeros(2)
    for step, g in enumerate([np.array([0.5, 1.0]), np.array([-1.0, 2.0]), np.array([0.3, 0.3])]):
        opt.apply([tf.constant(g, tf.float32)], [v])
        a = 0.9 * a + g
        theta = theta - rates[step] * a
        np.testing.assert_allclose(v.numpy(), theta, rtol=1e-6)
        np.testing.assert_allclose(opt.accumulator(v).numpy(), a, rtol=1e-6)


def test_tf1_momentum_rejects_bad_momentum():
    with pytest.raises(ValueError, match="momentum"):
        optim.TF1Momentum(0.1, momentum=1.5)


def test_sgdr_schedule_restarts_and_peaks():
    schedule = optim.make_schedule("cosine", 0.1, decay_steps=500, max_iteration=200000)
    np.testing.assert_allclose(float(schedule(0)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(250)), 0.05, rtol=1e-5)       # half way down the first cosine
    np.testing.assert_allclose(float(schedule(500)), 0.09, rtol=1e-5)       # second cycle peaks at 0.1 * 0.9
    np.testing.assert_allclose(float(schedule(1250)), 0.081, rtol=1e-5)     # third at 0.1 * 0.81
    assert optim.sgdr_restarts(500, 1.5, 10000)[:5] == [500, 1250, 2375, 4062, 6593]


def test_other_schedules():
    warm = optim.make_schedule("cosine_warmup", 0.1, decay_steps=100, max_iteration=1000, warmup_steps=10)
    np.testing.assert_allclose([float(warm(0)), float(warm(5)), float(warm(10))], [0.0, 0.05, 0.1], rtol=1e-6)
    step = optim.make_schedule("custom_step", 0.1, decay_steps=1, max_iteration=100, boundaries=(10, 20))
    np.testing.assert_allclose([float(step(5)), float(step(15)), float(step(25))], [0.1, 0.01, 0.001], rtol=1e-5)
    # exponential: x0.9 every decay_steps, staircase (SPEC 2); decay_rate is custom_step's alone.
    exp = optim.make_schedule("exponential", 0.1, decay_steps=10, max_iteration=100, decay_rate=0.5)
    np.testing.assert_allclose([float(exp(s)) for s in (0, 9, 10, 15, 25)], [0.1, 0.1, 0.09, 0.09, 0.081], rtol=1e-5)
    one = optim.make_schedule("cosine_one", 0.1, decay_steps=1, max_iteration=100)
    np.testing.assert_allclose(float(one(100)), 0.0, atol=1e-7)
    with pytest.raises(ValueError, match="lr_schedule"):
        optim.make_schedule("linear", 0.1, decay_steps=1, max_iteration=1)


def test_ema_decay_ramp():
    np.testing.assert_allclose(float(optim.ema_decay(0)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(optim.ema_decay(10)), 11 / 20, rtol=1e-6)
    np.testing.assert_allclose(float(optim.ema_decay(100000)), 0.999, rtol=1e-6)


def test_digits_default_budget_ends_at_the_bottom_of_an_sgdr_cycle():
    from ieg_tf import datasets, train
    from ieg_tf.config import RunConfig
    run_cfg, iter_epoch = train.resolve(RunConfig(model_dir="unused"), datasets.load_dataset(datasets.DataSpec()))
    steps = run_cfg.max_iteration
    assert steps in optim.sgdr_restarts(iter_epoch, run_cfg.t_mul, steps + 1)
    schedule = optim.make_schedule("cosine", run_cfg.learning_rate, decay_steps=run_cfg.decay_steps,
                                   max_iteration=steps, t_mul=run_cfg.t_mul, m_mul=run_cfg.m_mul)
    # The last update (iteration steps - 1) runs at the bottom of the cosine; the restart follows (the cycle
    # length is fractional, so it comes at iteration steps or steps + 1).
    assert float(schedule(steps - 1)) < 1e-3 * run_cfg.learning_rate
    assert max(float(schedule(steps)), float(schedule(steps + 1))) > 0.1 * run_cfg.learning_rate
