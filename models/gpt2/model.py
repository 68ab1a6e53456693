"""GPT-2 (Radford et al. 2019) in the nanoGPT layout, with optional gating of the attention output.

Pre-norm transformer blocks: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``; learned position embeddings; the
output head is tied to the token embedding; causal attention through ``F.scaled_dot_product_attention`` (flash
or memory-efficient kernels on GPU); GELU (tanh approximation, as GPT-2) MLP of width 4C; initialisation
N(0, 0.02), with the residual projections scaled by 1/sqrt(2L) (GPT-2 paper, section 2.3).

Gated attention (Qiu et al. 2025, "Gated Attention for Large Language Models", arXiv 2505.06708): a gate
``act(score)`` multiplies either the SDPA output before the output projection (``gate_pos="sdpa"``, their G1,
the best position in the paper) or the values (``"value"``, G2). The score comes from the block's normalised
input ``ln_1(x)`` through a bias-free projection, so Muon can own it (it is a hidden 2-D weight):

- ``headwise``: one score per head, ``C -> H``;
- ``elementwise``: one score per channel, ``C -> C``;
- ``const``: a learned, input-independent score per channel (a parameter of shape ``(C,)``);
- ``none``: no gate and no parameter: the module is exactly the ungated model.

``act`` is ``sigmoid`` or ``ns_sigmoid`` (the non-sparse ``0.5 + 0.5 * sigmoid``, which never closes a head
completely). Gate projections start at N(0, 0.02) like every other weight, and the const gate at 0, so every
gate starts near ``act(0)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.gpt2 import GATE_ACTIVATION_NAMES, GATE_POSITIONS, GATES, RECIPROCAL

GPT2_VOCAB = 50257  # tiktoken's "gpt2" encoding: 50256 BPE merges + <|endoftext|>

# name -> (n_layer, n_head, n_embd, block_size)
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "tiny": (4, 4, 128, 256),
    "small": (8, 8, 512, 512),
    "124m": (12, 12, 768, 1024),
    "medium": (24, 16, 1024, 1024),
}

GATE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "ns_sigmoid": lambda s: 0.5 + 0.5 * torch.sigmoid(s),
}
assert tuple(GATE_ACTIVATIONS) == GATE_ACTIVATION_NAMES


def padded_vocab(vocab: int, multiple: int = 64) -> int:
    """The embedding size: ``vocab`` rounded up to a multiple of 64 (50257 -> 50304), for faster matmuls."""
    return -(-vocab // multiple) * multiple


@dataclass(frozen=True)
class GPT2Config:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = padded_vocab(GPT2_VOCAB)
    dropout: float = 0.0
    bias: bool = True
    attn_gate: str = "none"
    attn_gate_pos: str = "sdpa"
    attn_gate_act: str = "sigmoid"
    reciprocal: str = "none"  # reciprocal attention: none, exact, lowrank
    ra_rank: int = 8  # lowrank: the head dimensions that carry the transposed term
    ra_per_head: bool = False  # one (w_std, w_rec) pair per head, else per layer
    kv_keep: float = 1.0  # KV pruning: each query keeps this share of its visible keys, by attention mass (1: off)
    mlp_ratio: float = 2.0  # the MLP's parameters per attention parameter (GPT-2: 8C² against 4C², 1:2)
    mla_latent: int = 0  # multi-head latent attention: keys and values from a shared latent of this size (0: off)
    rmlp_fraction: float = 0.0  # reciprocal MLP: the share of FC1's units fed the attention output (0: off)

    @property
    def attention_weights(self) -> int:
        """The attention's weights per block: 4·C² (Q, K, V, output), or with MLA 2·C² + 3·C·L (Q, output, the
        latent's down-projection and the keys' and values' up-projections)."""
        c, latent = self.n_embd, self.mla_latent
        return 4 * c * c if not latent else 2 * c * c + 3 * c * latent

    @property
    def mlp_hidden(self) -> int:
        """FC1's width F: the MLP's 2·C·F weights are ``mlp_ratio`` times the attention's
        (:attr:`attention_weights`), rounded to the nearest multiple of 64 (a tie up; at least 64). Ratio 2
        without MLA keeps GPT-2's own 4C (the MLP builds that width itself, whatever C)."""
        exact = self.mlp_ratio * self.attention_weights / (2 * self.n_embd)
        return max(64, math.floor(exact / 64 + 0.5) * 64)  # a tie goes up

    @classmethod
    def preset(cls, name: str, **overrides) -> GPT2Config:
        n_layer, n_head, n_embd, block_size = PRESETS[name]
        return cls(**{"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "block_size": block_size, **overrides})

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}")
        for value, allowed in (
            (self.attn_gate, GATES),
            (self.attn_gate_pos, GATE_POSITIONS),
            (self.attn_gate_act, tuple(GATE_ACTIVATIONS)),
        ):
            if value not in allowed:
                raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        if self.reciprocal not in RECIPROCAL:
            raise ValueError(f"reciprocal={self.reciprocal!r} is not one of {', '.join(RECIPROCAL)}")
        head = self.n_embd // self.n_head
        if self.reciprocal == "lowrank" and not 1 <= self.ra_rank < head:
            raise ValueError(f"ra_rank={self.ra_rank}: a low-rank reciprocal term takes 1 <= r < head dim {head}")
        if self.mla_latent < 0 or (self.mla_latent and self.attn_gate != "none" and self.attn_gate_pos == "value"):
            raise ValueError(
                f"mla_latent={self.mla_latent}: a latent size >= 0, and MLA recomputes past values from the latent, so "
                "it cannot gate the values (attn_gate_pos='value'); gate the SDPA output instead"
            )
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio={self.mlp_ratio}: the MLP's parameters per attention parameter, above 0")
        if not 0.0 < self.kv_keep <= 1.0:
            raise ValueError(f"kv_keep={self.kv_keep}: the share of keys each query keeps, in (0, 1]")
        if not 0.0 <= self.rmlp_fraction <= 1.0:
            raise ValueError(f"rmlp_fraction={self.rmlp_fraction}: a share of FC1's units, in [0, 1]")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.mla_latent = cfg.mla_latent
        if cfg.mla_latent:  # queries alone, keys and values from a latent shared by the heads (the cache holds it)
            self.c_q = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
            self.c_kv_down = nn.Linear(cfg.n_embd, cfg.mla_latent, bias=cfg.bias)
            self.c_k_up = nn.Linear(cfg.mla_latent, cfg.n_embd, bias=cfg.bias)
            self.c_v_up = nn.Linear(cfg.mla_latent, cfg.n_embd, bias=cfg.bias)
        else:
            self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.gate_kind = cfg.attn_gate
        self.gate_pos = cfg.attn_gate_pos
        self.gate_act = GATE_ACTIVATIONS[cfg.attn_gate_act]
        if cfg.attn_gate == "headwise":
            self.gate = nn.Linear(cfg.n_embd, cfg.n_head, bias=False)
        elif cfg.attn_gate == "elementwise":
            self.gate = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        elif cfg.attn_gate == "const":
            self.gate_score = nn.Parameter(torch.zeros(cfg.n_embd))
        self.reciprocal = cfg.reciprocal
        self.kv_keep = cfg.kv_keep
        if cfg.reciprocal != "none":
            head = cfg.n_embd // cfg.n_head
            self.ra_rank = head if cfg.reciprocal == "exact" else cfg.ra_rank
            shape = (cfg.n_head,) if cfg.ra_per_head else (1,)
            # w_std = 1, w_rec = 0: the block starts as standard attention; the logits are linear in w_rec, so
            # its gradient there is the attention's sensitivity to Sᵀ, not zero (no square or sqrt around it)
            self.ra_std = nn.Parameter(torch.ones(shape))
            self.ra_rec = nn.Parameter(torch.zeros(shape))

    def _gate(self, x: torch.Tensor) -> torch.Tensor:
        """The gate in (B, nh, T, hs)-broadcastable form, from the normalised block input x (B, T, C)."""
        b, t, c = x.shape
        if self.gate_kind == "const":
            return self.gate_act(self.gate_score).view(1, self.n_head, 1, c // self.n_head)
        score = self.gate(x)  # (B, T, nh) or (B, T, C)
        if self.gate_kind == "headwise":
            return self.gate_act(score).transpose(1, 2).unsqueeze(-1)  # (B, nh, T, 1)
        return self.gate_act(score).view(b, t, self.n_head, -1).transpose(1, 2)  # (B, nh, T, hs)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Causal attention of the new tokens' (B, nh, T, hs) q, k, v, after the ``cache``'s earlier tokens (their
        keys, values and, for reciprocal attention, the first r dimensions of their queries; the cache is
        extended in place). Reciprocal: logits ``(w_std·QKᵀ + w_rec·K_r Q_rᵀ) / √hs`` (``r = hs`` exact,
        ``ra_rank`` low-rank: the first r head dimensions), folded into one SDPA call over ``hs + r`` dimensions,
        ``[w_std·Q, w_rec·K_r] · [K, Q_r]ᵀ``, with the causal mask on the mixed logits (entry (i, j), j <= i,
        reads q_j and k_i: nothing after i)."""
        dropout = self.dropout if self.training else 0.0
        reciprocal = self.reciprocal != "none"
        r = self.ra_rank if reciprocal else 0
        # KV compression (kernels.kv_compress, inference): the cache holds PCA codes, attention their reconstruction
        basis = getattr(self, "kv_basis", None) or {}
        k_code, v_code = (basis[n].encode(z) if n in basis else z for n, z in (("k", k), ("v", v)))
        if "k" in basis:
            k = basis["k"].decode(k_code)  # the new keys as the cache will give them back (the reciprocal fold too)
        keys, values, queries = k_code, v_code, q[..., :r]  # over every position so far, as cached
        past = 0
        mass = None  # KV pruning: the attention mass each earlier key has received (B, nh, past)
        if cache is not None:
            past = layer_tokens(cache)
            if past:
                keys, values = torch.cat([cache["k"], keys], dim=2), torch.cat([cache["v"], values], dim=2)
                if reciprocal:
                    queries = torch.cat([cache["q"], queries], dim=2)
                mass = cache.get("mass")
            cache.update(k=keys, v=values, **({"q": queries} if reciprocal else {}))
        keys, values = (basis[n].decode(z) if n in basis else z for n, z in (("k", keys), ("v", values)))
        t = q.shape[2]
        # the new token i (at position past + i) sees positions <= past + i: a plain causal mask without a past,
        # none for one new token, an offset one otherwise
        mask = None
        if past and t > 1:
            mask = torch.ones(t, past + t, dtype=torch.bool, device=q.device).tril(diagonal=past)
        causal = past == 0 and t > 1
        scale = None  # SDPA's own 1/√hs
        if reciprocal:
            scale = 1.0 / math.sqrt(q.shape[-1])  # the head's, not the folded dimension's
            w_std, w_rec = self.ra_std.view(1, -1, 1, 1), self.ra_rec.view(1, -1, 1, 1)
            q = torch.cat([w_std * q, w_rec * k[..., :r]], dim=-1)
            keys = torch.cat([keys, queries], dim=-1)
        if self.kv_keep < 1.0:
            y, mass = self._kv_pruned(q, keys, values, past, mass, scale)
            if cache is not None:
                cache["mass"] = mass
            return y
        return F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, dropout_p=dropout, is_causal=causal, scale=scale
        )

    def _kv_pruned(
        self,
        q: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        past: int,
        mass: torch.Tensor | None,
        scale: float | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """KV pruning by accumulated attention mass (heavy hitters), causal at every step: new query i (position
        p = past + i) first attends causally to every key (softmax P); A[i, j] = the mass key j has received from
        the queries at positions <= p (the cached ``mass`` plus this call's rows of P up to i); the query keeps the
        ceil(kv_keep · (p + 1)) keys of largest A[i] among positions <= p, always its own, and attends again
        over those only, with the causal mask (the published second softmax lacked it). Returns the output and
        the keys' mass after the last query, for the cache. Materialises (B, nh, T, T): a quality simulation."""
        t, total = q.shape[2], keys.shape[2]
        logits = (q @ keys.transpose(-1, -2)) * (scale or 1.0 / math.sqrt(q.shape[-1]))
        pos = torch.arange(past, past + t, device=q.device)
        visible = torch.arange(total, device=q.device)[None, :] <= pos[:, None]  # (t, total)
        logits = logits.masked_fill(~visible, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        accumulated = probs.cumsum(dim=-2)  # (B, nh, t, total): mass from this call's queries up to each row
        if mass is not None:
            accumulated = accumulated + F.pad(mass, (0, total - mass.shape[-1]))[:, :, None, :]
        # ceil(share · (p + 1)) in float64, forgiving the share's own rounding (0.4 · 5 is 2, not 2.0000000000000004)
        quota = torch.ceil(self.kv_keep * (pos + 1).double() - 1e-9).long()  # (t,)
        ranked = accumulated.masked_fill(~visible, -1.0)
        own = F.one_hot(pos, total).bool()  # each query keeps its own key
        ranked = ranked.masked_fill(own, float("inf"))
        rank = ranked.argsort(dim=-1, descending=True).argsort(dim=-1)  # 0 = most mass
        keep = (rank < quota[:, None]) & visible
        kept = torch.softmax(logits.masked_fill(~keep, float("-inf")), dim=-1)
        kept = F.dropout(kept, self.dropout, self.training)
        return kept @ values, accumulated[:, :, -1, :]

    def _heads(self, z: torch.Tensor) -> torch.Tensor:
        b, t, c = z.shape
        return z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

    def _attend_latent(self, x: torch.Tensor, cache: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """MLA: queries from x, keys and values up-projected from the latent ``c_kv_down(x)`` of every position so
        far. The cache holds the latent (L numbers per token for all heads), not keys and values; attention
        itself (reciprocal, KV pruning) is :meth:`_attend`'s, on a cache of the past keys and values rebuilt from
        it."""
        q = self._heads(self.c_q(x))
        latent = self.c_kv_down(x)  # (B, T, L)
        if cache is None:
            return self._attend(q, self._heads(self.c_k_up(latent)), self._heads(self.c_v_up(latent)))
        past = layer_tokens(cache)
        if past:
            latent = torch.cat([cache["latent"], latent], dim=1)
        cache["latent"] = latent
        k, v = self._heads(self.c_k_up(latent)), self._heads(self.c_v_up(latent))
        inner = {name: cache[name] for name in ("q", "mass") if name in cache}
        if past:
            inner.update(k=k[:, :, :past], v=v[:, :, :past])
        y = self._attend(q, k[:, :, past:], v[:, :, past:], inner)
        cache.update({name: inner[name] for name in ("q", "mass") if name in inner})
        return y

    def forward(self, x: torch.Tensor, cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        b, t, c = x.shape
        gate = None if self.gate_kind == "none" else self._gate(x)
        if self.mla_latent:
            y = self._attend_latent(x, cache)
        else:
            q, k, v = (self._heads(z) for z in self.c_attn(x).split(c, dim=2))  # (B, nh, T, hs)
            if gate is not None and self.gate_pos == "value":
                v = v * gate
            y = self._attend(q, k, v, cache)  # (B, nh, T, hs)
        if gate is not None and self.gate_pos == "sdpa":
            y = y * gate
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """GELU MLP, C -> F -> C (F = 4C, or the width of ``mlp_ratio``: :attr:`GPT2Config.mlp_hidden`).
    Reciprocal (``rmlp_fraction`` > 0): the last ``s`` of FC1's units read ``x + α·(g ⊙ a)`` instead of ``x``,
    where ``a`` is the block's attention output, ``α`` a learned scalar (starts at 0) and ``g`` a learned
    per-channel gate (starts at 1). It is computed as FC1's pre-activations plus ``W_s (α·g ⊙ a)`` on those
    units, so at α = 0 the MLP is the standard one exactly."""

    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        hidden = 4 * cfg.n_embd if (cfg.mlp_ratio, cfg.mla_latent) == (2.0, 0) else cfg.mlp_hidden  # GPT-2's own
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)
        self.rmlp_units = round(cfg.rmlp_fraction * hidden)
        if self.rmlp_units:
            self.rmlp_alpha = nn.Parameter(torch.zeros(1))
            self.rmlp_gate = nn.Parameter(torch.ones(cfg.n_embd))

    def forward(self, x: torch.Tensor, attn_out: torch.Tensor | None = None) -> torch.Tensor:
        h = self.c_fc(x)
        if self.rmlp_units and attn_out is not None:
            s = self.rmlp_units
            weight = self.c_fc.weight[-s:]
            mask = getattr(self.c_fc, "weight_mask", None)  # a pruned FC1: its kept weights only
            if mask is not None:
                weight = weight * mask[-s:]
            extra = F.linear(self.rmlp_alpha * self.rmlp_gate * attn_out, weight)  # (B, T, s)
            h = torch.cat([h[..., :-s], h[..., -s:] + extra], dim=-1)
        return self.dropout(self.c_proj(F.gelu(h, approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        a = self.attn(self.ln_1(x), cache)
        x = x + a
        return x + self.mlp(self.ln_2(x), a if self.mlp.rmlp_units else None)


class GPT2(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(cfg.vocab_size, cfg.n_embd),
                "wpe": nn.Embedding(cfg.block_size, cfg.n_embd),
                "drop": nn.Dropout(cfg.dropout),
                "h": nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                "ln_f": nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
            }
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: one tensor, two roles
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, each tied tensor once; ``non_embedding`` leaves out the position embedding (nanoGPT's
        convention: the token embedding counts, as it is also the head)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor, cache: list[dict[str, torch.Tensor]] | None = None) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, vocab_size). ``cache`` (:meth:`new_cache`, for decoding): the
        per-layer keys and values of the tokens before ``idx``, which continue them; extended in place."""
        b, t = idx.shape
        start = cached_tokens(cache)
        if start + t > self.config.block_size:
            raise ValueError(f"sequence of {start + t} tokens is longer than block_size {self.config.block_size}")
        pos = torch.arange(start, start + t, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, None if cache is None else cache[i])
        return self.lm_head(self.transformer.ln_f(x))

    def new_cache(self) -> list[dict[str, torch.Tensor]]:
        """An empty key/value cache, one dict per block (keys, values and, for reciprocal attention, the first r
        query dimensions, each (B, nh, T, ·)), for :meth:`forward`."""
        return [{} for _ in self.transformer.h]

    def mlp_layers(self) -> list[tuple[nn.Linear, nn.Linear]]:
        """(FC1, FC2) of every block, for banded pruning (the QKV projection is C -> 3C but no MLP)."""
        return [(block.mlp.c_fc, block.mlp.c_proj) for block in self.transformer.h]

    def module_roles(self) -> dict[str, str | tuple[tuple[str, int], ...]]:
        """The role of each Linear of the blocks, by module name, for structure-aware pruning (AdamWPrune
        bitter8/9): "attention" for the QKV and output projections and the gate, "mlp" for FC1 and FC2. With
        the reciprocal MLP, FC1's last ``s`` rows also read the attention output (``W_s (α·g ⊙ a)``): they
        are the weights that couple attention and MLP, so FC1 is "mlp" for its first rows and "coupling" for
        those ``s``. The head, tied to the embedding, has no role."""
        kinds = {CausalSelfAttention: "attention", MLP: "mlp"}
        roles: dict[str, str | tuple[tuple[str, int], ...]] = {
            f"{name}.{child}": kinds[type(module)]
            for name, module in self.named_modules()
            if type(module) in kinds
            for child, linear in module.named_children()
            if isinstance(linear, nn.Linear)
        }
        for name, module in self.named_modules():
            if isinstance(module, MLP) and module.rmlp_units:
                rows = module.c_fc.out_features
                roles[f"{name}.c_fc"] = (("mlp", rows - module.rmlp_units), ("coupling", module.rmlp_units))
        return roles

    def flops_per_token(self) -> int:
        """Training FLOPs per token, forward + backward: 6N for the weights plus 6·L·C·T for the attention
        scores and 6·L·C·T for the values (PaLM appendix B; N without the position embedding). Reciprocal
        attention scores over C + H·r dimensions (the folded operands); the reciprocal MLP multiplies its
        attention term by its s units of FC1 once more (6·C·s per layer)."""
        c = self.config
        head = c.n_embd // c.n_head
        rank = {"none": 0, "exact": head, "lowrank": c.ra_rank}[c.reciprocal]
        scores = 6 * c.n_layer * (c.n_embd + c.n_head * rank) * c.block_size
        values = 6 * c.n_layer * c.n_embd * c.block_size
        rmlp = 6 * c.n_layer * c.n_embd * self.transformer.h[0].mlp.rmlp_units
        return 6 * self.num_params(non_embedding=True) + scores + values + rmlp

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Append ``new_tokens`` sampled tokens to ``idx`` (B, T). ``temperature`` 0 is greedy; ``top_k``
        keeps the k likeliest tokens; ``generator`` makes sampling reproducible. ``use_cache``: each new token
        runs alone against the cached keys and values of the ones before it (one row per sequence through every
        Linear, the case of the activation-sparse GEMV); when the context is full, the cache is rebuilt from the
        last ``block_size`` tokens. Without it, every step runs the whole context again."""
        cache = None
        block = self.config.block_size
        for _ in range(new_tokens):
            if not use_cache:
                logits = self(idx[:, -block:])
            elif cache is None or cached_tokens(cache) >= block:  # the first step, or a full context: it slides
                cache = self.new_cache()  # (positions are absolute: every token of the window is run again)
                logits = self(idx[:, -block:], cache)
            else:
                logits = self(idx[:, -1:], cache)
            logits = logits[:, -1, :].float()  # (B, vocab)
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(idx.device)
            idx = torch.cat([idx, nxt], dim=1)
        return idx


def layer_tokens(layer: dict[str, torch.Tensor]) -> int:
    """The tokens one layer's cache holds: its keys (B, nh, T, ·), or with MLA its latent (B, T, L); 0 when empty."""
    if "latent" in layer:
        return layer["latent"].shape[1]
    return layer["k"].shape[2] if "k" in layer else 0


def cached_tokens(cache: list[dict[str, torch.Tensor]] | None) -> int:
    """The tokens a :meth:`GPT2.new_cache` cache holds (every layer holds as many)."""
    return layer_tokens(cache[0]) if cache else 0


@torch.no_grad()
def causal_leak(model: GPT2, length: int | None = None, position: int | None = None, seed: int = 0) -> float:
    """The largest change of the logits at positions ``0..position`` when every token after ``position`` changes:
    exactly 0 for a causal model (the attention's masked entries weigh exactly 0). Two sequences of ``length``
    tokens (default: the context) that agree up to ``position`` (default: the middle), in eval mode."""
    length = length or model.config.block_size
    position = length // 2 if position is None else position
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    a = torch.randint(model.config.vocab_size, (1, length), generator=gen)
    b = a.clone()
    b[0, position + 1 :] = torch.randint(model.config.vocab_size, (length - position - 1,), generator=gen)
    was_training = model.training
    model.eval()
    try:
        logits = model(torch.cat([a, b]).to(device))[:, : position + 1]
    finally:
        model.train(was_training)
    return float((logits[0] - logits[1]).abs().max())
