"""A small deterministic three-layer classifier for the golden outputs of `gradrank layers --model`.

Linear(16, 32) -> ReLU -> Linear(32, 24) -> ReLU -> Linear(24, 3) with biases, 3-class softmax cross
entropy (the C-output residue form of docs/deep.md, section 2), inputs given as two `batches` of 40 and
24 samples (the sample-weighted mean over batches); float64, every draw from one local torch.Generator.
"""

import torch

D, H1, H2, C = 16, 32, 24, 3


def build():
    g = torch.Generator().manual_seed(7)
    model = torch.nn.Sequential(
        torch.nn.Linear(D, H1, dtype=torch.float64),
        torch.nn.ReLU(),
        torch.nn.Linear(H1, H2, dtype=torch.float64),
        torch.nn.ReLU(),
        torch.nn.Linear(H2, C, dtype=torch.float64),
    )
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fan_in = layer.weight.shape[1]
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g, dtype=torch.float64) * (2.0 / fan_in) ** 0.5)
                layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=g, dtype=torch.float64))
    centres = 1.5 * torch.randn(C, D, generator=g, dtype=torch.float64)
    batches = []
    for size in (40, 24):
        labels = torch.randint(0, C, (size,), generator=g)
        x = centres[labels] + torch.randn(size, D, generator=g, dtype=torch.float64)
        batches.append((x, labels))
    return {"model": model, "batches": batches, "loss": torch.nn.functional.cross_entropy}
