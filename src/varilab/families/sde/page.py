"""The latent SDE run's page: posterior paths and their bands over the observations, forecasts of held-out series,
prior samples, the Hurst index over training and the Markov approximation's error at the learned H, over the
horizon and, by DFA and the noise's covariance, on the data's grid (`varilab.sde.measure`)."""
from __future__ import annotations

SHOWN = 3  # series per panel
DRAWS = 16  # posterior paths per series for the bands


def _bands(run, times, values, until=None):
    """(grid [U], mean [S, U], std [S, U]) of DRAWS decoded posterior paths per series (first dimension)."""
    import torch

    from ...models.latent_sde import forecast

    torch.manual_seed(0)
    f = forecast(run.model, times, values, split=float("inf") if until is None else until, draws=DRAWS)
    return f["grid"].cpu().numpy(), f["mean"][..., 0].cpu().numpy(), f["std"][..., 0].cpu().numpy()


def _series_panels(run, title, times, values, until=None):
    """One panel per shown series: its observations and the posterior's band (seeing them up to `until`)."""
    grid, mean, std = _bands(run, times, values, until)
    panels = []
    for i in range(min(SHOWN, len(times))):
        t, y = times[i].cpu().numpy(), values[i, :, 0].cpu().numpy()
        panels.append({"title": f"{title} {i + 1}", "points": {"observed": (t, y)},
                       "bands": {"posterior mean +- 2 sd": (grid, mean[i], std[i])}, "split": until,
                       "legend": i == 0})
    return panels


LEARNED = {"observation_noise": "observation noise s, its value"}  # --observation-noise may say only "learned"


def page(run, evaluate, split_time, sample, solver_text):
    """The page of a latent SDE run; the functions are the family's."""
    import torch

    from ...report import Page, Section, img, metrics_rows, plots, table
    from ...sde import fbm
    from .trends import true_hurst

    e = evaluate(run)
    m, s, o = run.model, run.data, run.options
    dev = m.log_sigma.device
    train_panels = _series_panels(run, "training series", s.t_train[:SHOWN].to(dev), s.y_train[:SHOWN].to(dev))
    split = split_time(run)
    test_panels = _series_panels(run, "test series, forecast", s.t_test[:SHOWN].to(dev), s.y_test[:SHOWN].to(dev),
                                 until=split)
    prior = sample(run, 8, seed=0)
    t = prior["times"].numpy()
    prior_panel = {"title": "8 paths from the prior", "lines": {f"{i}": (t, p[:, 0]) for i, p in
                                                                 enumerate(prior["samples"].numpy())}, "legend": False}
    sections = [
        Section("Posterior", img(plots.over_time(train_panels), "posterior bands over training series"),
                f"Mean and +-2 standard deviations of {DRAWS} decoded posterior paths per series, over its observations."),
        Section("Forecast", img(plots.over_time(test_panels + [prior_panel]), "forecasts of test series and prior paths"),
                f"Test series: the posterior sees the observations up to t = {split:.4g} (dashed) and the prior "
                f"continues; the prediction error is that of the mean path on the later observations "
                f"({e['prediction_mse']:.4g} per value). Right: paths from the prior at the data's times."),
    ]
    rows = [("Hurst index", f"{e['hurst']:.4f}" + (" (learned)" if m.config.hurst is None else " (fixed)")),
            ("solver", f"{solver_text(o)}; fixed step dt = {o.dt:g}")]  # noise and drift: the configuration's
    if m.config.ou:
        h = e["hurst"]
        errors = [float(fbm.relative_error(h, fbm.rates(k, m.config.ratio), m.config.horizon)) for k in range(1, 11)]
        grid = torch.linspace(m.config.horizon / 100, m.config.horizon, 100, dtype=torch.float64)
        var = {"fBM, exact": (grid.numpy(), fbm.fbm_variance(h, grid).numpy()),
               f"Markov approximation, K = {m.config.ou}": (grid.numpy(), fbm.markov_variance(h, m.gamma, grid).numpy())}
        sections.append(Section(
            "Markov approximation",
            img(plots.lines([(f"relative error at H = {h:.3f}", "K", {"relative error, optimal weights": errors})]), "error against K")
            + img(plots.over_time([{"title": "Var B_H(t)", "lines": var}]), "variance of B_H and its approximation"),
            f"The relative error E int (B_H - B_hat)^2 dt / E int B_H^2 dt at the learned H, against the number of OU "
            f"processes K on the grid gamma_k = {m.config.ratio:g}^(k - (K+1)/2) (this run: K = {m.config.ou}, "
            f"{e['approximation_error']:.3g}), and the variance of B_H and of its approximation over the horizon. "
            + prior["note"]))
        rows.append(("approximation error at the learned H", e["approximation_error"]))
    shown = ("hurst", "solver", "dt", "approximation_error")  # in the rows above, each once
    sections.append(Section("Final metrics", table(rows + metrics_rows([(k, v) for k, v in e.items() if k not in shown],
                                                                       run.settings, LEARNED))))
    verdict = (f"Test ELBO {e['test_elbo']:.4g} per series ({e['test_elbo_per_value']:.4g} per value); forecast error "
               f"{e['prediction_mse']:.4g} per value on the second half of the test series; H = {e['hurst']:.3f} with "
               f"{o.noise} noise.")
    truth = true_hurst(o)
    if truth is not None:
        verdict += f" The data were generated with H = {truth:g}."
    return Page(f"latent SDE on {s.name}", verdict, sections,
                ["loss", ("hurst", "Hurst index H", True, truth), "kl", "obs_noise"])

