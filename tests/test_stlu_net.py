from __future__ import annotations

import io

import pytest
import torch

from monai_stlu.networks.nets import STLUNet, STLUOutput, VNet


def test_eval_returns_one_tensor():
    net = STLUNet(in_channels=1, out_channels=3, n_filters=4).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 32, 32, 16))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 3, 32, 32, 16)


def test_train_returns_both_streams():
    net = STLUNet(n_filters=4).train()
    out = net(torch.rand(2, 1, 32, 32, 16), torch.rand(2, 1, 32, 32, 16))
    assert isinstance(out, STLUOutput)
    assert all(t.shape == (2, 2, 32, 32, 16) for t in out)
    # dropout makes the two streams differ on the same input
    assert not torch.allclose(out.mix_labeled, out.drop_labeled)


def test_identical_inputs_mix_to_themselves():
    # x_l == x_u gives cos = 1, w = 1 at every stage, so (in eval mode, no dropout) the mixing stream equals the plain net
    net = STLUNet(n_filters=4).eval()
    x = torch.rand(2, 1, 32, 32, 16)
    with torch.no_grad():
        out = net(x, x.clone())
        plain = net(x)
    torch.testing.assert_close(out.mix_labeled, plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.drop_unlabeled, plain, rtol=1e-4, atol=1e-5)


def test_mixing_changes_only_mixed_stages():
    torch.manual_seed(3)
    xl, xu = torch.rand(2, 1, 32, 32, 16), 3 * torch.randn(2, 1, 32, 32, 16)
    nomix = STLUNet(n_filters=4, mix_stages=[]).eval()
    mix = STLUNet(n_filters=4, mix_stages=[0, 4]).eval()
    mix.load_state_dict(nomix.state_dict())
    with torch.no_grad():
        a, b = nomix(xl, xu), mix(xl, xu)
        torch.testing.assert_close(a.mix_labeled, nomix(xl))  # no mixing stage: plain forward
    assert (a.mix_labeled - b.mix_labeled).abs().max() > 1e-3
    torch.testing.assert_close(a.drop_labeled, b.drop_labeled)  # the dropout stream never mixes


def _two_stream_reference(net: STLUNet, xl: torch.Tensor, xu: torch.Tensor) -> list[torch.Tensor]:
    """Both streams computed separately from the image up, mixing with the plain formula (no shared stages)."""
    b = xl.shape[0]
    h_mix = h_drop = torch.cat([xl, xu])
    mixed, dropped = [], []
    for k, stage in enumerate(net.backbone.encoder):
        h_mix, h_drop = stage(h_mix), stage(h_drop)
        if k in net.mix_stages:
            a, u = h_mix[:b], h_mix[b:]
            dims = list(range(2, a.dim()))
            norms = torch.linalg.vector_norm(a, dim=dims) * torch.linalg.vector_norm(u, dim=dims)
            w = ((a * u).sum(dims) / norms.clamp_min(1e-8)).clamp(0, 1)[..., None, None, None]
            h_mix = torch.cat([w * a + (1 - w) * u, w * u + (1 - w) * a])
        if k in net.dropout_stages:
            h_drop = net.channel_dropout(h_drop)
        mixed.append(h_mix)
        dropped.append(h_drop)
    m, d = net.backbone.decode_stages(mixed), net.backbone.decode_stages(dropped)
    return [m[:b], m[b:], d[:b], d[b:]]


def assert_streams_match_reference(net: STLUNet, xl: torch.Tensor, xu: torch.Tensor) -> list[torch.Tensor]:
    """``net(xl, xu)`` against :py:func:`_two_stream_reference` (float64 inputs): outputs and every parameter's
    gradient under random output gradients. Returns the outputs."""
    g = [torch.randn(xl.shape[0], 2, *xl.shape[2:], dtype=torch.float64) for _ in range(4)]
    results = []
    for fn in (lambda: list(net(xl, xu)), lambda: _two_stream_reference(net, xl, xu)):
        outs = fn()
        results.append((outs, torch.autograd.grad(outs, list(net.parameters()), g)))
    for got, want in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    for got, want in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
    return results[0][0]


@pytest.mark.parametrize("mix_stages", [None, [1, 3], []])
def test_shared_stages_equal_two_separate_streams(mix_stages):
    # train mode (batch statistics), no dropout randomness: outputs and weight gradients must equal the
    # unshared computation; stages before the first mixing/dropout stage are computed once
    torch.manual_seed(4)
    net = STLUNet(n_filters=4, mix_stages=mix_stages, dropout_stages=[2], dropout_prob=0.0).double().train()
    xl, xu = torch.rand(2, 1, 32, 32, 16, dtype=torch.float64), torch.rand(2, 1, 32, 32, 16, dtype=torch.float64)
    assert_streams_match_reference(net, xl, xu)


def test_bad_stages_and_batches():
    with pytest.raises(ValueError, match="mix_stages"):
        STLUNet(n_filters=4, mix_stages=[5])
    with pytest.raises(ValueError, match="dropout_stages"):
        STLUNet(n_filters=4, dropout_stages=[-1])
    net = STLUNet(n_filters=4)
    with pytest.raises(ValueError, match="one to one"):
        net(torch.rand(2, 1, 32, 32, 16), torch.rand(1, 1, 32, 32, 16))
    with pytest.raises(ValueError, match="encoder"):
        STLUNet(backbone=torch.nn.Conv3d(1, 2, 1))


def test_custom_backbone():
    backbone = VNet(in_channels=2, out_channels=3, n_filters=4, normalization="instance")
    net = STLUNet(backbone=backbone, mix_stages=[2, 3, 4])
    out = net(torch.rand(1, 2, 32, 32, 16), torch.rand(1, 2, 32, 32, 16))
    assert out.mix_unlabeled.shape == (1, 3, 32, 32, 16)


@pytest.mark.parametrize("mode", ["script", "trace"])
def test_torchscript_export_same_output(mode):
    net = STLUNet(n_filters=4).eval()
    x = torch.rand(1, 1, 32, 32, 16)
    ts = torch.jit.script(net) if mode == "script" else torch.jit.trace(net, x)
    buf = io.BytesIO()
    torch.jit.save(ts, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    y = torch.rand(2, 1, 48, 32, 32)  # another shape than the trace's example
    with torch.no_grad():
        torch.testing.assert_close(loaded(y), net(y), rtol=1e-5, atol=1e-5)
