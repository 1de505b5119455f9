"""Diffusion against closed forms. A Gaussian mixture sum_k pi_k N(m_k, s_k^2 I) noised to time t is
again a mixture, sum_k pi_k N(alpha_t m_k, (alpha_t^2 s_k^2 + sigma_t^2) I), so its score and
E[x0|x_t] are exact; samplers driven by them must reproduce the mixture."""
import math

import pytest
import torch

from varilab.models.diffusion import samplers
from varilab.models.diffusion.diffusion import (DiffusionMLP, DiffusionMLPConfig, LinearInterpolant, VPSchedule, add_noise,
                                      bits_per_dim, convert, ddpm_nll_bound, eps_loss, flow_matching_loss,
                                      score_matching_loss)

D64 = torch.float64


class Mixture:
    def __init__(self, weights, means, stds):
        self.w = torch.tensor(weights, dtype=D64)
        self.m = torch.tensor(means, dtype=D64)  # [K, D]
        self.s = torch.tensor(stds, dtype=D64)  # [K]

    def sample(self, n: int, g: torch.Generator) -> torch.Tensor:
        k = torch.multinomial(self.w, n, replacement=True, generator=g)
        return self.m[k] + self.s[k, None] * torch.randn(n, self.m.shape[1], dtype=D64, generator=g)

    def posterior(self, x, t, schedule):
        """(score of p_t at x, E[x0|x_t = x]), each [B, D]."""
        t = torch.as_tensor(t, dtype=D64).expand(x.shape[0])
        a, s = schedule.alpha(t)[:, None, None], schedule.sigma(t)[:, None, None]
        v = a ** 2 * self.s[None, :, None] ** 2 + s ** 2  # [B, K, 1] component variances at t
        d = x[:, None, :] - a * self.m[None]  # [B, K, D]
        log_r = self.w.log()[None] - 0.5 * (d ** 2 / v + torch.log(2 * math.pi * v)).sum(-1)
        r = torch.softmax(log_r, 1)[..., None]  # responsibilities [B, K, 1]
        score = (r * -d / v).sum(1)  # sum_k r_k (alpha m_k - x) / v_k
        x0 = (r * (self.m[None] + a * self.s[None, :, None] ** 2 / v * d)).sum(1)
        return score, x0

    def mode_weights(self, x):
        k = torch.cdist(x, self.m).argmin(1)
        return torch.bincount(k, minlength=len(self.w)).double() / len(x)


MIX1 = Mixture([0.3, 0.7], [[-2.0], [2.0]], [0.5, 0.5])
MIX2 = Mixture([0.2, 0.3, 0.5], [[-2.0, 0.0], [2.0, 2.0], [1.5, -2.0]], [0.4, 0.5, 0.4])
VP, FLOW = VPSchedule(), LinearInterpolant()
N = 10_000


def mixture_score(x, t, schedule, mix=MIX1):
    return mix.posterior(x, t, schedule)[0]


def w2(a, b):
    """The 2-Wasserstein distance between two equal-size empirical distributions: in 1-D the sorted samples
    pair up; in more dimensions the optimal pairing is an assignment problem (solved exactly)."""
    if a.shape[1] == 1:
        return (a[:, 0].sort()[0] - b[:, 0].sort()[0]).pow(2).mean().sqrt().item()
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(a, b).pow(2).numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean()) ** 0.5


def sliced_w1(a, b, n_dirs=16):
    """Mean over fixed directions of the 1-D Wasserstein-1 distance between projections (sorted samples)."""
    u = torch.randn(a.shape[1], n_dirs, dtype=D64, generator=torch.Generator().manual_seed(0))
    u = u / u.norm(dim=0)
    return ((a @ u).sort(0)[0] - (b @ u).sort(0)[0]).abs().mean().item()


