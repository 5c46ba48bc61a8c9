"""Greedy decoding of a T5 model with a pre-allocated (static) KV cache: the fast path of the torch backends.

``transformers``' ``generate`` pays, at every new token, for its dynamic KV cache (each layer's keys and
values are concatenated into new tensors: ``aten::cat``, 2,008 calls per batch of 40 tokens on flan-T5-large),
for the relative position bias recomputed at every step, for building attention masks and for the
generic machinery of logits processors and stopping criteria. :class:`StaticCacheT5Decoder` runs the same
model's own modules (so fp32, bf16, torch.ao dynamic int8 and torchao Linear layers all work) in a lean loop:

* the encoder runs once (``model.encoder``), and each decoder layer's cross-attention keys and values are
  computed once per batch;
* self-attention keys and values are written in place into per-layer buffers sized for
  ``min(max_new_tokens, 64)`` tokens that grow by doubling when a batch needs more (amortised O(1) per token,
  never the O(n^2) copying of concatenation; ``max_new_tokens=512`` does not reserve memory for 512 tokens);
* the decoder's relative position bias is computed once for all positions and sliced per step;
* each block's q/k/v projections run as one GEMM, and so do the gated feed-forward's wi_0/wi_1
  for torch.ao dynamic int8 weights (:mod:`llmdiet.engines.fused_linear`: exact, no extra memory; ``fuse=False``
  keeps them separate; measured 1.06x at batch 1 on flan-T5-large, ``bench/results/batch-layouts-flan-t5-large.json``;
  float weights stay separate, where one GEMM measured slower);
* greedy selection, ``min_new_tokens`` (EOS masked to -inf) and padding of finished rows are those of
  ``generate``, so the output ids are **the same** as ``model.generate(..., num_beams=1, do_sample=False)``
  (checked by ``tests/test_static_decoding.py`` on the demo models for every torch backend).

The arithmetic is T5's own, step by step (``T5Attention``: no 1/sqrt(d) scaling, bias added to the scores,
softmax in float32, ``type_as`` back); keys are attended over ``[:t+1]`` of the buffer, the same shapes as
``generate`` sees. Models or generation settings it does not cover (not T5, fp16 weights, a generation
config with repetition penalties, forced or suppressed tokens, beam search) are left to ``generate``:
:func:`static_decoding_unsupported` says why.
"""

from __future__ import annotations

import torch

from llmdiet.compat import extended_attention_bias, t5_scales_decoder_output, use_eager_attention

# generation_config attributes whose non-default values change greedy output; the static decoder does not implement them
_UNSUPPORTED_GENERATION = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "force_words_ids": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
    "renormalize_logits": False,
    "min_length": 0,
}


