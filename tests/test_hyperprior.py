"""The mean-scale hyperprior codec: its Gaussian bits and scale tables against closed forms, GDN against its formula,
and files whose side information is counted, that decode to the codes written, with the check that says when they
do not."""
import json
import math

import numpy as np
import pytest
import torch

from pages import says_each_thing_once
from varilab import cli
from varilab.models.codec import hyperprior
from varilab.models.codec.transforms import GDN

pytest.importorskip("constriction")
TINY = ["--model", "hyperprior", "--data", "digits", "--epochs", "2", "--latent", "8", "--hidden", "8",
        "--downsample", "1", "--quiet"]


def _phi(x):
    return 0.5 * math.erfc(-x / math.sqrt(2))


def test_gaussian_bits_are_the_unit_bin_mass_of_the_normal():
    v = torch.tensor([0.0, 0.3, -1.7, 4.2, -9.0])
    sigma = torch.tensor([0.11, 1.0, 2.5, 0.7, 3.0])
    expected = [-math.log2(_phi((a + 0.5) / s) - _phi((a - 0.5) / s)) for a, s in zip(v.tolist(), sigma.tolist())]
    np.testing.assert_allclose(hyperprior.gaussian_bits(v, sigma).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_scale_tables_are_the_binned_gaussian_with_tails_at_the_ends():
    scales, tables = hyperprior.scale_tables(support=7)
    assert tables.shape == (64, 15) and (tables.sum(-1) == 1 << 16).all() and (tables > 0).all()
    assert scales[0] == pytest.approx(0.11) and scales[-1] == pytest.approx(256)
    s = float(scales[40])  # a mid scale: P(k) = Phi((k + 1/2) / s) - Phi((k - 1/2) / s), the tails folded into +-7
    p = [_phi((k + 0.5) / s) - _phi((k - 0.5) / s) for k in range(-7, 8)]
    p[0], p[-1] = _phi(-6.5 / s), 1 - _phi(6.5 / s)
    np.testing.assert_allclose(tables[40].numpy() / 2 ** 16, p, atol=3e-4)


def test_a_scale_is_coded_under_the_first_table_scale_at_or_above_it():
    m = hyperprior.Hyperprior(hyperprior.HyperpriorConfig(latent=4, hidden=4))
    s = m.scales
    sigma = torch.stack([s[0], s[3] * 0.999 + s[2] * 0.001, s[10], 1e6 * torch.ones(())])
    assert m.scale_index(sigma).tolist() == [0, 3, 10, 63]


def test_gdn_and_its_inverse_follow_their_formulas():
    g, ig = GDN(3), GDN(3, inverse=True)
    with torch.no_grad():
        for m in (g, ig):
            m.beta.copy_(torch.tensor([1.0, 0.5, 2.0]))  # beta = b^2 + 1e-6, gamma = g^2
            m.gamma.copy_(torch.tensor([[0.1, 0.2, 0.0], [0.0, 0.3, 0.1], [0.4, 0.0, 0.2]]))
    x = torch.randn(2, 3, 4, 5)
    beta = torch.tensor([1.0, 0.25, 4.0]) + 1e-6
    gamma = torch.tensor([[0.01, 0.04, 0.0], [0.0, 0.09, 0.01], [0.16, 0.0, 0.04]])
    norm = torch.sqrt(beta[None, :, None, None] + torch.einsum("ij,bjhw->bihw", gamma, x * x))
    torch.testing.assert_close(g(x), x / norm)
    torch.testing.assert_close(ig(x), x * norm)


def test_training_decodes_the_codes_a_file_holds_and_rates_noisy_latents():
    torch.manual_seed(0)
    m = hyperprior.Hyperprior(hyperprior.HyperpriorConfig(latent=4, hidden=8, downsample=1))
    m.freeze_tables()
    x = torch.rand(3, 1, 8, 8)
    train_x, train_bpp = m(x, tau=1.0)
    test_x, test_bpp = m(x)
    torch.testing.assert_close(train_x, test_x)  # the same reconstruction: the rounded codes in both
    assert not torch.allclose(train_bpp, test_bpp)  # the rate of noisy latents in training
    train_x.sum().backward()
    assert m.encoder[0].weight.grad.abs().sum() > 0  # the gradient reaches the encoder through the rounding


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hyper") / "run"
    assert cli.main(["train", *TINY, "--out", str(out)]) == 0
    return out


def test_the_file_counts_the_side_information_and_decodes_to_the_codes_written(run, capsys):
    from varilab.codec import entropy, tables
    from varilab.families.registry import load as load_run

    assert cli.main(["eval", str(run), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["codes_round_trip"] is True and e["support"] == 63
    r = load_run(run)
    x = r.data.x_test.reshape(-1, 1, 8, 8)
    writer = entropy.Writer()
    rows, grid, _ = r.model.write(x, writer)
    m = r.model
    with torch.no_grad():  # the ideal length of both parts: z's codes under their tables, y's under their scales'
        y = m.encoder(x)
        z = m.z_density.codes(m.hyper_encoder(y).permute(0, 2, 3, 1))
        side = tables.code_length((z + 63).permute(3, 0, 1, 2).reshape(z.shape[-1], -1).numpy(),
                                  m.z_density.tables.numpy())
        _, sigma = m.mean_scale(z.permute(0, 3, 1, 2).float(), y.shape[-2:])
        index = m.scale_index(sigma).permute(1, 0, 2, 3).reshape(-1)
        latent = tables.code_length(rows.reshape(-1, 1).numpy(), m.scale_table[index].numpy())
    assert side > 0 and latent > 0
    ideal = side + latent
    assert ideal <= 8 * len(writer.stream()) <= 1.01 * ideal + 64 * 8
    assert e["bytes"] * 8 >= ideal  # the file holds both parts


def test_a_file_whose_codes_read_back_differently_is_refused_in_one_line(run, tmp_path, capsys):
    from varilab.codec import container

    f = tmp_path / "x.vlc"
    assert cli.main(["compress", str(run), "--out", str(f)]) == 0
    data = f.read_bytes()
    model = json.loads(data[10:10 + int.from_bytes(data[6:10], "little")])["model"]
    meta, stream = container.unpack(data)
    meta["symbols_crc32"] ^= 1  # as if a scale had been read on the other side of a table boundary
    f.write_bytes(container.pack(model, meta, stream))
    capsys.readouterr()
    assert cli.main(["decompress", str(run), "--input", str(f), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert "differ from those written" in err and len(err.splitlines()) == 1


def test_the_transforms_take_no_downsampling_only_where_they_can(tmp_path, capsys):
    assert cli.main(["train", "--model", "factorized", "--data", "digits", "--downsample", "0", "--epochs", "1",
                     "--quiet", "--out", str(tmp_path / "r")]) == 2
    assert "GDN" in capsys.readouterr().err
    assert cli.main(["train", "--model", "factorized", "--transform", "gdn", "--data", "digits", "--downsample", "0",
                     "--epochs", "1", "--latent", "2", "--hidden", "4", "--quiet", "--out", str(tmp_path / "g")]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(tmp_path / "g"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["codes_round_trip"] is True


def test_the_page_says_each_thing_once(run, capsys):
    assert cli.main(["report", str(run), "--force"]) == 0
    page = (run / "report.html").read_text()
    says_each_thing_once(page)  # support: the configuration's, not again among the final metrics
    assert "<tr><th>support</th><td>63</td></tr>" in page and "<th>bpp_file</th>" in page
