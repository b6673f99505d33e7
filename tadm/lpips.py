"""LPIPS (Zhang et al. 2018) with its VGG16 backbone, from weights given by path.

Nothing is downloaded: the file (safetensors, or a torch checkpoint loaded with
weights_only=True) must hold torchvision's VGG16 `features.*` weights and the LPIPS linear
heads `lin0.model.1.weight` .. `lin4.model.1.weight`, as the `lpips` package names them.
"""

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
SLICES = (4, 9, 16, 23, 30)  # ends of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
WIDTHS = (64, 128, 256, 512, 512)


def vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(v), 3, padding=1), nn.ReLU()]
            channels = int(v)
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """Perceptual distance of images in [-1, 1], (B, 3, H, W) -> scalar mean over the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(w, 1, 1, bias=False) for w in WIDTHS)
        shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
        self.register_buffer("shift", shift, persistent=False)
        scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]
        self.register_buffer("scale", scale, persistent=False)

    @classmethod
    def from_file(cls, path: str | Path) -> "LPIPS":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"LPIPS weights {str(path)!r} do not exist")
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model = cls()
        ours = {k: v for k, v in state.items() if k.startswith("features.")}
        for i in range(len(WIDTHS)):
            key = f"lin{i}.model.1.weight"
            if key not in state:
                raise ValueError(f"LPIPS weights {str(path)!r} lack {key}")
            ours[f"lins.{i}.weight"] = state[key]
        model.load_state_dict(ours)
        return model.eval().requires_grad_(False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        fa, fb = (a - self.shift) / self.scale, (b - self.shift) / self.scale
        total = a.new_zeros(())
        start = 0
        for end, lin in zip(SLICES, self.lins, strict=True):
            for layer in self.features[start:end]:
                fa, fb = layer(fa), layer(fb)
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((na - nb) ** 2).mean()
            start = end
        return total