def static_decoding_unsupported(model) -> str | None:
    """Why :class:`StaticCacheT5Decoder` cannot reproduce ``generate`` for ``model`` (None: it can)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in ("t5", "mt5"):
        return f"not a T5 model (model_type {getattr(config, 'model_type', None)!r})"
    if not hasattr(model, "decoder") or not hasattr(model, "lm_head"):
        return "not a T5ForConditionalGeneration"
    if any(p.dtype == torch.float16 for p in model.parameters()):
        return "fp16 weights (T5 clamps fp16 activations in generate; use bf16)"
    generation_config = getattr(model, "generation_config", None)
    for name, default in _UNSUPPORTED_GENERATION.items():
        value = getattr(generation_config, name, default)
        if value not in (default, None) and not (name == "min_length" and value <= 1):
            return f"generation_config.{name}={value!r}"
    return None


class StaticCacheT5Decoder:
    """Greedy decoding of a T5ForConditionalGeneration with a static KV cache; output ids equal ``generate``'s."""

    def __init__(self, model, fuse: bool = True):
        why = static_decoding_unsupported(model)
        if why:
            raise ValueError(f"static-cache decoding does not support this model: {why}")
        self.model = model
        use_eager_attention(model)
        config = model.config
        gen = getattr(model, "generation_config", None)
        self.n_heads, self.d_kv = config.num_heads, config.d_kv
        self.inner = self.n_heads * self.d_kv
        self.tied = t5_scales_decoder_output(config)  # original T5 scales before lm_head; flan-T5 does not
        self.scale = config.d_model**-0.5
        start = getattr(gen, "decoder_start_token_id", None)
        self.start_id = config.decoder_start_token_id if start is None else start
        pad = getattr(gen, "pad_token_id", None)
        self.pad_id = config.pad_token_id if pad is None else pad
        eos = getattr(gen, "eos_token_id", None)
        eos = config.eos_token_id if eos is None else eos
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        self._bias_table: torch.Tensor | None = (
            None  # (1, heads, L, L) decoder self-attention position bias, grown on demand
        )
        # per decoder block: q/k/v as one GEMM and gated wi_0/wi_1 as one GEMM, where exact (fused_linear.py)
        self.fused = [self._fuse_block(block) for block in model.decoder.block] if fuse else []

    @staticmethod
    def _fuse_block(block) -> tuple:
        from llmdiet.artifacts import trim_heap
        from llmdiet.engines.fused_linear import fuse_in_place

        attention, dense = block.layer[0].SelfAttention, block.layer[2].DenseReluDense
        qkv = fuse_in_place(attention, ["q", "k", "v"])
        gated = hasattr(dense, "wi_0") and hasattr(dense, "wi_1")
        wi = fuse_in_place(dense, ["wi_0", "wi_1"]) if gated else None
        if qkv is not None or wi is not None:
            trim_heap(collect=False)  # the separate int8 weights were freed: their pages back (+287 MB RSS if not)
        return qkv, wi

    # ------------------------------------------------------------------ helpers

    def _self_bias(self, length: int, device) -> torch.Tensor:
        """Relative position bias of decoder self-attention for query/key positions < length."""
        if self._bias_table is None or self._bias_table.shape[-1] < length or self._bias_table.device != device:
            size = max(length, 2 * (self._bias_table.shape[-1] if self._bias_table is not None else 32))
            attention = self.model.decoder.block[0].layer[0].SelfAttention
            self._bias_table = attention.compute_bias(size, size, device=device)
        return self._bias_table

    def _heads(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        return x.view(batch, -1, self.n_heads, self.d_kv).transpose(1, 2)

    @staticmethod
    def _grow(buffer: torch.Tensor, capacity: int) -> torch.Tensor:
        # zeros, not empty memory: a ragged row (forward_rows) attends over positions it has not written, with zero
        # weight, and 0 x NaN of uninitialised memory would still be NaN
        grown = buffer.new_zeros((*buffer.shape[:2], capacity, buffer.shape[3]))
        grown[:, :, : buffer.shape[2]] = buffer
        return grown

    def _ensure_capacity(self, state: DecoderState, end: int) -> None:
        """Grow every buffer by doubling (amortised O(1) per token), one layer at a time, to hold ``end`` positions."""
        if end > state.capacity:
            state.capacity = max(end, 2 * state.capacity)
            state.keys = [self._grow(k, state.capacity) for k in state.keys]
            state.values = [self._grow(v, state.capacity) for v in state.values]

    @staticmethod
    def _gated_ff(layer_ff, wi, hidden: torch.Tensor) -> torch.Tensor:
        """T5LayerFF's gated branch (T5DenseGatedActDense, eval mode) with wi_0 and wi_1 as one GEMM."""
        dense = layer_ff.DenseReluDense
        gate, linear = wi(layer_ff.layer_norm(hidden)).chunk(2, dim=-1)
        inner = dense.act(gate) * linear
        weight = getattr(dense.wo, "weight", None)
        if isinstance(weight, torch.Tensor) and inner.dtype != weight.dtype and weight.dtype != torch.int8:
            inner = inner.to(weight.dtype)  # as T5DenseGatedActDense does for a wo kept in another dtype
        return dense.wo(inner)

    @staticmethod
    def _attend(q, keys, values, bias):
        scores = torch.matmul(q, keys.transpose(3, 2))
        scores += bias
        weights = torch.nn.functional.softmax(scores.float(), dim=-1).type_as(scores)
        return torch.matmul(weights, values)

    # ------------------------------------------------------------------ decoding

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, capacity: int) -> DecoderState:
        """Run the encoder and the cross-attention projections once; empty self-attention buffers."""
        model, decoder = self.model, self.model.decoder
        batch, device = input_ids.shape[0], input_ids.device
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        encoded = model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        dtype = encoded.dtype
        # cross-attention: keys/values once per batch, the padding mask as T5's additive bias (zeros + mask)
        inverted = extended_attention_bias(attention_mask, dtype)
        cross_bias = torch.zeros((1, self.n_heads, 1, encoded.shape[1]), dtype=dtype, device=device) + inverted.to(
            dtype
        )
        cross = []
        for block in decoder.block:
            attention = block.layer[1].EncDecAttention
            # contiguous once, not copied by every step's matmul
            cross.append(
                (
                    self._heads(attention.k(encoded), batch).contiguous(),
                    self._heads(attention.v(encoded), batch).contiguous(),
                )
            )
        if device.type == "cpu":
            from llmdiet.artifacts import trim_heap

            # the encoder's freed activations stay in glibc's per-thread arenas otherwise: on flan-T5-large int8 at
            # batch 16 the generation peak drops from +384 MB to +278 MB over the loaded model, at no measured cost
            trim_heap(collect=False)
        return DecoderState(batch, dtype, device, cross, cross_bias, capacity)

    def forward(self, state: DecoderState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` ``(batch, n)`` at decoder positions ``state.length ..``; float32 logits ``(batch, n, V)``.

        Keys and values are written into the buffers at those positions and ``state.length`` advances by n; a
        caller that rejects some of them sets ``state.length`` back (the buffers are overwritten later). With n = 1
        this is one step of greedy decoding; n > 1 (speculative verification) adds T5's causal mask inside the chunk.
        """
        dtype = state.dtype
        n, pos = tokens.shape[1], state.length
        end = pos + n
        self._ensure_capacity(state, end)
        self_bias = self._self_bias(end, state.device)[:, :, pos:end, :end].to(dtype)
        if n > 1:
            causal = torch.ones((n, end), dtype=torch.bool, device=state.device).triu(pos + 1)
            self_bias = self_bias.masked_fill(causal, torch.finfo(dtype).min)
        logits = self._decode(state, tokens, self_bias, None)
        state.length = end
        return logits

    def forward_rows(self, state: DecoderState, tokens: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Like :meth:`forward`, but row ``r``'s ``tokens`` go to its own positions ``starts[r] ..`` (ragged
        batches: batched speculative decoding, where each row has accepted a different number of tokens).

        Every row attends over the buffers up to the longest row's end, its own later positions (stale keys of
        rejected proposals, or nothing yet) masked out, with T5's relative position bias gathered at its own
        positions. Masked positions get zero weight, so each row's numbers are its own up to float rounding (the
        softmax and the weighted sum run over a longer, zero-padded row: summation order). ``state.length``
        becomes the longest row's end (what :meth:`DecoderState.keep` copies)."""
        batch, dtype, device = state.batch, state.dtype, state.device
        n = tokens.shape[1]
        positions = starts.to(device)[:, None] + torch.arange(n, device=device)[None, :]  # (batch, n)
        end = int(positions.max()) + 1
        self._ensure_capacity(state, end)
        table = self._self_bias(end, device)[0, :, :, :end]  # (heads, L, end)
        self_bias = table[:, positions].permute(1, 0, 2, 3).to(dtype)  # (batch, heads, n, end)
        later = torch.arange(end, device=device)[None, None, :] > positions[:, :, None]  # (batch, n, end)
        self_bias = self_bias.masked_fill(later[:, None], torch.finfo(dtype).min)
        rows = torch.arange(batch, device=device)[:, None]
        logits = self._decode(state, tokens, self_bias, (rows, positions, end))
        state.length = max(state.length, end)
        return logits

    def _decode(self, state: DecoderState, tokens: torch.Tensor, self_bias, at: tuple | None) -> torch.Tensor:
        """The decoder blocks and the LM head over ``tokens`` (shared by :meth:`forward` and :meth:`forward_rows`;
        ``at`` as in :meth:`_self_attention`); float32 logits ``(batch, n, V)``."""
        decoder, batch = self.model.decoder, state.batch
        hidden = decoder.embed_tokens(tokens)
        for i, block in enumerate(decoder.block):
            layer_ca, layer_ff = block.layer[1], block.layer[2]
            qkv, wi = self.fused[i] if self.fused else (None, None)
            hidden = hidden + self._self_attention(i, block.layer[0], hidden, state, self_bias, qkv, at=at)
            attention = layer_ca.EncDecAttention
            q = self._heads(attention.q(layer_ca.layer_norm(hidden)), batch)
            context = self._attend(q, state.cross[i][0], state.cross[i][1], state.cross_bias)
            hidden = hidden + attention.o(context.transpose(1, 2).contiguous().view(batch, -1, self.inner))
            hidden = layer_ff(hidden) if wi is None else hidden + self._gated_ff(layer_ff, wi, hidden)
        hidden = decoder.final_layer_norm(hidden)
        if self.tied:
            hidden = hidden * self.scale
        return self.model.lm_head(hidden).to(dtype=torch.float32)

    def _self_attention(
        self, i: int, layer_sa, hidden, state: DecoderState, self_bias, qkv, at: tuple | None = None
    ) -> torch.Tensor:
        """Layer ``i``'s self-attention output for the new positions; their keys and values go into the cache
        (at ``state.length ..``, or at each row's own positions with ``at = (rows, positions, end)``)."""
        batch, n, pos = state.batch, hidden.shape[1], state.length
        end = pos + n if at is None else at[2]
        attention = layer_sa.SelfAttention
        normed = layer_sa.layer_norm(hidden)
        if qkv is not None:
            q, k, v = (self._heads(x, batch) for x in qkv(normed).split(self.inner, dim=-1))
        else:
            q = self._heads(attention.q(normed), batch)
            k = self._heads(attention.k(normed), batch)
            v = self._heads(attention.v(normed), batch)
        if len(state.keys) == i:
            state.keys.append(k.new_zeros((batch, self.n_heads, state.capacity, self.d_kv)))
            state.values.append(v.new_zeros((batch, self.n_heads, state.capacity, self.d_kv)))
        if at is not None:  # (batch, n) positions: advanced indices around the heads' slice put (batch, n) first
            state.keys[i][at[0], :, at[1]] = k.transpose(1, 2)
            state.values[i][at[0], :, at[1]] = v.transpose(1, 2)
        elif n == 1:
            state.keys[i][:, :, pos] = k[:, :, 0]
            state.values[i][:, :, pos] = v[:, :, 0]
        else:
            state.keys[i][:, :, pos:end] = k
            state.values[i][:, :, pos:end] = v
        context = self._attend(q, state.keys[i][:, :, :end], state.values[i][:, :, :end], self_bias)
        return attention.o(context.transpose(1, 2).contiguous().view(batch, -1, self.inner))

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 128,
        min_new_tokens: int = 0,
        on_token=None,
        stopping=None,
        drop_finished: bool = False,
    ) -> torch.Tensor:
        """``(batch, 1 + n)`` ids: the start token then n <= max_new_tokens generated tokens, pad after EOS.

        ``on_token(step)`` is called after each token is chosen (the benchmarks time the first token with it).
        ``stopping(step, rows, tokens)`` may end rows early: ``rows`` are the original batch indices of the rows
        still decoding, ``tokens`` the ids just chosen for them; it returns a bool tensor, True where that row ends
        after this token (per-row stopping criteria; the benchmarks' natural-length workload uses it).
        ``drop_finished=True`` removes finished rows from the batch (their cache rows are dropped once a quarter
        of the rows still decoding has finished), as CTranslate2 does: less work for ragged batches. Float
        weights keep each row's numbers up to GEMM rounding; torch.ao int8 quantizes activations with one scale
        per batch, so a smaller batch changes the others' numbers (off by default: the output equals
        ``generate``'s).
        """
        state = self.start(input_ids, attention_mask, capacity=min(max_new_tokens, 64))
        batch, device = state.batch, state.device
        out = torch.full((batch, max_new_tokens + 1), self.pad_id, dtype=torch.long, device=device)
        out[:, 0] = self.start_id
        tokens = out[:, 0].clone()
        rows = torch.arange(batch, device=device)  # the original row of each row in the state
        unfinished = torch.ones(batch, dtype=torch.bool, device=device)
        eos = torch.tensor(self.eos_ids, device=device) if self.eos_ids else None
        steps = 0
        for step in range(max_new_tokens):
            logits = self.forward(state, tokens[:, None])[:, -1, :]
            if step < min_new_tokens and eos is not None:
                logits[:, eos] = -float("inf")
            tokens = torch.argmax(logits, dim=-1)
            tokens = torch.where(unfinished, tokens, torch.full_like(tokens, self.pad_id))
            out[rows, step + 1] = tokens
            steps = step + 1
            if on_token is not None:
                on_token(step)
            if eos is not None:
                unfinished &= ~torch.isin(tokens, eos)
            if stopping is not None:
                unfinished &= ~stopping(step, rows, tokens).to(device=device, dtype=torch.bool)
            if not bool(unfinished.any()):
                break
            finished = state.batch - int(unfinished.sum())
            if drop_finished and finished >= max(1, state.batch // 4):
                keep = unfinished.nonzero().squeeze(1)
                state.keep(keep)
                rows, tokens, unfinished = rows[keep], tokens[keep], unfinished[keep]
        return out[:, : steps + 1]


class DecoderState:
    """One batch's decoding state: cross-attention keys/values, self-attention buffers, positions cached so far."""

    def __init__(self, batch: int, dtype, device, cross: list, cross_bias: torch.Tensor, capacity: int):
        self.batch, self.dtype, self.device = batch, dtype, device
        self.cross, self.cross_bias = cross, cross_bias
        self.capacity = max(capacity, 1)
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.length = 0  # decoder positions whose keys/values are in the buffers

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices into this state's batch) in every cache: finished rows dropped."""
        self.cross = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.cross]
        self.cross_bias = self.cross_bias.index_select(0, rows) if self.cross_bias.shape[0] > 1 else self.cross_bias
        for buffers in (self.keys, self.values):
            for i, buffer in enumerate(buffers):
                kept = buffer.new_zeros((len(rows), *buffer.shape[1:]))
                kept[:, :, : self.length] = buffer[rows, :, : self.length]  # only the positions written so far
                buffers[i] = kept
        self.batch = len(rows)
