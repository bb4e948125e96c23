"""``iai pretrained`` writes each guide's measured quality in words, not as a dict."""

from iai_prob.cli import main
from iai_prob.cli.pretrained import quality_words


def test_quality_is_written_in_words(capsys):
    assert main(["pretrained"]) == 0
    quality = [line.strip() for line in capsys.readouterr().out.splitlines() if "quality:" in line]
    assert len(quality) == 3 and not any("{" in line for line in quality)
    assert quality[1].startswith(  # linear_regression, from its card
        "quality: median KL(q ‖ exact posterior) 0.021 nats at N = 16, 0.0056 nats at N = 64, "
        "0.017 nats at N = 256, 0.044 nats at N = 16384"
    )


def test_each_measure_of_a_card():
    assert quality_words({"elbo_per_point": {"1024": -2.4113, "64": -2.9914}}) == (
        "ELBO per data point -2.99 at N = 64, -2.41 at N = 1024 (on held-out simulated "
        "datasets of N rows)"
    )
    khat = {"64": {"median_khat": 0.4853, "share_khat_below_0.7": 0.921875}}
    assert quality_words({"psis_khat": khat}).startswith(
        "PSIS k̂ median 0.49 (92% of datasets below 0.7) at N = 64"
    )
    assert quality_words({"held_out_loss": 1.5}).startswith("held out loss: 1.5")
