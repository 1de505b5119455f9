"""varilab's VP schedule, ancestral (DDPM) and DDIM samplers against diffusers' schedulers, on the same inputs.

diffusers is a peer of the benchmark environment (.venv-bench, bench/requirements.txt) and varilab's `ldm` extra (the
latent diffusion model's autoencoder): without it these tests are skipped.

The mappings these tests establish (T = 1000, linear betas 1e-4 .. 0.02):

* Indices. diffusers' timestep j = 0 .. T-1 is varilab's step i = j + 1, at continuous time t = (j + 1) / T:
  `betas[j] == VPSchedule.betas()[j]` (both hold beta_1 .. beta_T) and `alphas_cumprod[j] == alpha_bar()[j + 1]
  == alpha(t)^2`; diffusers' "previous timestep" -1 (alpha_prod = 1) is varilab's t = 0 (alpha_bar()[0] = 1).
  So `add_noise(x0, noise, timesteps=j)` equals `varilab add_noise(x0, t=(j + 1) / T, eps=noise)`. A network
  receives j from diffusers and t = (j + 1) / T from varilab (the U-Net embeds 1000 t = j + 1).
* DDPM. `DDPMScheduler.step(eps, j, x)` with variance_type "fixed_small" and clip_sample=False is one step of
  `samplers.ddpm` from t = (j + 1) / T to s = j / T: the same mean and the same variance beta~_{j+1}; at j = 0
  (t = 1/T -> 0) both return the mean, no noise. Running the scheduler over its default 1000 timesteps is
  `samplers.ddpm(steps=T)`: with one generator seeded alike the two draw `torch.randn(x.shape)` in the same
  order (varilab draws once more at the last step, times a zero standard deviation) and the whole chain agrees.
* DDIM (eta = 0, clip_sample=False, set_alpha_to_one=True). A step always goes from j to p = j - T // n (n =
  inference steps; p < 0 means alpha_prod = 1): it is `samplers.ddim(steps=1, t_max=(j + 1) / T,
  t_min=(p + 1) / T, or 0 when p < 0)`, whatever the spacing. With timestep_spacing="trailing" and n dividing
  T, set_timesteps(n) lists j = T - 1, T - 1 - T/n, ..., T/n - 1, that is t = 1, 1 - 1/n, ..., 1/n and then 0:
  exactly varilab's uniform grid linspace(1, 0, n + 1), so `samplers.ddim(steps=n)` reproduces diffusers'
  50-step trajectory. The default "leading" spacing (steps_offset=0) lists j = T - T/n, ..., 0, i.e. t =
  0.981, 0.961, ..., 0.001 and then 0 for n = 50 (with steps_offset=1: 0.982, ..., 0.002, then 0): not a
  uniform grid from 1, so only the step-by-step mapping holds. With set_alpha_to_one=False the last step
  ends at alpha_bar_1 (t_min = 1/T) instead of 1; under "leading" that last step starts at j = 0, t = 1/T,
  too, and leaves the sample as it is (varilab has no empty step: the test checks the identity).
  "linspace" lists round(linspace(0, T - 1, n)) but still steps to j - T // n, so for n = 50 nineteen of
  its steps end at a level the next step does not start from; the step-by-step mapping holds there too.

diffusers builds its tables in float32; near t = 0, 1 - alpha_prod (about 1e-4) keeps only three or four
digits there, so a 1000-step chain drifts by about 1e-4 from the float64 one. The tests of the update
formulas therefore promote the scheduler's own betas to float64 and rebuild its cumulative products from them
(`_float64`); the schedule tests and one DDIM trajectory use its float32 tables as they are. Single steps
on float64 tables agree to about 1e-9 and are held to 1e-7: a step moves a state of order one by little,
and an index off by one changes it by 4e-6 or more, which 1e-5 would not see. Each single-step and schedule
test also checks that the mapping shifted by one index misses by more than ten times its tolerance.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMScheduler  # noqa: E402

from varilab.models.diffusion import samplers  # noqa: E402
from varilab.models.diffusion.diffusion import VPSchedule, add_noise, convert  # noqa: E402

T = 1000
TOL = 1e-5  # trajectories, and anything computed from diffusers' float32 tables
STEP_TOL = 1e-7  # single steps on float64 tables (they agree to about 1e-9)
SCHEDULE = dict(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
VP = VPSchedule(T=T, beta_start=1e-4, beta_end=0.02)
F64 = torch.float64


def _ddpm(float64: bool = True) -> DDPMScheduler:
    s = DDPMScheduler(**SCHEDULE, variance_type="fixed_small", clip_sample=False)
    return _float64(s) if float64 else s


def _ddim(spacing: str = "trailing", offset: int = 0, to_one: bool = True, steps: int = 50,
          float64: bool = True) -> DDIMScheduler:
    s = DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=to_one, timestep_spacing=spacing,
                      steps_offset=offset)
    s = _float64(s) if float64 else s
    s.set_timesteps(steps)
    return s


def _float64(s):
    """The scheduler with its tables in float64: its own (float32) betas promoted, the products rebuilt."""
    s.betas = s.betas.to(F64)
    s.alphas = 1.0 - s.betas
    s.alphas_cumprod = torch.cumprod(s.alphas, 0)
    if hasattr(s, "one"):
        s.one = torch.tensor(1.0, dtype=F64)
    if hasattr(s, "final_alpha_cumprod"):
        s.final_alpha_cumprod = torch.tensor(1.0, dtype=F64) if s.config.set_alpha_to_one else s.alphas_cumprod[0]
    return s


def t_of(j: int) -> float:
    """varilab's time for diffusers' timestep j."""
    return (j + 1) / T


_ABAR = VP.alpha_bar()  # looked up, not interpolated: every time below sits on a knot i / T


def eps_hat(x: torch.Tensor, t) -> torch.Tensor:
    """A fixed stand-in for a trained network, nonlinear in x_t and dependent on t: the exact noise
    prediction for N(0, I) data (sigma_t x_t) plus alpha_t * 0.3 sin(3 x_t + 5 t), so that x0_hat =
    alpha_t x_t - 0.3 sigma_t sin(...) stays of order one along a trajectory."""
    t = torch.as_tensor(t, dtype=F64).reshape(-1, *[1] * (x.dim() - 1))
    i = (t * T).round()
    assert (i - t * T).abs().max() < 1e-6, "eps_hat is defined on the knots t = i / T only"
    abar = _ABAR[i.long()]
    a, s = abar.sqrt().to(x.dtype), (1 - abar).sqrt().to(x.dtype)
    return s * x + a * 0.3 * torch.sin(3 * x + 5 * t.to(x.dtype))


def _x(seed: int = 0, shape=(4, 1, 6, 6)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def assert_near(a, b, tol=TOL):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def assert_differs(a, b, tol=STEP_TOL):
    """a and b (one of them from a mapping shifted by one index) differ by more than ten times the tolerance
    that the right mapping is held to."""
    assert (a - b).abs().max() > 10 * tol, "the shifted mapping agrees too: the test could not see an off-by-one"


# ------------------------------------------------------------------------------------------------- (a) schedules

@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
def test_betas_and_alphas_cumprod_match_with_offset_one(cls):
    s = cls(**SCHEDULE)  # diffusers' own float32 tables
    betas, abar = VP.betas(), VP.alpha_bar()
    assert len(s.betas) == T and len(abar) == T + 1
    assert_near(s.betas.to(F64), betas)
    assert_near(s.alphas_cumprod.to(F64), abar[1:])  # timestep j <-> abar_{j+1}
    t = torch.arange(1, T + 1, dtype=F64) / T
    assert_near(s.alphas_cumprod.to(F64), VP.alpha(t) ** 2)  # = alpha_t^2 at t = (j + 1) / T
    assert_differs(s.alphas_cumprod.to(F64), abar[:-1], TOL)  # j <-> abar_j is wrong


def test_add_noise_timestep_j_is_time_j_plus_one_over_T():
    s = DDPMScheduler(**SCHEDULE)
    j = torch.tensor([0, 1, 2, 249, 500, 998, 999])
    x0, noise = _x(1, (len(j), 1, 5, 5)), _x(2, (len(j), 1, 5, 5))
    theirs = s.add_noise(x0, noise, j)
    ours, _ = add_noise(x0, (j + 1).to(F64) / T, VP, eps=noise)
    assert_near(ours, theirs)
    shifted, _ = add_noise(x0, j.to(F64) / T, VP, eps=noise)
    assert_differs(shifted, theirs, TOL)


# ---------------------------------------------------------------------------------------------- (b) DDPM step

def _fixed_noise(monkeypatch, value: float):
    """torch.randn returning `value` everywhere: both libraries draw their step noise through it."""
    def randn(*size, generator=None, dtype=None, device=None, **_):
        shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        return torch.full(tuple(shape), value, dtype=dtype or torch.get_default_dtype(), device=device)
    monkeypatch.setattr(torch, "randn", randn)


class _Stop(Exception):
    pass


def _varilab_first_step(i: int, x: torch.Tensor) -> torch.Tensor:
    """The state after the first step of samplers.ddpm on the grid i/T, (i-1)/T, ..., 0 (one step of
    the DDPM chain, from step i to i - 1). The sampler has no single-step call: the state is read as
    the input of the network's second call, and the run is stopped there."""
    if i == 1:
        return samplers.ddpm(eps_hat, VP, x, steps=1, t_max=1 / T)
    seen = []

    def pred(x_t, t):
        seen.append(x_t)
        if len(seen) == 2:
            raise _Stop
        return eps_hat(x_t, t)

    with pytest.raises(_Stop):
        samplers.ddpm(pred, VP, x, steps=i, t_max=i / T)
    return seen[1]