def _run(name, mix, z, g):
    score = lambda x, t: mixture_score(x, t, VP, mix)
    x0 = lambda x, t: mix.posterior(x, t, FLOW)[1]
    if name == "ddpm":
        return samplers.ddpm(score, VP, z, steps=100, kind="score", generator=g)
    if name == "ddim":
        return samplers.ddim(score, VP, z, steps=50, kind="score")
    if name == "euler_maruyama":
        return samplers.euler_maruyama(score, VP, z, steps=200, kind="score", generator=g)
    if name == "pf_euler":
        return samplers.probability_flow(score, VP, z, steps=100, kind="score", solver="euler")
    if name == "pf_heun":
        return samplers.probability_flow(score, VP, z, steps=30, kind="score", solver="heun")
    if name == "flow_heun":  # rectified flow; E[x0|x_t] is the same exact field, finite at t = 1 where alpha_t = 0
        return samplers.probability_flow(x0, FLOW, z, steps=30, kind="x0", solver="heun", t_min=0.0)
    raise KeyError(name)


SAMPLERS = ["ddpm", "ddim", "euler_maruyama", "pf_euler", "pf_heun", "flow_heun"]


@pytest.mark.parametrize("name", SAMPLERS)
def test_samplers_reproduce_1d_mixture(name):
    g = torch.Generator().manual_seed(1)
    ref = MIX1.sample(N, g)
    x = _run(name, MIX1, torch.randn(N, 1, dtype=D64, generator=g), g)
    # Two independent 20k-sample draws of this mixture are ~0.025 apart in W1 (sampling noise); 0.06 allows
    # that plus the discretisation error of the chosen step counts (measured <= 0.04), while a wrong drift
    # (e.g. a missing 1/2 in the ODE) moves W1 by several tenths.
    assert abs((x[:, 0] > 0).double().mean().item() - 0.7) < 0.03
    assert sliced_w1(x, ref, 1) < 0.06
    # W2 weighs the tails: two independent draws are 0.03-0.08 apart, these samplers 0.04-0.14 (measured),
    # a drift with half the score 8.5 (test_wrong_score_is_caught).
    assert w2(x, ref) < 0.2


@pytest.mark.parametrize("name", ["pf_heun", "flow_heun"])
def test_samplers_reproduce_2d_mixture(name):
    g = torch.Generator().manual_seed(2)
    ref = MIX2.sample(N, g)
    x = _run(name, MIX2, torch.randn(N, 2, dtype=D64, generator=g), g)
    assert (MIX2.mode_weights(x) - MIX2.w).abs().max() < 0.03
    assert sliced_w1(x, ref) < 0.06  # same reasoning as in 1-D; the 20k-sample floor here is ~0.02
    # exact W2 on 2,000 points of each: two independent draws are 0.16-0.26 apart, these samplers 0.32-0.33
    assert w2(x[:2000], ref[:2000]) < 0.45


def test_wrong_score_is_caught():
    """The distance the sampler tests use does see an error: halving the score's drift term changes the mixture."""
    g = torch.Generator().manual_seed(3)
    ref = MIX1.sample(N, g)
    half = lambda x, t: 0.5 * mixture_score(x, t, VP)
    x = samplers.probability_flow(half, VP, torch.randn(N, 1, dtype=D64, generator=g), steps=30, kind="score")
    assert sliced_w1(x, ref, 1) > 0.3
    assert w2(x, ref) > 1.0


