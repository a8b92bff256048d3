#!/usr/bin/env python3
"""Reference CSN models in PyTorch for the Deno tests, written from shared/docs/seed-pipeline.md section 5 with
mmaction2's ResNet3dCSN parameter names (ConvModule = conv + bn (+ ReLU)), the seed's CSN-UNet decoder and the
max-pooled classifier. Not copied code: a re-statement of the architecture for testing.

Commands (argv[1]):
  count  <json cfg>              -> prints {"params": n, "entries": k}
  run    <json cfg> <dir>        -> builds the model with seed 0, saves <dir>/model.pth (torch.save state_dict),
                                    reads <dir>/input.json, writes <dir>/out.json: eval output, train output,
                                    gradients of every parameter of sum(train output * w) (w from input.json),
                                    all computed in float64
"""
import copy
import json
import sys

import torch
import torch.nn as nn

DEPTHS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class ConvModule(nn.Module):
    def __init__(self, cin, cout, k, stride=1, padding=0, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, k, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return torch.relu(x) if self.act else x


class Bottleneck(nn.Module):
    def __init__(self, cin, planes, stride, tstride, kind, downsample):
        super().__init__()
        s = (tstride, stride, stride)
        self.conv1 = ConvModule(cin, planes, 1)
        if kind == "ir":
            self.conv2 = nn.Sequential(ConvModule(planes, planes, 3, s, 1, groups=planes))
        else:
            self.conv2 = nn.Sequential(ConvModule(planes, planes, 1, act=False),
                                       ConvModule(planes, planes, 3, s, 1, groups=planes))
        self.conv3 = ConvModule(planes, planes * 4, 1, act=False)
        self.downsample = ConvModule(cin, planes * 4, 1, s, act=False) if downsample else None

    def forward(self, x):
        idt = self.downsample(x) if self.downsample is not None else x
        return torch.relu(self.conv3(self.conv2(self.conv1(x))) + idt)


class CSN(nn.Module):
    def __init__(self, depth, kind, base=64, cin=3):
        super().__init__()
        self.conv1 = ConvModule(cin, base, (3, 7, 7), (1, 2, 2), (1, 3, 3))
        self.pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        inp = base
        for i, n in enumerate(DEPTHS[depth]):
            planes = base * 2 ** i
            st = 1 if i == 0 else 2
            blocks = [Bottleneck(inp, planes, st, st, kind, True)]
            inp = planes * 4
            blocks += [Bottleneck(inp, planes, 1, 1, kind, False) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))

    def forward(self, x):
        s = self.conv1(x)
        x1 = self.layer1(self.pool(s))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        return [s, x1, x2, x3, self.layer4(x3)]


class Unit(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1_s = nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1))
        self.conv1_t = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x):
        return torch.relu(self.conv1_t(torch.relu(self.conv1_s(x))))


class Stage(nn.Module):
    def __init__(self, cin, cout, scale):
        super().__init__()
        self.layer = nn.Sequential(nn.Upsample(scale_factor=scale, mode="nearest"), Unit(cin, cout))

    def forward(self, x):
        return self.layer(x)


class Skip(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.seq = nn.Sequential(Unit(cin, cout))

    def forward(self, x):
        return self.seq(x)


class Last(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.layer = nn.Sequential(nn.Upsample(scale_factor=(1, 2, 2), mode="nearest"),
                                   nn.Conv3d(cin, cout, 3, padding=1), nn.SiLU())

    def forward(self, x):
        return self.layer(x)


class Decoder(nn.Module):
    def __init__(self, skips, top, filters=(40, 64, 128, 256), last=32):
        super().__init__()
        scales = [(1, 2, 2), 2, 2, 2]
        ins = [filters[1], filters[2], filters[3], top]
        self.decoder_stages = nn.ModuleList([Stage(ins[i], filters[i], scales[i]) for i in range(4)])
        self.bottlenecks = nn.ModuleList([Skip(filters[3 - i] + skips[3 - i], filters[3 - i]) for i in range(4)])
        self.last_block = Last(filters[0], last)

    def forward(self, feats):
        s, x1, x2, x3, x4 = feats
        skips = [x3, x2, x1, s]
        x = x4
        for i in range(4):
            x = self.decoder_stages[3 - i](x)
            x = self.bottlenecks[i](torch.cat([x, skips[i]], 1))
        return self.last_block(x)


class UNet(nn.Module):
    def __init__(self, depth, kind, base, classes):
        super().__init__()
        self.backbone = CSN(depth, kind, base)
        self.decoder = Decoder([base, 4 * base, 8 * base, 16 * base], 32 * base)
        self.final = nn.Conv3d(32, classes, 1)

    def forward(self, x):
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1, 1)
        return self.final(self.decoder(self.backbone(x)))


class Classifier(nn.Module):
    def __init__(self, depth, kind, base, classes, pool):
        super().__init__()
        self.backbone = CSN(depth, kind, base)
        self.pool = pool
        self.dropout = nn.Dropout(0.5)
        self.final = nn.Linear(32 * base, classes)

    def forward(self, x):
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1, 1)
        f = self.backbone(x)[-1]
        f = torch.amax(f, (2, 3, 4)) if self.pool == "max" else f.mean((2, 3, 4))
        return self.final(self.dropout(f))