def _mean_std(step, monkeypatch):
    """(mean, standard deviation) of a stochastic step: the step with its noise set to 0, then to 1."""
    out = []
    for z in (0.0, 1.0):
        with monkeypatch.context() as m:
            _fixed_noise(m, z)
            out.append(step())
    return out[0], out[1] - out[0]


@pytest.mark.parametrize("j", [999, 998, 500, 100, 2, 1, 0])
def test_ddpm_step_mean_and_variance(j, monkeypatch):
    s, x = _ddpm(), _x(3)
    out = s.step(eps_hat(x, t_of(j)), j, x, generator=torch.Generator().manual_seed(0))
    x0 = convert(eps_hat(x, t_of(j)), "eps", "x0", x, t_of(j), VP)
    assert_near(x0, out.pred_original_sample, STEP_TOL)  # the model's x0 from diffusers' j is varilab's at (j + 1)/T
    assert_differs(convert(eps_hat(x, t_of(j)), "eps", "x0", x, j / T, VP), out.pred_original_sample)

    mean_d, std_d = _mean_std(lambda: s.step(eps_hat(x, t_of(j)), j, x).prev_sample, monkeypatch)
    mean_v, std_v = _mean_std(lambda: _varilab_first_step(j + 1, x), monkeypatch)  # (j + 1)/T -> j/T
    assert_near(mean_v, mean_d, STEP_TOL)
    var_d, var_v = std_d.pow(2), std_v.pow(2)
    assert var_d.std() < 1e-15 and var_v.std() < 1e-15  # one variance for every element
    abar = VP.alpha_bar()
    beta_tilde = (1 - abar[j]) / (1 - abar[j + 1]) * VP.betas()[j]  # DDPM's beta~ of step j + 1
    if j == 0:  # the last step returns the mean
        assert var_d.max() == 0 and var_v.max() == 0 and beta_tilde == 0
    else:
        torch.testing.assert_close(var_v, var_d, rtol=STEP_TOL, atol=0.0)
        torch.testing.assert_close(var_v.mean(), beta_tilde, rtol=STEP_TOL, atol=0.0)
        # off by one: varilab's step from j/T to (j - 1)/T has another mean and variance
        mean_w, std_w = _mean_std(lambda: _varilab_first_step(j, x), monkeypatch)
        assert_differs(mean_w, mean_d)
        assert ((std_w.pow(2).mean() - var_d.mean()) / var_d.mean()).abs() > 100 * STEP_TOL


