#!/usr/bin/env python3
"""Reference for tests/optim_test.ts: trains a small conv net with torch.optim.AdamW + CosineAnnealingLR.

stdin JSON: {"state": {name: {"data", "shape"}}, "x": {...}, "y": {...}, "steps", "lr", "wd", "eta_min", "t_max"}
stdout JSON: {"params": {name: [...]}, "lrs": [...], "losses": [...]}
"""
import json
import sys

import torch

torch.set_num_threads(1)
cfg = json.load(sys.stdin)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv3d(2, 4, 3, padding=1, bias=False)  # before BN its gradient is only noise
        self.bn = torch.nn.BatchNorm3d(4, eps=1e-3)
        self.conv2 = torch.nn.Conv3d(4, 3, 1)

    def forward(self, x):
        return self.conv2(torch.relu(self.bn(self.conv1(x)))).mean((2, 3, 4))


def t(spec):
    return torch.tensor(spec["data"], dtype=torch.float32).reshape(spec["shape"])


net = Net()
sd = net.state_dict()
for k, v in cfg["state"].items():
    sd[k] = t(v)
net.load_state_dict(sd)
decay = [p for n, p in net.named_parameters() if "bias" not in n]
no_decay = [p for n, p in net.named_parameters() if "bias" in n]
opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg["lr"],
                        weight_decay=cfg["wd"], foreach=False)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["t_max"], eta_min=cfg["eta_min"])
x, y = t(cfg["x"]), t(cfg["y"])
lrs, losses = [], []
for _ in range(cfg["steps"]):
    lrs.append(opt.param_groups[0]["lr"])
    opt.zero_grad()
    loss = ((net(x) - y) ** 2).mean()
    loss.backward()
    losses.append(loss.item())
    opt.step()
    sched.step()
json.dump({"params": {k: v.reshape(-1).tolist() for k, v in net.state_dict().items()}, "lrs": lrs, "losses": losses},
          sys.stdout)