class Plain(nn.Module):
    """models/plain.ts PlainClassifier with its fracture head; the output is the logits followed by the
    fracture map, flattened: [N, classes + d h w]."""

    def __init__(self, widths, pools, classes, pool):
        super().__init__()
        self.features = nn.ModuleList([ConvModule(3 if i == 0 else widths[i - 1], w, 3, 1, 1)
                                       for i, w in enumerate(widths)])
        self.pools = pools
        self.pool = pool
        self.dropout = nn.Dropout(0.5)
        self.final = nn.Linear(widths[-1], classes)
        self.fracture_head = nn.Conv3d(widths[-1], 1, 1)

    def forward(self, x):
        for m, k in zip(self.features, self.pools):
            x = m(x)
            if k:
                x = nn.functional.max_pool3d(x, k, k)
        f = torch.amax(x, (2, 3, 4)) if self.pool == "max" else x.mean((2, 3, 4))
        return torch.cat([self.final(self.dropout(f)), self.fracture_head(x).flatten(1)], 1)


def build(cfg):
    if cfg["model"] == "plain":
        return Plain(cfg["widths"], cfg["pools"], cfg.get("classes", 8), cfg.get("pool", "max"))
    if cfg["model"] == "unet":
        return UNet(cfg["depth"], cfg["kind"], cfg.get("base", 64), cfg.get("classes", 8))
    if cfg["model"] == "classifier":
        return Classifier(cfg["depth"], cfg["kind"], cfg.get("base", 64), cfg.get("classes", 8), cfg.get("pool", "max"))
    return CSN(cfg["depth"], cfg["kind"], cfg.get("base", 64))


def main():
    cmd, cfg = sys.argv[1], json.loads(sys.argv[2])
    torch.manual_seed(0)
    model = build(cfg)
    if cmd == "count":
        sd = model.state_dict()
        print(json.dumps({"params": sum(p.numel() for p in model.parameters()), "entries": len(sd)}))
        return
    d = sys.argv[3]
    # Non-trivial BN state so that eval mode differs from train mode.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    torch.save(model.state_dict(), f"{d}/model.pth")
    model32 = copy.deepcopy(model)
    # The reference values are computed in float64 (the f32 weights are exact in it): the truth that both
    # PyTorch's and our f32 results approximate. PyTorch's own f32 gradients of these models deviate from it
    # by up to ~3e-5 of each tensor's largest value.
    model = model.double()
    inp = json.load(open(f"{d}/input.json"))
    x = torch.tensor(inp["x"]["data"], dtype=torch.float64).reshape(inp["x"]["shape"])
    model.eval()
    with torch.no_grad():
        ev = model(x)
    model.train()
    if hasattr(model, "dropout"):
        model.dropout.p = 0.0  # dropout masks cannot match across engines
    tr = model(x)
    if cfg.get("grad_eval"):
        # Gradients through eval-mode batch norm (see models_test.ts for why the UNet's are taken there).
        model.eval()
        tr_out = tr
        tr = model(x)
    w = torch.tensor(inp["w"], dtype=torch.float64).reshape(tr.shape)
    (tr * w).sum().backward()
    grads = {n: p.grad.reshape(-1).tolist() for n, p in model.named_parameters()}
    # PyTorch's own float32 error on the same gradients: how well-conditioned each one is.
    if hasattr(model32, "dropout"):
        model32.dropout.p = 0.0
    model32.train()
    if cfg.get("grad_eval"):
        with torch.no_grad():
            model32(x.float())  # the same running-statistics update as the f64 model had
        model32.eval()
    (model32(x.float()) * w.float()).sum().backward()
    g64 = dict(model.named_parameters())
    err32 = {n: float((p.grad.double() - g64[n].grad).abs().max()) for n, p in model32.named_parameters()}
    rel32 = {n: float((p.grad.double() - g64[n].grad).norm() / g64[n].grad.norm().clamp_min(1e-30))
             for n, p in model32.named_parameters()}
    stats = {n: b.reshape(-1).tolist() for n, b in model.named_buffers() if "running" in n}
    if cfg.get("grad_eval"):
        tr = tr_out
    json.dump({"eval": ev.reshape(-1).tolist(), "shape": list(ev.shape), "train": tr.detach().reshape(-1).tolist(),
               "grads": grads, "err32": err32, "rel32": rel32, "buffers": stats}, open(f"{d}/out.json", "w"))


if __name__ == "__main__":
    main()
