"""The hybrid's neural filter: training, quantized serialisation, plane-wise decoding, and the
encoder keeping it only where it pays for its bytes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sciz.core.hybrid import codec as hybrid_codec
from napari_sciz.core.hybrid import netstage, nnfilter, nntrain
from napari_sciz.core.hybrid.nnfilter import parse_neural_filter
from napari_sciz.core.hybrid.nntrain import NetworkTrainer
from napari_sciz.errors import FormatError

pytest.importorskip("torch")


def two_phase(shape: tuple[int, ...], seed: int = 3) -> np.ndarray:
    """A two-phase volume (sharp boundaries, as in an XCT scan of snow or foam) with noise."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), 3)
    return np.where(field > 0, 3000.0, 1000.0) + rng.normal(0, 20, shape)


def blurred(vol: np.ndarray) -> np.ndarray:
    """A stand-in for a base layer: the volume blurred and rung (a sharpened blur)."""
    from scipy import ndimage

    soft = ndimage.gaussian_filter(vol, 1.2)
    return soft + 0.3 * (soft - ndimage.gaussian_filter(soft, 1.0))


@pytest.mark.parametrize("shape", [(12, 40, 44), (1, 64, 60)], ids=["3d", "2d"])
def test_a_trained_network_corrects_a_blurred_base_and_decodes_plane_by_plane(shape) -> None:
    vol = two_phase(shape)
    base = blurred(vol)
    trainer = NetworkTrainer(base, base, vol, hidden=8, seed=1)
    assert trainer.train(150) == 150
    net = parse_neural_filter(trainer.result().to_bytes())
    assert len(net.to_bytes()) < nnfilter.network_size(shape[0] == 1, 8, 2)  # coded < int8
    whole = net.apply(base, base)
    before = ((base - vol) ** 2).mean()
    after = ((whole - vol) ** 2).mean()
    assert after < 0.8 * before  # the sharp boundaries come back
    # the quantized network does what the sample promised (within a few %)
    assert abs((1 - after / before) - trainer.sample_gain()) < 0.05
    for z in {0, shape[0] // 2, shape[0] - 1}:  # a viewer's planes, one at a time
        np.testing.assert_array_equal(net.apply(base, base[z : z + 1], z, z + 1), whole[z : z + 1])


def test_training_is_reproducible_and_continues_on_a_new_base() -> None:
    vol = two_phase((10, 32, 36))
    base = blurred(vol)
    a, b = (NetworkTrainer(base, base, vol, hidden=6, seed=4) for _ in range(2))
    a.train(40)
    b.train(40)
    assert a.result().to_bytes() == b.result().to_bytes()
    other = base + 5.0
    a.rebase(other, other)
    a.train(20)
    assert a.steps == 60 and a.base is other
    out = a.result().apply(other, other)
    assert np.all(np.isfinite(out))


def test_precision_is_chosen_by_its_price_and_the_coded_network_does_what_it_promised() -> None:
    """Free bytes buy the finest precision, dear ones the coarsest; trained through the
    quantizer, the coded network removes what its sample gain says, in fewer bytes than
    int8 weights take."""
    vol = two_phase((12, 40, 44))
    base = blurred(vol)
    sizes = {}
    finest, coarsest = nntrain.PRECISION_LEVELS[0], nntrain.PRECISION_LEVELS[-1]
    for price, levels in ((0.0, finest), (1.0, coarsest)):
        trainer = NetworkTrainer(base, base, vol, hidden=8, seed=1)
        trainer.train(150)
        assert trainer.quantize(price, steps=20) == levels == trainer.levels
        net = parse_neural_filter(trainer.result().to_bytes())
        assert net.step_codes is not None and max(int(abs(t).max()) for t in net.tensors) <= 40
        after = ((net.apply(base, base) - vol) ** 2).mean()
        before = ((base - vol) ** 2).mean()
        assert abs((1 - after / before) - trainer.sample_gain()) < 0.02
        sizes[levels] = len(net.to_bytes())
    assert sizes[coarsest] < sizes[finest] < nnfilter.network_size(False, 8, 2)


def test_version_5_networks_with_int8_weights_still_parse() -> None:
    """The int8 form (flag bit 1 clear) reads back to the same weights."""
    vol = two_phase((6, 24, 24))
    base = blurred(vol)
    trainer = NetworkTrainer(base, base, vol, hidden=4, seed=0)
    trainer.train(20)
    coded = trainer.result()
    old = nnfilter.NeuralFilter(
        coded.flat, coded.hidden, coded.depth, coded.lo, coded.span, coded.exponents,
        [t.astype(np.int8) for t in coded.tensors], coded.scales,
    )  # fmt: skip
    data = old.to_bytes()
    assert data[0] == 0 and len(data) == nnfilter.network_size(False, 4, 2)
    back = parse_neural_filter(data)
    assert back.step_codes is None
    for a, b in zip(back.weights(), coded.weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_damaged_network_bytes_are_format_errors() -> None:
    vol = two_phase((6, 24, 24))
    base = blurred(vol)
    trainer = NetworkTrainer(base, base, vol, hidden=4, seed=0)
    trainer.train(5)
    data = trainer.result().to_bytes()
    bad_flags = bytes([7]) + data[1:]
    zero_span = data[:7] + np.float32(0).tobytes() + data[11:]
    for bad in (data[:5], data[:-1], data + b"\x00", bad_flags, zero_span):
        with pytest.raises(FormatError):
            parse_neural_filter(bad)


def test_the_encoder_keeps_a_network_that_pays_and_files_decode_to_its_reconstruction(
    monkeypatch,
) -> None:
    """With the network's bytes priced at nothing, a two-phase block gets one: the payload
    says so, and whole, region and plane decodes give the encoder's reconstruction."""
    from napari_sciz.core.api import compress, decompress, open_sciz
    from napari_sciz.core.hybrid import HybridBlock, decode_hybrid_block

    monkeypatch.setattr(netstage, "_error_per_byte", lambda *a: 0.0)
    monkeypatch.setattr(netstage, "_PROBE_MARGIN", -1.0)
    vol = np.clip(two_phase((24, 48, 40)), 0, 65535).astype(np.uint16)
    res = compress(vol, ratio=8, mode="hybrid", device="cpu", steps=120)
    assert 0.98 * 8 <= res.ratio <= 1.1 * 8
    payload = open_sciz(res.data)._file.payload(0)
    info = hybrid_codec.describe(payload)
    assert info["network_bytes"] > 0 and info["network_hidden"] > 0
    np.testing.assert_array_equal(decompress(res.data), res.reconstruction)
    np.testing.assert_array_equal(decompress(res.data, roi="5:9,:,:"), res.reconstruction[5:9])
    whole = decode_hybrid_block(payload, vol.shape)
    block = HybridBlock(payload, vol.shape)
    for z in (vol.shape[0] - 1, 0, 11):
        np.testing.assert_array_equal(block.planes(z, z + 1), whole[z : z + 1])


def test_a_network_that_does_not_pay_is_left_out(monkeypatch) -> None:
    """Priced at more than it can remove, the probe drops the network: no bytes, no time."""
    from napari_sciz.core.api import compress, open_sciz

    monkeypatch.setattr(netstage, "_PROBE_MARGIN", 10.0)
    trained: list[int] = []
    real = hybrid_codec._with_network
    monkeypatch.setattr(
        hybrid_codec, "_with_network", lambda *a, **k: trained.append(1) or real(*a, **k)
    )
    vol = np.clip(two_phase((24, 48, 40)), 0, 65535).astype(np.uint16)
    res = compress(vol, ratio=24, mode="hybrid", device="cpu", steps=60)
    payload = open_sciz(res.data)._file.payload(0)
    assert hybrid_codec.describe(payload)["network_bytes"] == 0
    assert not trained
    assert payload[1] & 0x20 == 0  # no network flag, no length byte


def test_sciz_info_lists_the_neural_filter(capsys) -> None:
    """``sciz info`` of a stored version-5 file that holds a network names its bytes."""
    from pathlib import Path

    from napari_sciz.cli import main

    path = Path(__file__).parent / "data" / "hybrid_v5_slabs.sciz"
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "neural filter 234 B in 1 of 1 blocks" in out
