#!/usr/bin/env python3
"""Times SD1.5 blocks in PyTorch CPU with the same math as our Go graphs.

Our own short re-implementation (no diffusers: it is not installable here) of
ResnetBlock2D and Transformer2DModel (1×1 conv projections, one
BasicTransformerBlock with self- and cross-attention and a GEGLU
feed-forward), at the shapes given on the command line. Prints one JSON
object: {"<kind>_<res>_<ch>": seconds_per_run, ...}.

usage: torch_blocks.py --threads 2 --batch 2 --repeat 3 resnet:64:320 transformer:64:320 ...
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


class Resnet(torch.nn.Module):
    def __init__(self, ch, temb, groups):
        super().__init__()
        self.norm1 = torch.nn.GroupNorm(groups, ch, eps=1e-5)
        self.conv1 = torch.nn.Conv2d(ch, ch, 3, padding=1)
        self.time_emb_proj = torch.nn.Linear(temb, ch)
        self.norm2 = torch.nn.GroupNorm(groups, ch, eps=1e-5)
        self.conv2 = torch.nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


class Attention(torch.nn.Module):
    def __init__(self, ch, ctx, heads):
        super().__init__()
        self.heads = heads
        self.to_q = torch.nn.Linear(ch, ch, bias=False)
        self.to_k = torch.nn.Linear(ctx, ch, bias=False)
        self.to_v = torch.nn.Linear(ctx, ch, bias=False)
        self.to_out = torch.nn.Linear(ch, ch)

    def forward(self, x, ctx):
        b, t, c = x.shape
        h = self.heads
        d = c // h

        def split(y):
            return y.reshape(b, -1, h, d).permute(0, 2, 1, 3).reshape(b * h, -1, d)

        q, k, v = split(self.to_q(x)), split(self.to_k(ctx)), split(self.to_v(ctx))
        scores = torch.baddbmm(torch.empty(q.shape[0], q.shape[1], k.shape[1]), q, k.transpose(1, 2), beta=0, alpha=d ** -0.5)
        out = torch.bmm(scores.softmax(dim=-1), v)
        out = out.reshape(b, h, t, d).permute(0, 2, 1, 3).reshape(b, t, c)
        return self.to_out(out)


class Transformer(torch.nn.Module):
    def __init__(self, ch, ctx, heads, groups):
        super().__init__()
        self.norm = torch.nn.GroupNorm(groups, ch, eps=1e-6)
        self.proj_in = torch.nn.Conv2d(ch, ch, 1)
        self.norm1 = torch.nn.LayerNorm(ch)
        self.attn1 = Attention(ch, ch, heads)
        self.norm2 = torch.nn.LayerNorm(ch)
        self.attn2 = Attention(ch, ctx, heads)
        self.norm3 = torch.nn.LayerNorm(ch)
        self.ff_proj = torch.nn.Linear(ch, 8 * ch)
        self.ff_out = torch.nn.Linear(4 * ch, ch)
        self.proj_out = torch.nn.Conv2d(ch, ch, 1)

    def forward(self, x, ctx):
        b, c, hh, ww = x.shape
        y = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(b, hh * ww, c)
        y = y + self.attn1(self.norm1(y), self.norm1(y))
        y = y + self.attn2(self.norm2(y), ctx)
        v, gate = self.ff_proj(self.norm3(y)).chunk(2, dim=-1)
        y = y + self.ff_out(v * F.gelu(gate))
        y = y.reshape(b, hh, ww, c).permute(0, 3, 1, 2)
        return self.proj_out(y) + x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--groups", type=int, default=32)
    ap.add_argument("--temb", type=int, default=1280)
    ap.add_argument("--ctx", type=int, default=768)
    ap.add_argument("--seq", type=int, default=77)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("blocks", nargs="+")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = {}
    with torch.no_grad():
        for spec in args.blocks:
            kind, res, ch = spec.split(":")
            res, ch = int(res), int(ch)
            x = torch.randn(args.batch, ch, res, res)
            if kind == "resnet":
                m = Resnet(ch, args.temb, args.groups).eval()
                extra = torch.randn(args.batch, args.temb)
            else:
                m = Transformer(ch, args.ctx, args.heads, args.groups).eval()
                extra = torch.randn(args.batch, args.seq, args.ctx)
            m(x, extra)  # warm-up
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                m(x, extra)
                best = min(best, time.perf_counter() - t0)
            out[f"{kind}_{res}_{ch}"] = best
    print(json.dumps(out))


if __name__ == "__main__":
    main()