def test_ddpm_full_chain_with_the_same_generator():
    s, x = _ddpm(), _x(4)
    _, ours = samplers.ddpm(eps_hat, VP, x, steps=T, chain=True, generator=torch.Generator().manual_seed(7))
    g, xd, theirs = torch.Generator().manual_seed(7), x, [x]
    assert s.timesteps.tolist() == list(range(T - 1, -1, -1))
    for j in s.timesteps.tolist():
        xd = s.step(eps_hat(xd, t_of(j)), j, xd, generator=g).prev_sample
        theirs.append(xd)
    theirs = torch.stack(theirs)
    assert ours.shape == theirs.shape == (T + 1, *x.shape)
    assert_near(ours, theirs)
    assert ours[-1].abs().max() < 10  # a trajectory of order one, so the tolerance means something


# --------------------------------------------------------------------------------------------------- (c) DDIM

def _diffusers_ddim_chain(s, x):
    out = [x]
    for j in s.timesteps.tolist():
        x = s.step(eps_hat(x, t_of(j)), j, x, eta=0.0).prev_sample
        out.append(x)
    return torch.stack(out)


@pytest.mark.parametrize("float64", [True, False], ids=["float64-tables", "float32-tables"])
def test_ddim_50_steps_trailing_is_varilab_uniform_grid(float64):
    s, x = _ddim("trailing", float64=float64), _x(5)
    js = s.timesteps.tolist()
    assert js == list(range(T - 1, 0, -T // 50))  # 999, 979, ..., 19
    assert [t_of(j) for j in js] == pytest.approx(torch.linspace(1, 0, 51, dtype=F64)[:-1].tolist(), abs=1e-12)
    _, ours = samplers.ddim(eps_hat, VP, x, steps=50, chain=True)
    theirs = _diffusers_ddim_chain(s, x)
    assert_near(ours, theirs)
    assert theirs[-1].abs().max() < 10
    # the default spacing ("leading") walks another grid: its trajectory is not varilab's uniform one
    assert_differs(ours[-1], _diffusers_ddim_chain(_ddim("leading", float64=float64), x)[-1], TOL)


@pytest.mark.parametrize("spacing,offset,to_one", [("leading", 0, True), ("leading", 1, True),
                                                   ("trailing", 0, True), ("linspace", 0, True),
                                                   ("leading", 0, False)])
def test_ddim_each_step_is_a_varilab_step(spacing, offset, to_one):
    """Step by step, each from the same state as diffusers' chain, and the chain of single varilab steps."""
    s, x = _ddim(spacing, offset, to_one), _x(6)
    theirs = _diffusers_ddim_chain(s, x)
    final = 0.0 if to_one else 1 / T  # diffusers' last target: alpha_prod 1, or abar_1
    xs, chained = x, [x]
    for k, j in enumerate(s.timesteps.tolist()):
        p = j - T // 50
        t, t_min = t_of(j), (t_of(p) if p >= 0 else final)
        if t_min == t:  # "leading" without set_alpha_to_one: j = 0 steps to abar_1, where it already is
            assert_near(theirs[k + 1], theirs[k], STEP_TOL)
            chained.append(xs)
            continue
        one = samplers.ddim(eps_hat, VP, theirs[k], steps=1, t_max=t, t_min=t_min)
        assert_near(one, theirs[k + 1], STEP_TOL)
        xs = samplers.ddim(eps_hat, VP, xs, steps=1, t_max=t, t_min=t_min)
        chained.append(xs)
        if j > 0 and (k in (0, 25) or p < 0):  # off by one in time: the step from j/T to p/T
            wrong = samplers.ddim(eps_hat, VP, theirs[k], steps=1, t_max=j / T, t_min=max(p, 0) / T)
            assert_differs(wrong, theirs[k + 1])
    assert_near(torch.stack(chained), theirs)
