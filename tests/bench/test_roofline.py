"""Roofs and FLOP counts of the benchmark's cost model (roofline)."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mesh_decoder.bench.roofline import decoder_cost, matmul_roof
from mesh_decoder.pca import PCAModel


class ConvDecoder(nn.Module):
    """latent -> (B, 8, 16, 16) -> a (transposed) 2-D convolution."""

    latent_size = 4

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.fc = nn.Linear(4, 8 * 16 * 16)
        self.conv = conv

    def forward(self, z):
        return self.conv(self.fc(z).view(-1, 8, 16, 16))


@pytest.mark.parametrize("conv, hand", [
    # transposed: every input pixel (16 x 16, 8 channels) times a (8, 6 / 2, 4, 4) weight
    (nn.ConvTranspose2d(8, 6, kernel_size=4, stride=2, padding=1, groups=2), 2 * 16 * 16 * 8 * 6 * 16 // 2),
    (nn.ConvTranspose2d(8, 4, kernel_size=3, stride=3), 2 * 16 * 16 * 8 * 4 * 9),
    # direct: every output pixel (8 x 8, 6 channels) from a (8 / 2, 3, 3) patch
    (nn.Conv2d(8, 6, kernel_size=3, stride=2, padding=1, groups=2), 2 * 8 * 8 * 6 * 8 * 9 // 2),
])
def test_conv_flops_match_hand_count_and_torch(conv, hand):
    """A strided transposed convolution was counted from its output size: stride^2 too many FLOPs."""
    model = ConvDecoder(conv).eval()
    z = torch.randn(1, 4, generator=torch.Generator().manual_seed(7))
    counted = {layer.name: layer.flops for layer in decoder_cost(model, z).layers}
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(z)
    assert counted["conv"] == hand
    assert counted["conv"] == counter.get_flop_counts()["Global"][torch.ops.aten.convolution]


def test_pca_parameters_are_its_mean_and_components():
    """PCA holds its model in buffers: the table said 0 parameters for a 16-component PCA
    (the sweep's table counts mean + components for the same model)."""
    shape = PCAModel(10, 4)
    z = torch.randn(1, 4, generator=torch.Generator().manual_seed(6))
    assert decoder_cost(shape, z).parameters == 3 * 10 + 4 * 3 * 10
    coloured = PCAModel(10, 4, num_color_components=2)
    assert decoder_cost(coloured, z).parameters == (3 * 10 + 4 * 3 * 10) + (3 * 10 + 2 * 3 * 10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_cpu_roof_uses_a_quick_size(dtype):
    """fp16 at n=2048 takes tens of seconds a product on most CPUs: the size is chosen by a quick
    product first (no growth allowed here: the start size, 256) and recorded."""
    roof = matmul_roof("cpu", dtype, 2048, budget_s=0.01, max_product_s=0.0)
    assert roof["requested_n"] == 2048 and roof["n"] == 256
    assert roof["flops"] == 2 * 256**3
    assert roof["gflops"] > 0 and roof["timing"]["repeats"] >= 3
    small = matmul_roof("cpu", dtype, 64, budget_s=0.01)  # below the start size: as asked
    assert small["n"] == small["requested_n"] == 64 and small["flops"] == 2 * 64**3


def test_fp32_cpu_roof_keeps_the_requested_size():
    roof = matmul_roof("cpu", torch.float32, 320, budget_s=0.01, max_product_s=0.0)
    assert roof["n"] == roof["requested_n"] == 320 and roof["flops"] == 2 * 320**3
    with pytest.raises(ValueError, match="n: expected an integer >= 1, got 0"):
        matmul_roof("cpu", torch.float32, 0)
