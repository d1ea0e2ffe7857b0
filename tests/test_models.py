import pytest
import torch

from devs.errors import InvalidParameterError, UnknownNameError
from devs.models import ConvNet, build_model, list_models
from devs.runtime import isolated_rng


@pytest.mark.parametrize("size, feature_dim", [(32, 2048), (28, 2048), (8, 128)])
def test_convnet_shapes(size, feature_dim):
    net = build_model("convnet", in_channels=3, num_classes=10, image_size=(size, size))
    x = torch.rand(4, 3, size, size)
    assert net.feature_dim == feature_dim
    assert net.features(x).shape == (4, feature_dim)
    assert net(x).shape == (4, 10)


def test_convnet_is_the_reference_architecture():
    net = ConvNet(in_channels=3, num_classes=10, image_size=(32, 32))
    convs = [m for m in net.trunk if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.trunk if isinstance(m, torch.nn.GroupNorm)]
    pools = [m for m in net.trunk if isinstance(m, torch.nn.AvgPool2d)]
    assert [c.out_channels for c in convs] == [128, 128, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert all(n.num_groups == n.num_channels == 128 and n.affine for n in norms) and len(norms) == 3
    assert len(pools) == 3
    assert isinstance(net.head[-1], torch.nn.Linear) and net.head[-1].in_features == 2048


def test_dropout_and_bottleneck_options():
    net = ConvNet(in_channels=1, num_classes=10, image_size=(28, 28), dropout=0.2, bottleneck=64, width=16, depth=2)
    linears = [m for m in net.head if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(16 * 7 * 7, 64), (64, 10)]
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.2 for m in net.head)
    net.train()
    x = torch.rand(8, 1, 28, 28)
    assert not torch.equal(net(x), net(x))  # dropout is active in training mode
    net.eval()
    assert torch.equal(net(x), net(x))


def test_isolated_rng_is_reproducible_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    with isolated_rng(3):
        a = build_model("convnet", in_channels=1, num_classes=2, image_size=(8, 8))
    with isolated_rng(3):
        b = build_model("convnet", in_channels=1, num_classes=2, image_size=(8, 8))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = build_model("convnet", in_channels=1, num_classes=2, image_size=(8, 8), seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_bad_model_options():
    with pytest.raises(UnknownNameError, match="Valid: convnet"):
        build_model("convnt", in_channels=1, num_classes=2, image_size=(8, 8))
    with pytest.raises(InvalidParameterError, match="norm"):
        ConvNet(1, 2, (8, 8), norm="layer")
    assert ConvNet(1, 2, (2, 2), depth=3).padded_size == (8, 8)  # tiny inputs are padded, not refused
    assert "convnet" in list_models()
