#!/usr/bin/env python3
"""PyTorch reference of `oni bench learner`: the same network, the same APPO/V-trace update
and the same batch, for a side-by-side figure.

`oni bench learner --reference torch` writes the batch it trains on (and the tile atlas that
draws tty cells) into a directory and runs this script on it with the PyTorch of
~/.cache/oni/torch-venv (scripts/torch-venv.sh installs it; CI never does). Prints one JSON
object with the fields of `oni bench learner`.

The network is built from standard PyTorch layers. ONI's way (`--screen image`, the default):
the tty crop is drawn as an RGB image (6x6 tile per cell, looked up in the atlas) and fed to
nn.Conv2d layers. `--screen lookup` computes the first convolution as oni does (policy/src/
screen.rs): each 8x8 window covers exactly 2x2 cells, so conv1 is a sum of four lookups in a
table built per update from the tiles of the cells present and the conv weights; the image is
never drawn. It is the same function (and gradient) at a fraction of the cost, so the ratio of
the rest of the update is visible. The core (`--core cell`, the default) is nn.GRUCell stepped
per time step so that the state can be zeroed where an episode starts; `--core gru` runs
cuDNN/oneDNN's fused nn.GRU over the segments between resets (packed, each from its own
initial state). The update: unroll over T+1 observations, V-trace targets from detached values
and log-probabilities, PPO-clip + value + entropy loss, global grad-norm clipping, Adam.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load(d, name, dtype, shape):
    return np.fromfile(os.path.join(d, name), dtype=dtype).reshape(shape)


def core_and_heads(net, x, h0, keep):
    """The GRU over time-major inputs, its state zeroed where keep is 0, then the actor and
    critic heads."""
    steps, b = keep.shape
    if getattr(net, "segments", None) is not None:
        hs = gru_segments(net.gru, net.segments, x, h0)
    else:
        h, hs = h0, []
        for t in range(steps):
            h = net.core(x[t * b:(t + 1) * b], h * keep[t].unsqueeze(1))
            hs.append(h)
        hs = torch.cat(hs, 0)
    return net.actor(hs), net.critic(hs).squeeze(1)


def segments(keep):
    """The runs between resets of each column of keep [(T+1), B], as index tensors for
    `gru_segments`: padded time-major row indices into x, their mask, lengths, and which
    segments start from h0 (the first of a column that does not start with a reset)."""
    steps, b = keep.shape
    runs = []  # (column, start, length)
    k = keep.cpu().numpy()
    for col in range(b):
        start = 0
        for t in range(1, steps + 1):
            if t == steps or k[t, col] == 0.0:
                runs.append((col, start, t - start))
                start = t
    longest = max(n for _, _, n in runs)
    idx = np.zeros((longest, len(runs)), dtype=np.int64)
    mask = np.zeros((longest, len(runs)), dtype=bool)
    for s_, (col, start, n) in enumerate(runs):
        idx[:n, s_] = (np.arange(start, start + n)) * b + col
        mask[:n, s_] = True
    cols = np.array([c for c, _, _ in runs])
    from_h0 = np.array([st == 0 and k[0, c] != 0.0 for c, st, _ in runs])
    lengths = torch.tensor([n for _, _, n in runs])
    return torch.from_numpy(idx), torch.from_numpy(mask), lengths, torch.from_numpy(cols), torch.from_numpy(from_h0)


def gru_segments(gru, seg, x, h0):
    idx, mask, lengths, cols, from_h0 = seg
    padded = x[idx.to(x.device)]  # [L, S, F]
    init = h0[cols.to(x.device)] * from_h0.to(x.device).unsqueeze(1).float()
    packed = nn.utils.rnn.pack_padded_sequence(padded, lengths, enforce_sorted=False)
    out, _ = gru(packed, init.unsqueeze(0).contiguous())
    out, _ = nn.utils.rnn.pad_packed_sequence(out)  # [L, S, H]
    m = mask.to(x.device)
    hs = torch.empty(x.shape[0], out.shape[2], device=x.device, dtype=out.dtype)
    hs[idx.to(x.device)[m]] = out[m]
    return hs


def lookup_tables():
    """For each of the 36 window parts (row phase, column phase, cell row a, cell column b):
    the 0/1 matrix taking a 3x6x6 tile to the 3x8x8 taps of the window that cover that cell."""
    p = np.zeros((36, 3 * 36, 3 * 64), dtype=np.float32)
    for pr_i, pr in enumerate((0, 2, 4)):
        for pc_i, pc in enumerate((0, 2, 4)):
            for y in range(8):
                for x in range(8):
                    a, py = divmod(pr + y, 6)
                    b_, px = divmod(pc + x, 6)
                    k = ((pr_i * 3 + pc_i) * 2 + a) * 2 + b_
                    for c in range(3):
                        p[k, c * 36 + py * 6 + px, c * 64 + y * 8 + x] = 1.0
    return torch.from_numpy(p)


class OniNet(nn.Module):
    """ONI's NetHack network (Sample Factory's encoder as Motif set it up), sizes from meta."""

    def __init__(self, m, atlas, screen="image"):
        super().__init__()
        self.rows, self.cols = m["crop_rows"], m["crop_cols"]
        self.lookup = False
        self.register_buffer("atlas", atlas)  # [cells, 3, 6, 6]
        self.convs = nn.ModuleList([nn.Conv2d(3, 32, 8, 4), nn.Conv2d(32, 64, 4, 2), nn.Conv2d(64, 128, 3, 2)])
        with torch.no_grad():
            flat = self.screen(torch.zeros(1, self.rows * self.cols, dtype=torch.long)).shape[1]
        self.screen_out = nn.Linear(flat, m["screen_hidden"])
        if screen == "lookup":
            self.lookup = True
            self.register_buffer("parts", lookup_tables())
            # per output position of conv1: the part and the 2x2 cells each lookup reads
            oh, ow = (self.rows * 6 - 8) // 4 + 1, (self.cols * 6 - 8) // 4 + 1
            k_idx = np.zeros((oh, ow, 4), dtype=np.int64)
            cell = np.zeros((oh, ow, 4), dtype=np.int64)
            for i in range(oh):
                r0, pr = divmod(4 * i, 6)
                for j in range(ow):
                    c0, pc = divmod(4 * j, 6)
                    for q, (a, b_) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
                        k_idx[i, j, q] = (((pr // 2) * 3 + pc // 2) * 2 + a) * 2 + b_
                        cell[i, j, q] = (r0 + a) * self.cols + c0 + b_
            self.register_buffer("k_idx", torch.from_numpy(k_idx))
            self.register_buffer("cell_idx", torch.from_numpy(cell))
        sd, sh, mb, mh, h = m["stats_dim"], m["stats_hidden"], m["message_bytes"], m["message_hidden"], m["core_hidden"]
        self.stats = nn.Sequential(nn.Linear(sd, sh), nn.ELU(), nn.Linear(sh, sh), nn.ELU())
        self.message = nn.Sequential(nn.Linear(mb, mh), nn.ELU(), nn.Linear(mh, mh), nn.ELU())
        self.core = nn.GRUCell(m["screen_hidden"] + sh + sd + mh, h)
        self.actor = nn.Linear(h, m["num_actions"])
        self.critic = nn.Linear(h, 1)
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                nn.init.orthogonal_(mod.weight)
                nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.GRUCell):
                nn.init.orthogonal_(mod.weight_ih)
                nn.init.orthogonal_(mod.weight_hh)
                nn.init.zeros_(mod.bias_ih)
                nn.init.zeros_(mod.bias_hh)

    def conv1_lookup(self, cells):
        """conv1 as four table lookups per output position (see the module docstring)."""
        conv = self.convs[0]
        uniq, inv = torch.unique(cells, return_inverse=True)  # a few hundred cell ids
        tiles = self.atlas[uniq].flatten(1)  # [U, 108]
        w = conv.weight.flatten(1)  # [32, 192]
        table = torch.einsum("up,kpq,oq->kuo", tiles, self.parts, w)  # [36, U, 32]
        local = inv[:, self.cell_idx]  # [N, oh, ow, 4]
        out = conv.bias
        for q in range(4):
            out = out + table[self.k_idx[:, :, q], local[..., q]]  # [N, oh, ow, 32]
        return out.permute(0, 3, 1, 2)

    def screen(self, cells):
        n = cells.shape[0]
        if self.lookup:
            x = F.elu(self.conv1_lookup(cells))
            for conv in self.convs[1:]:
                x = F.elu(conv(x))
            return x.flatten(1)
        img = self.atlas[cells]  # [N, R*C, 3, 6, 6]
        img = img.view(n, self.rows, self.cols, 3, 6, 6).permute(0, 3, 1, 4, 2, 5).reshape(n, 3, self.rows * 6, self.cols * 6)
        x = img
        for conv in self.convs:
            x = F.elu(conv(x))
        return x.flatten(1)

    def forward(self, cells, stats, message, h0, keep):
        """Time-major (T+1)*B observations; keep [(T+1), B]."""
        x = torch.cat([F.elu(self.screen_out(self.screen(cells))), self.stats(stats), stats, self.message(message)], 1)
        return core_and_heads(self, x, h0, keep)


class GlyphCropNet(nn.Module):
    """oni's small network: embedded glyph crop through 3x3 "same" convolutions, linear
    stats, a byte CNN over the message prefix, a linear torso, GRU."""

    def __init__(self, m):
        super().__init__()
        self.rows, self.cols = m["crop_rows"], m["crop_cols"]
        e, c, layers = m["glyph_embed"], m["glyph_channels"], m["glyph_conv_layers"]
        self.glyph_embed = nn.Embedding(m["num_glyphs"], e)
        self.convs = nn.ModuleList([nn.Conv2d(e if i == 0 else c, c, 3, padding=1) for i in range(layers)])
        self.glyph_out = nn.Linear(self.rows * self.cols * (c if layers else e), m["glyph_hidden"])
        self.stats = nn.Linear(m["stats_dim"], m["stats_hidden"])
        self.message_bytes = m["message_bytes"]
        self.msg_embed = nn.Embedding(256, m["message_embed"])
        self.msg_conv = nn.Conv1d(m["message_embed"], m["message_channels"], 4, stride=2)
        self.msg_out = nn.Linear(m["message_channels"], m["message_hidden"])
        h = m["core_hidden"]
        self.torso = nn.Linear(m["glyph_hidden"] + m["stats_hidden"] + m["message_hidden"], h)
        self.core = nn.GRUCell(h, h)
        self.actor = nn.Linear(h, m["num_actions"])
        self.critic = nn.Linear(h, 1)

    def forward(self, cells, stats, message_bytes, h0, keep):
        n = cells.shape[0]
        g = self.glyph_embed(cells).view(n, self.rows, self.cols, -1).permute(0, 3, 1, 2)
        for conv in self.convs:
            g = F.relu(conv(g))
        g = F.relu(self.glyph_out(g.permute(0, 2, 3, 1).flatten(1)))
        s = F.relu(self.stats(stats))
        mm = F.relu(self.msg_conv(self.msg_embed(message_bytes).transpose(1, 2))).max(2).values
        mm = F.relu(self.msg_out(mm))
        x = F.relu(self.torso(torch.cat([g, s, mm], 1)))
        return core_and_heads(self, x, h0, keep)


def vtrace(behaviour, target, rewards, dones, values, gamma, rho_bar=1.0, c_bar=1.0):
    """Espeholt et al. 2018, eq. 1; [T, B] inputs, values [T+1, B]."""
    ratio = torch.exp(target - behaviour)
    rho, c = ratio.clamp(max=rho_bar), ratio.clamp(max=c_bar)
    disc = gamma * (1.0 - dones)
    vs = torch.zeros_like(rewards)
    nxt_corr = torch.zeros_like(values[0])
    nxt_vs = values[-1]
    adv = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[0])):
        delta = rho[t] * (rewards[t] + disc[t] * values[t + 1] - values[t])
        vs[t] = values[t] + delta + disc[t] * c[t] * nxt_corr
        adv[t] = rho[t] * (rewards[t] + disc[t] * nxt_vs - values[t])
        nxt_corr = vs[t] - values[t]
        nxt_vs = vs[t]
    return vs, adv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("batch_dir")
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--screen", choices=["image", "lookup"], default="image")
    ap.add_argument("--core", choices=["cell", "gru"], default="cell")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = json.load(open(os.path.join(a.batch_dir, "meta.json")))
    dev = torch.device(a.device)
    steps, b = m["rollout_len"], m["batch_rollouts"]
    n_obs = (steps + 1) * b
    crop = m["crop_rows"] * m["crop_cols"]
    cells = torch.from_numpy(load(a.batch_dir, "cells.u16", np.uint16, (n_obs, crop)).astype(np.int64)).to(dev)
    stats = torch.from_numpy(load(a.batch_dir, "stats.f32", np.float32, (n_obs, m["stats_dim"]))).to(dev)
    msg = load(a.batch_dir, "messages.u8", np.uint8, (n_obs, 256))[:, : m["message_bytes"]]
    if m["network"] == "oni":
        msg = torch.from_numpy(msg.astype(np.float32) / 255.0).to(dev)
    else:
        msg = torch.from_numpy(msg.astype(np.int64)).to(dev)
    keep = 1.0 - torch.from_numpy(load(a.batch_dir, "resets.f32", np.float32, (steps + 1, b))).to(dev)
    actions = torch.from_numpy(load(a.batch_dir, "actions.i32", np.int32, (steps * b,)).astype(np.int64)).to(dev)
    behaviour = torch.from_numpy(load(a.batch_dir, "behaviour.f32", np.float32, (steps, b))).to(dev)
    rewards = torch.from_numpy(load(a.batch_dir, "rewards.f32", np.float32, (steps, b))).to(dev)
    dones = torch.from_numpy(load(a.batch_dir, "dones.u8", np.uint8, (steps, b)).astype(np.float32)).to(dev)
    h0 = torch.zeros(b, m["core_hidden"], device=dev)
    if m["network"] == "oni":
        atlas = torch.from_numpy(load(a.batch_dir, "atlas.f32", np.float32, (-1, 3, 6, 6))).to(dev)
        net = OniNet(m, atlas, a.screen).to(dev)
    else:
        if a.screen != "image":
            raise SystemExit("--screen lookup is for ONI's network (policy.network = \"oni\")")
        net = GlyphCropNet(m).to(dev)
    if a.core == "gru":
        # same weights' shapes as the GRUCell; the cell is then unused
        net.gru = nn.GRU(net.core.input_size, net.core.hidden_size).to(dev)
        net.gru.weight_ih_l0.data.copy_(net.core.weight_ih.data)
        net.gru.weight_hh_l0.data.copy_(net.core.weight_hh.data)
        net.gru.bias_ih_l0.data.zero_()
        net.gru.bias_hh_l0.data.zero_()
        del net.core
        net.segments = segments(keep)
    opt = torch.optim.Adam(net.parameters(), lr=m["learning_rate"], eps=m["adam_epsilon"])
    params = sum(p.numel() for p in net.parameters())

    def update():
        logits, values = net(cells, stats, msg, h0, keep)
        n = steps * b
        logp_all = F.log_softmax(logits[:n], 1)
        logp = logp_all.gather(1, actions.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            vs, adv = vtrace(behaviour, logp.view(steps, b), rewards, dones, values.view(steps + 1, b), m["gamma"])
            adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
        ratio = torch.exp(logp - behaviour.flatten())
        adv, vs = adv.flatten(), vs.flatten()
        clip = m["ppo_clip"]
        pg = -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()
        v = 0.5 * (values[:n] - vs).pow(2).mean()
        ent = -(logp_all.exp() * logp_all).sum(1).mean()
        loss = pg + m["value_coef"] * v - m["entropy_coef"] * ent
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), m["max_grad_norm"])
        opt.step()
        return loss

    update()  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.updates):
        loss = update()
    float(loss)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    samples = a.updates * steps * b
    preload = os.environ.get("LD_PRELOAD", "")
    print(json.dumps({
        "bench": "learner", "reference": "torch", "torch": torch.__version__, "device": a.device,
        "threads": torch.get_num_threads(), "batch_rollouts": b, "rollout_len": steps, "updates": a.updates,
        "network": m["network"], "screen": a.screen, "core": a.core, "params": params, "seconds": secs,
        "samples_per_sec": samples / secs, "steps_per_sec": samples / secs,
        "allocator": "jemalloc (LD_PRELOAD)" if "jemalloc" in preload else "glibc malloc",
        "malloc_conf": os.environ.get("MALLOC_CONF", ""),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkldnn": torch.backends.mkldnn.is_available(),
        "numpy": np.__version__,
    }))


if __name__ == "__main__":
    main()
