"""Train the `digits` zoo model and write models/weights/digits.npz.

    python -m hal.models.train_digits      (needs torch and scikit-learn)

The network is defined once in hal.nn (models/digits.py); this script mirrors it
in torch only to train, then copies the weights back by name.
"""

from __future__ import annotations

import numpy as np


def main(epochs: int = 60, seed: int = 0) -> None:
    import torch

    from hal.models import digits

    torch.manual_seed(seed)
    xtr, ytr = digits.dataset("train")
    xte, yte = digits.dataset("test")
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = torch.from_numpy(xtr), torch.from_numpy(ytr).long()
    for epoch in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (net(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean()
    hal_net = digits.architecture()
    names = {"0": "0", "3": "3", "7": "7", "9": "9"}  # Sequential indices match
    state = {}
    for key, value in net.state_dict().items():
        idx, what = key.split(".")
        state[f"{names[idx]}.{what}"] = value.numpy().astype(np.float32)
    hal_net.load_state_dict(state)
    hal_net.save_weights(digits.WEIGHTS)
    print(f"held-out accuracy (torch, fp32): {acc:.4f}; wrote {digits.WEIGHTS}")


if __name__ == "__main__":
    main()