def train_eps(net, batch, schedule, steps: int, lr: float = 3e-3) -> None:
    """Adam on the epsilon loss, a fresh batch() each step."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        loss = eps_loss(net, batch(), schedule).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_trained_mlp_matches_exact_score():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(4)
    net = DiffusionMLP(DiffusionMLPConfig(x_dim=1, hidden=64, depth=2, time_dim=32))
    train_eps(net, lambda: MIX1.sample(512, g).float(), VP, steps=600)
    # times where sigma_t is in [0.5, 0.9]; x_t drawn from the noised mixture
    ts = torch.linspace(0, 1, 1001, dtype=D64)
    ts = ts[(VP.sigma(ts) >= 0.5) & (VP.sigma(ts) <= 0.9)]
    t = ts[torch.randint(len(ts), (4000,), generator=g)]
    x_t, _ = add_noise(MIX1.sample(4000, g), t, VP)
    with torch.no_grad():
        eps_hat = net(x_t.float(), t.float()).double()
    s_hat = convert(eps_hat, "eps", "score", x_t, t, VP)
    s = mixture_score(x_t, t, VP)
    rel = ((s_hat - s).norm() / s.norm()).item()
    # A loose check: 600 Adam steps (seconds) reach ~0.3 here (measured 0.28), the eps loss spending its
    # capacity over all t; an untrained net or a wrong eps -> score conversion gives ~1.
    assert rel < 0.45


@pytest.mark.parametrize("steps", [pytest.param(1000, id="fast"), pytest.param(8000, id="full", marks=pytest.mark.slow)])
def test_ddim_is_deterministic_and_inverts(steps):
    g = torch.Generator().manual_seed(5)
    x = MIX2.sample(50, g)
    score = lambda x, t: mixture_score(x, t, VP, MIX2)
    # data is taken as x at t_min: a step out of t = 0 itself sees eps_hat = 0 and cannot be undone
    short = samplers.ddim(score, VP, x, steps=200, kind="score", t_min=1e-2, invert=True)
    assert torch.equal(short, samplers.ddim(score, VP, x, steps=200, kind="score", t_min=1e-2, invert=True))
    z = samplers.ddim(score, VP, x, steps=steps, kind="score", t_min=1e-2, invert=True)
    assert 0.8 < z.std().item() < 1.2  # the encoding is noise-like
    back = samplers.ddim(score, VP, z, steps=steps, kind="score", t_min=1e-2)
    # DDIM is first order: the round trip's error shrinks like 1/steps (measured max over these 50 points:
    # 5.9e-3 at 1,000 steps, 1.5e-3 at 4,000, 7.4e-4 at 8,000, 3.7e-4 at 16,000: 5.9 / steps throughout); points
    # near a boundary between modes are the slowest. The bound is 8 / steps at each size (1e-3 at 8,000 steps).
    err = (back - x).abs().max(1)[0]
    assert err.max().item() < 8 / steps


@pytest.mark.parametrize("schedule", [VP, FLOW], ids=["vp", "flow"])
def test_conversions_round_trip(schedule):
    g = torch.Generator().manual_seed(6)
    x0, eps = torch.randn(256, 3, dtype=D64, generator=g), torch.randn(256, 3, dtype=D64, generator=g)
    t = 0.05 + 0.9 * torch.rand(256, dtype=D64, generator=g)
    x_t, _ = add_noise(x0, t, schedule, eps)
    for kind in ("x0", "score", "v"):
        there = convert(eps, "eps", kind, x_t, t, schedule)
        assert torch.allclose(convert(there, kind, "eps", x_t, t, schedule), eps, atol=1e-6, rtol=0)
    assert torch.allclose(convert(eps, "eps", "x0", x_t, t, schedule), x0, atol=1e-6, rtol=0)
    a, b = schedule.velocity_coefs(t)
    v = a[:, None] * x0 + b[:, None] * eps
    assert torch.allclose(convert(v, "v", "x0", x_t, t, schedule), x0, atol=1e-6, rtol=0)
    if schedule is FLOW:
        assert torch.allclose(v, eps - x0)  # rectified flow's u = eps - x0
    with pytest.raises(ValueError, match="must be one of"):
        convert(eps, "noise", "x0", x_t, t, schedule)


def test_vp_schedule_continuous_view_matches_discrete():
    abar = VP.alpha_bar()
    t = torch.arange(VP.T + 1, dtype=D64) / VP.T
    assert torch.allclose(VP.alpha(t) ** 2, abar, rtol=1e-10, atol=0)
    mid = torch.rand(100, dtype=D64)
    assert torch.allclose(VP.alpha(mid) ** 2 + VP.sigma(mid) ** 2, torch.ones(100, dtype=D64))
    h = 1e-7  # derivatives against finite differences inside a segment
    tt = torch.tensor([0.1234, 0.5678], dtype=D64)
    assert torch.allclose(VP.d_alpha(tt), (VP.alpha(tt + h) - VP.alpha(tt - h)) / (2 * h), rtol=1e-5)
    assert torch.allclose(VP.d_sigma(tt), (VP.sigma(tt + h) - VP.sigma(tt - h)) / (2 * h), rtol=1e-5)


def test_ddpm_bound_with_exact_prediction_is_close_to_true_nll():
    m, s = 1.0, 0.7
    score = lambda x, t: -(x - VP.alpha(t)[:, None] * m) / (VP.alpha(t)[:, None] ** 2 * s ** 2 + VP.sigma(t)[:, None] ** 2)
    torch.manual_seed(7)
    x0 = m + s * torch.randn(2000, 1, dtype=D64)
    nll = (0.5 * ((x0 - m) / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi)).mean().item()
    gap_beta = ddpm_nll_bound(score, x0, VP, kind="score", reverse_var="beta").mean().item() - nll
    gap_post = ddpm_nll_bound(score, x0, VP, kind="score").mean().item() - nll
    # With the exact mean only the fixed reverse variance is wrong. While the noise is small against s, the true
    # reverse variance is ~beta_i, so v = beta leaves a small gap (Monte-Carlo noise ~0.01 nats at 2000 examples),
    # while v = beta~ costs sum_i [x_i - log(1 + x_i)]/2 with x_i = 1/(i-1), about pi^2/24 ~ 0.41 nats.
    assert -0.03 < gap_beta < 0.05
    assert 0.3 < gap_post < 0.5
    bound = ddpm_nll_bound(score, x0[:10], VP, kind="score", n_steps=50)
    assert torch.allclose(bits_per_dim(bound, 1), bound / math.log(2))


def test_losses_and_bound_decrease_with_training():
    torch.manual_seed(8)
    sched = VPSchedule(T=200, beta_start=5e-4, beta_end=0.1)  # a coarse chain keeps the full bound cheap
    net = DiffusionMLP(DiffusionMLPConfig(x_dim=2, hidden=64, depth=2, time_dim=32))
    g = torch.Generator().manual_seed(9)
    x_eval = MIX2.sample(256, g).float()

    def evaluate():
        torch.manual_seed(10)
        with torch.no_grad():
            return eps_loss(net, x_eval, sched).mean().item(), ddpm_nll_bound(net, x_eval, sched).mean().item()

    loss0, bound0 = evaluate()
    train_eps(net, lambda: MIX2.sample(256, g).float(), sched, steps=300)
    loss1, bound1 = evaluate()
    assert loss1 < 0.6 * loss0
    assert bound1 < bound0 - 1.0  # nats per example


@pytest.mark.parametrize("loss_fn, schedule", [(score_matching_loss, VP), (flow_matching_loss, FLOW)],
                         ids=["dsm", "flow"])
def test_other_losses_are_smallest_at_the_exact_field(loss_fn, schedule):
    """DSM and flow matching are minimised by the true score / velocity: perturbing the exact field raises the loss."""
    g = torch.Generator().manual_seed(11)
    x0 = MIX1.sample(20_000, g)
    kind = "score" if loss_fn is score_matching_loss else "v"

    def exact(x, t, scale=1.0):
        sc, xh = MIX1.posterior(x, t, schedule)
        return scale * convert(xh, "x0", kind, x, t, schedule) if kind == "v" else scale * sc

    torch.manual_seed(12)
    best = loss_fn(lambda x, t: exact(x, t), x0, schedule).mean()
    torch.manual_seed(12)
    worse = loss_fn(lambda x, t: exact(x, t, 1.1), x0, schedule).mean()
    assert best < worse


def test_bad_inputs_raise_with_the_fix():
    with pytest.raises(ValueError, match="steps must be a positive int"):
        samplers.ddim(lambda x, t: x, VP, torch.zeros(2, 1), steps=0)
    with pytest.raises(ValueError, match=r"x_t must be \[B, 2\]"):
        DiffusionMLP(DiffusionMLPConfig(x_dim=2))(torch.zeros(3, 1), torch.zeros(3))
    with pytest.raises(ValueError, match="batch dimension"):
        eps_loss(lambda x, t: x, torch.zeros(3), VP)
