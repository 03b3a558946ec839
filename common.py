"""The post-LayerNorm Transformer block shared by GPT-1, BERT, RoBERTa, ALBERT and ELECTRA.

All five papers use the block of Vaswani et al. (2017) with LayerNorm after each residual sum:
    x = LN(x + Dropout(Attn(x)))
    x = LN(x + Dropout(MLP(x)))
Nothing else lives here: embeddings, heads and objectives are each paper's own.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),  # exact erf GELU: BERT, RoBERTa, ELECTRA, ALBERT v1
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),  # tanh approximation: GPT-1, ALBERT v2
}


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        assert hidden % heads == 0, f"hidden size {hidden} is not a multiple of {heads} heads"
        self.heads = heads
        self.dropout = dropout
        # one matmul for q, k and v; checkpoints with separate matrices are concatenated on load
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x, mask=None, causal=False):
        B, T, H = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, nh, T, hd)
        if q.device.type == "cpu":  # a CPU's fused attention is about twice as fast in fp32 as in bf16
            q, k, v = q.float(), k.float(), v.float()
        # SDPA picks flash / memory-efficient kernels on GPU; dropout only while training, never at evaluation
        with torch.autocast("cpu", enabled=False):  # CPU autocast would cast q, k and v back to bf16
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training
                                               else 0.0, is_causal=causal and mask is None).to(x.dtype)  # (B, nh, T, hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, H))


class MLP(nn.Module):
    def __init__(self, hidden: int, ffn: int, activation: str):
        super().__init__()
        self.fc = nn.Linear(hidden, ffn)
        self.proj = nn.Linear(ffn, hidden)
        self.act = ACTIVATIONS[activation]

    def forward(self, x):
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    """One post-LN layer. `mask` is a boolean attention mask broadcastable to (B, heads, T, T), True = attend."""

    def __init__(self, hidden: int, heads: int, ffn: int, activation: str = "gelu", eps: float = 1e-12,
                 dropout: float = 0.1, attn_dropout: float = 0.1):
        super().__init__()
        self.attn = Attention(hidden, heads, attn_dropout)
        self.ln1 = nn.LayerNorm(hidden, eps=eps)
        self.mlp = MLP(hidden, ffn, activation)
        self.ln2 = nn.LayerNorm(hidden, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None, causal=False):  # (B, T, H) -> (B, T, H)
        x = self.ln1(x + self.drop(self.attn(x, mask, causal)))
        return self.ln2(x + self.drop(self.mlp(x)))


def attention_mask(attention_mask, causal=False):
    """(B, T) padding mask (1 = token, 0 = pad) -> boolean (B, 1, 1, T), or (B, 1, T, T) when causal; None stays None.

    Keys are masked along the last axis: a padded token is never attended to, though it still attends. A causal
    model given no padding mask keeps SDPA's fused `is_causal` kernel.
    """
    if attention_mask is None:
        return None
    keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    if not causal:
        return keys
    T = attention_mask.shape[1]
    # a padded query row may see no key at all; it attends to itself so that softmax stays finite
    eye = torch.eye(T, dtype=torch.bool, device=keys.device)
    return (keys & torch.ones(T, T, dtype=torch.bool, device=keys.device).tril()) | eye  # (B, 1, T, T)
