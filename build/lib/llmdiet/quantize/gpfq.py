"""Low-bit weight quantization of ``nn.Linear`` layers: round-to-nearest (RTN) and GPFQ.

GPFQ (greedy path-following quantization; Lybrand & Saab 2021, Zhang & Saab 2023) quantizes the
input columns of a layer one at a time, choosing each column's codes so that the running
error ``W X - Q X~`` stays small, where ``X`` are the layer's inputs in the float network and
``X~`` its inputs in the network whose earlier layers are already quantized. Unlike GPTQ it
needs no matrix inverse.

Alphabet (both methods, one per layer): ``K = 2^(b-1) - 1`` levels each side of 0, step
``delta = C * rad / K`` with ``rad`` = the mean over output rows of ``max |w|``. ``2K + 1``
levels fit in b bits. Codes are integers in ``[-K, K]``; the dequantized weight is ``codes * delta``.

Two equivalent forms of GPFQ (identical codes; tested):
* path form: ``U += W[:, t] x X[:, t]``; ``q_t = Q(U X~[:, t] / |X~[:, t]|^2)``; ``U -= q_t x X~[:, t]``;
  memory O(N_out * tokens);
* covariance form with ``H = X~^T X~``, ``G = X~^T X``:
  ``q_t = Q((W[:, :t+1] G[t, :t+1] - Qw[:, :t] H[t, :t]) / H[t, t])``; memory O(d_in^2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Alphabet:
    bits: int
    levels: int  # K: codes are integers in [-K, K]
    delta: float

    def round(self, values: torch.Tensor) -> torch.Tensor:
        """Integer codes of the nearest alphabet elements."""
        return torch.clamp(torch.round(values / self.delta), -self.levels, self.levels)


def make_alphabet(weight: torch.Tensor, bits: int, scale: float = 1.16) -> Alphabet:
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in [2, 16], got {bits}")
    levels = 2 ** (bits - 1) - 1
    rad = weight.abs().max(dim=1).values.mean().item()
    delta = scale * rad / levels if rad > 0 else 1.0
    return Alphabet(bits, levels, delta)


def rtn_quantize(weight: torch.Tensor, alphabet: Alphabet) -> torch.Tensor:
    """Round-to-nearest codes (int) of ``weight`` on ``alphabet``."""
    return alphabet.round(weight.double()).to(torch.int32)


def gpfq_quantize_path(
    weight: torch.Tensor, x: torch.Tensor, x_tilde: torch.Tensor, alphabet: Alphabet
) -> torch.Tensor:
    """GPFQ codes, path form. ``weight`` (N_out, d); ``x``, ``x_tilde`` (tokens, d)."""
    W, X, Xt = weight.double(), x.double(), x_tilde.double()
    U = torch.zeros(W.shape[0], X.shape[0], dtype=torch.float64)
    codes = torch.zeros(W.shape, dtype=torch.int32)
    for t in range(W.shape[1]):
        U += torch.outer(W[:, t], X[:, t])
        norm = Xt[:, t].dot(Xt[:, t])
        if norm > 0:
            codes[:, t] = alphabet.round(U @ Xt[:, t] / norm).to(torch.int32)
        U -= torch.outer(codes[:, t].double() * alphabet.delta, Xt[:, t])
    return codes


def gpfq_quantize(weight: torch.Tensor, x: torch.Tensor, x_tilde: torch.Tensor, alphabet: Alphabet) -> torch.Tensor:
    """GPFQ codes, covariance form (the one used on models: memory independent of token count)."""
    W, X, Xt = weight.double(), x.double(), x_tilde.double()
    H, G = Xt.T @ Xt, Xt.T @ X
    return gpfq_from_covariances(W, H, G, alphabet)


def gpfq_from_covariances(W: torch.Tensor, H: torch.Tensor, G: torch.Tensor, alphabet: Alphabet) -> torch.Tensor:
    Qw = torch.zeros_like(W)
    codes = torch.zeros(W.shape, dtype=torch.int32)
    for t in range(W.shape[1]):
        if H[t, t] <= 0:
            continue  # this input is always zero on the calibration data: code 0
        target = (W[:, : t + 1] @ G[t, : t + 1] - Qw[:, :t] @ H[t, :t]) / H[t, t]
        codes[:, t] = alphabet.round(target).to(torch.int32)
        Qw[:, t] = codes[:, t].double() * alphabet.delta
    return codes


def layer_error(
    weight: torch.Tensor, codes: torch.Tensor, alphabet: Alphabet, x: torch.Tensor, x_tilde: torch.Tensor
) -> float:
    """Relative output error ``|W X^T - Q X~^T|_F / |W X^T|_F``."""
    ref = x.double() @ weight.double().T
    out = x_tilde.double() @ (codes.double() * alphabet.delta).T
    return ((ref - out).norm() / ref.norm().clamp(min=1e-12)).item()


def packed_bytes(num_weights: int, bits: int, num_scales: int = 1) -> int:
    """Storage of ``num_weights`` b-bit codes packed densely plus one float32 step per layer."""
    return (num_weights * bits + 7) // 8 + 4 * num_scales
