"""Speculative greedy decoding: a small draft model (the distilled student) proposes tokens, the teacher verifies
them in one forward pass, and the output is the teacher's own greedy output.

Each round the draft decodes ``k`` tokens greedily through its own static KV cache; the teacher then runs the last
accepted token and the ``k`` proposals as one chunk through its static cache (:meth:`StaticCacheT5Decoder.forward`)
and takes its argmax at every position. The proposals it agrees with are kept, plus the teacher's own token at the
first disagreement (or after the last proposal), so every round adds 1 to k+1 tokens for one teacher forward. Both
caches are rolled back by setting their length (rejected positions are overwritten). ``k`` adapts as in
transformers' assisted generation (+2 after a round where every proposal was accepted, -1 otherwise, 1..k_max).

Batches are **ragged** (``ragged=True``, the default): every row keeps its own accepted run, at its own cache
positions in both models (:meth:`StaticCacheT5Decoder.forward_rows`: per-row positions, position bias and causal
masks in the static cache, as batched speculative decoders do), and finished rows leave the batch once a quarter of
it is done. ``ragged=False`` decodes a batch in lockstep, each round keeping the proposals every unfinished row
agrees with (the minimum): on the demo pair at batch 32 that advanced 0.62 tokens per row-forward, more teacher
work than plain decoding (issue 33). ``min_new_tokens`` masks EOS at the same generated positions as ``generate``.
What equals the teacher's greedy output:

* float32 and bfloat16 teachers compute a chunk's positions with the same arithmetic as single steps (the chunk
  only changes GEMM shapes, i.e. summation order; a ragged row also attends over zero-weighted padding positions:
  identical ids on the demo pair and on real shapes, ``tests/test_speculative.py``; a near-tie could in principle
  flip);
* torch.ao dynamic int8 with per-row activation scales (the default, :mod:`llmdiet.quantize.per_row_int8`): each
  row's int8 codes are its own, so verification equals single steps in the same sense (200/200 demo sentences at
  batch 1 and at batch 16, ``tests/test_per_row_int8.py``); with per-batch scales a verification chunk of k+1 rows
  gets other scales than a single step, and outputs can differ (agreement is measured and reported, never assumed).

The acceptance rate (accepted / proposed draft tokens) and the tokens generated per row and teacher forward are kept in
:attr:`SpeculativeDecoder.stats` and recorded per eval set in results.json.
"""

from __future__ import annotations

import torch

from llmdiet.engines.t5_static_decoding import StaticCacheT5Decoder


class SpeculativeDecoder:
    """Greedy decoding of ``teacher`` with ``draft`` proposals; same ids as ``teacher.generate``."""

    def __init__(
        self,
        teacher: StaticCacheT5Decoder,
        draft: StaticCacheT5Decoder,
        lookahead: int = 4,
        max_lookahead: int = 10,
        ragged: bool = True,
    ):
        if not 1 <= lookahead <= max_lookahead:
            raise ValueError(f"lookahead must be in [1, {max_lookahead}] (got {lookahead})")
        t_vocab, d_vocab = teacher.model.lm_head.out_features, draft.model.lm_head.out_features
        if t_vocab != d_vocab:
            raise ValueError(f"the draft's vocabulary ({d_vocab}) differs from the teacher's ({t_vocab})")
        if (draft.start_id, draft.eos_ids) != (teacher.start_id, teacher.eos_ids):
            raise ValueError("the draft's decoder start / EOS tokens differ from the teacher's")
        self.teacher, self.draft = teacher, draft
        self.lookahead, self.max_lookahead = lookahead, max_lookahead
        self.ragged = ragged  # batches: each row advances by its own accepted run (False: lockstep, the minimum)
        self.oracle = None  # benchmarks: the default ``oracle`` of :meth:`generate`
        self.accept = None  # benchmarks: the default ``accept`` of :meth:`generate`
        # teacher_forwards: verification passes; row_forwards: the same times the rows in the batch
        self.stats = {
            "proposed": 0,
            "accepted": 0,
            "teacher_forwards": 0,
            "row_forwards": 0,
            "generated": 0,
            "sequences": 0,
        }

    def reset_stats(self) -> dict:
        stats, self.stats = self.stats, dict.fromkeys(self.stats, 0)
        return stats

    @staticmethod
    def summarize(stats: dict) -> dict:
        """Acceptance rate and tokens per teacher forward from raw counts (None where nothing was proposed)."""
        return {
            **stats,
            "acceptance_rate": round(stats["accepted"] / stats["proposed"], 4) if stats["proposed"] else None,
            # per row: a batch's finished rows are still computed and count (at most k + 1; below 1 is possible)
            "tokens_per_teacher_forward": round(stats["generated"] / stats["row_forwards"], 3)
            if stats["row_forwards"]
            else None,
        }

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 128,
        min_new_tokens: int = 0,
        on_token=None,
        oracle=None,
        accept=None,
    ) -> torch.Tensor:
        """``(batch, 1 + n)`` ids as :meth:`StaticCacheT5Decoder.generate` returns them.

        Benchmarks only: ``oracle(proposal, index)`` may replace each draft proposal for generated position
        ``index`` before it is fed back to the draft and verified (the draft's compute is real, its agreement set:
        exact for teachers whose verification equals single steps). ``accept(k, batch)`` instead decides how many
        leading proposals of each row count as accepted (a ``(batch,)`` tensor): every forward pass runs as usual,
        only the acceptance is set, so the cost of decoding at that acceptance is measured whatever the weights
        (the output is then not the teacher's).
        """
        teacher, draft = self.teacher, self.draft
        oracle = oracle if oracle is not None else self.oracle
        accept = accept if accept is not None else self.accept
        if self.ragged and input_ids.shape[0] > 1 and oracle is None:
            return self._generate_ragged(input_ids, attention_mask, max_new_tokens, min_new_tokens, on_token, accept)
        capacity = min(max_new_tokens, 64) + self.max_lookahead + 1
        t_state = teacher.start(input_ids, attention_mask, capacity)
        d_state = draft.start(input_ids, attention_mask, capacity)
        batch, device = t_state.batch, t_state.device
        eos = torch.tensor(teacher.eos_ids, device=device) if teacher.eos_ids else None
        seq = torch.full((batch, 1), teacher.start_id, dtype=torch.long, device=device)
        unfinished = torch.ones(batch, dtype=torch.bool, device=device)
        k = self.lookahead
        while seq.shape[1] - 1 < max_new_tokens and bool(unfinished.any()):
            generated = seq.shape[1] - 1
            k_round = min(k, max_new_tokens - generated - 1)  # a round adds up to k+1 tokens
            banned = max(0, min_new_tokens - generated)  # leading positions where EOS is not allowed yet
            proposals = self._propose(d_state, seq, k_round, eos, banned, oracle, generated)
            chunk = torch.cat([seq[:, -1:], *(p[:, None] for p in proposals)], dim=1)  # (batch, k_round + 1)
            logits = teacher.forward(t_state, chunk)
            self.stats["teacher_forwards"] += 1
            self.stats["row_forwards"] += batch
            if eos is not None and banned:
                logits[:, : min(k_round + 1, banned), eos] = -float("inf")
            chosen = torch.argmax(logits, dim=-1)  # the teacher's greedy token at each chunk position
            accepted = self._accepted(chosen, proposals, k_round, unfinished, eos, accept, batch)
            self.stats["proposed"] += k_round
            self.stats["accepted"] += accepted
            # the accepted proposals (equal to the teacher's) + the teacher's next token
            seq = self._append(seq, chosen[:, : accepted + 1], unfinished, eos, on_token)
            t_state.length = seq.shape[1] - 1  # the last token is fed in the next round
            d_state.length = min(d_state.length, seq.shape[1] - 1)
            k = min(self.max_lookahead, k + 2) if k_round and accepted == k_round else max(1, k - 1)
        self.stats["generated"] += int((seq[:, 1:] != teacher.pad_id).sum()) if batch else 0
        self.stats["sequences"] += batch
        return seq

    def _generate_ragged(self, input_ids, attention_mask, max_new_tokens, min_new_tokens, on_token, accept):
        """Batches: every row keeps its own accepted run (its own cache positions in both models,
        :meth:`StaticCacheT5Decoder.forward_rows`); finished rows leave the batch once a quarter of it is done.

        Position ``p`` of a row holds ``out[row, p]`` (0: the start token). The teacher has cached positions
        ``< count`` (its newest token, at ``count``, is fed with the next proposals); the draft has the right
        keys and values for positions ``< drafted`` and re-feeds from there (1 or 2 tokens) before proposing."""
        teacher, draft = self.teacher, self.draft
        capacity = min(max_new_tokens, 64) + self.max_lookahead + 2
        t_state = teacher.start(input_ids, attention_mask, capacity)
        d_state = draft.start(input_ids, attention_mask, capacity)
        batch, device = t_state.batch, t_state.device
        eos = torch.tensor(teacher.eos_ids, device=device) if teacher.eos_ids else None
        out = torch.full((batch, max_new_tokens + 1), teacher.pad_id, dtype=torch.long, device=device)
        out[:, 0] = teacher.start_id
        lengths = torch.zeros(batch, dtype=torch.long, device=device)  # tokens generated, per original row
        rows = torch.arange(batch, device=device)  # the original row of each row still in the states
        count = torch.zeros(batch, dtype=torch.long, device=device)
        drafted = torch.zeros(batch, dtype=torch.long, device=device)
        active = torch.ones(batch, dtype=torch.bool, device=device)  # rows still decoding (others ride along)
        reported, k = 0, min(self.lookahead, max(1, self.max_lookahead // batch))
        while bool(active.any()):
            k_round = min(k, int((max_new_tokens - count)[active].max()) - 1)
            proposals = self._propose_rows(d_state, out, rows, count, drafted, k_round, min_new_tokens, eos)
            chunk = torch.cat([out[rows, count][:, None], *(p[:, None] for p in proposals)], dim=1)
            logits = teacher.forward_rows(t_state, chunk, count)
            self._ban_eos(logits, count, min_new_tokens, eos)
            chosen = torch.argmax(logits, dim=-1)  # the teacher's greedy token at each chunk position
            agree = self._row_agreement(chosen, proposals, active, accept)
            before = count
            count = self._take_rows(out, rows, count, active, chosen, agree, max_new_tokens, eos)
            lengths[rows] = count
            if k_round:  # the draft's fed proposals (all but its last) still hold where they were accepted
                drafted = torch.minimum(before + 1 + agree.clamp(max=k_round - 1), count)
            if on_token is not None:
                for step in range(reported, int(count.max())):
                    on_token(step)
                reported = max(reported, int(count.max()))
            k = self._next_lookahead(k, k_round, agree, active)
            done = len(rows) - int(active.sum())
            if bool(active.any()) and done >= max(1, len(rows) // 4):  # drop finished rows from both caches
                keep = active.nonzero().squeeze(1)
                t_state.keep(keep)
                d_state.keep(keep)
                rows, count, drafted, active = rows[keep], count[keep], drafted[keep], active[keep]
        self.stats["generated"] += int(lengths.sum())
        self.stats["sequences"] += batch
        return out[:, : 1 + int(lengths.max())] if batch else out[:, :1]

    def _next_lookahead(self, k: int, k_round: int, agree, active) -> int:
        """transformers' rule (+2 after a fully accepted round, -1 otherwise) by the majority of the rows, capped by
        the batch: a chunk of k+1 positions per row costs about k+1 single steps once the GEMMs are compute-bound
        (flan-T5-large int8 at batch 16 in the quick run's rounds, bench/results/2026-12-07-quick-cpu.json, the
        draft did not pay even so)."""
        full = int((agree == k_round).sum()) if k_round else 0
        k = min(self.max_lookahead, k + 2) if 2 * full > len(agree) else max(1, k - 1)
        return min(k, max(1, self.max_lookahead // max(1, int(active.sum()))))

    def _row_agreement(self, chosen, proposals: list, active, accept) -> torch.Tensor:
        """Each row's count of leading proposals equal to the teacher's tokens (or what ``accept`` sets); counts the
        verification pass in :attr:`stats`."""
        self.stats["teacher_forwards"] += 1
        self.stats["row_forwards"] += chosen.shape[0]
        k_round = len(proposals)
        if not k_round:
            return torch.zeros(chosen.shape[0], dtype=torch.long, device=chosen.device)
        agree = (chosen[:, :k_round] == torch.stack(proposals, dim=1)).long().cumprod(dim=1).sum(dim=1)
        if accept is not None:
            agree = accept(k_round, chosen.shape[0]).to(chosen.device)
        self.stats["proposed"] += k_round * int(active.sum())
        self.stats["accepted"] += int(agree[active].sum())
        return agree

    def _propose_rows(self, d_state, out, rows, count, drafted, k_round: int, min_new_tokens: int, eos) -> list:
        """The draft re-feeds each row from its first stale position up to the row's newest token, then proposes
        ``k_round`` tokens greedily, every row at its own positions."""
        proposals: list[torch.Tensor] = []
        if not k_round:
            return proposals
        catch_up = int((count + 1 - drafted).max())
        starts = count + 1 - catch_up
        feed = out[rows[:, None], starts[:, None] + torch.arange(catch_up, device=count.device)[None, :]]
        for j in range(k_round):
            logits = self.draft.forward_rows(d_state, feed, starts)[:, -1:, :]
            self._ban_eos(logits, count + j, min_new_tokens, eos)
            proposals.append(torch.argmax(logits[:, 0, :], dim=-1))
            feed, starts = proposals[-1][:, None], count + 1 + j
        return proposals

    @staticmethod
    def _take_rows(out, rows, count, active, chosen, agree, max_new_tokens: int, eos) -> torch.Tensor:
        """Each active row appends its agreed proposals and the teacher's next token to ``out``, up to EOS and
        ``max_new_tokens``; returns the new counts (``active`` is updated in place)."""
        for j in range(chosen.shape[1]):
            take = active & (agree >= j) & (count < max_new_tokens)
            out[rows[take], count[take] + 1] = chosen[take, j]
            count = count + take.long()
            if eos is not None:
                active &= ~(take & torch.isin(chosen[:, j], eos))
        active &= count < max_new_tokens
        return count

    def _ban_eos(self, logits: torch.Tensor, generated: torch.Tensor, min_new_tokens: int, eos) -> None:
        """EOS masked at the positions (per row: ``generated[r] + j``) before ``min_new_tokens``, in place."""
        if eos is None or not min_new_tokens:
            return
        index = generated[:, None] + torch.arange(logits.shape[1], device=logits.device)[None, :]
        banned = index < min_new_tokens
        if bool(banned.any()):
            logits[:, :, eos] = logits[:, :, eos].masked_fill(banned[:, :, None], -float("inf"))

    def _propose(self, d_state, seq, k_round: int, eos, banned: int, oracle, generated: int) -> list[torch.Tensor]:
        """The draft catches up on the tokens it has not seen, then proposes ``k_round`` tokens greedily."""
        proposals: list[torch.Tensor] = []
        feed = seq[:, d_state.length :]
        for j in range(k_round):
            logits = self.draft.forward(d_state, feed)[:, -1, :]
            if eos is not None and j < banned:
                logits[:, eos] = -float("inf")
            proposal = torch.argmax(logits, dim=-1)
            if oracle is not None:
                proposal = oracle(proposal, generated + j)
            proposals.append(proposal)
            feed = proposal[:, None]
        return proposals

    def _accepted(self, chosen, proposals, k_round: int, unfinished, eos, accept, batch: int) -> int:
        """How many leading proposals every unfinished row agrees with (finished rows do not constrain)."""
        if not k_round:
            return 0
        agree = (chosen[:, :k_round] == torch.stack(proposals, dim=1)).long().cumprod(dim=1).sum(dim=1)
        if accept is not None:
            agree = accept(k_round, batch).to(chosen.device)
        # a row whose accepted run reaches EOS is done: what follows does not constrain the others
        return int(torch.where(unfinished & ~self._ends_within(chosen, agree, eos), agree, k_round).min())

    def _append(self, seq, new, unfinished, eos, on_token):
        """``seq`` with the ``new`` columns (padding for finished rows); ``unfinished`` is updated in place."""
        pad = torch.full_like(unfinished, self.teacher.pad_id, dtype=torch.long)
        for j in range(new.shape[1]):
            token = torch.where(unfinished, new[:, j], pad)
            seq = torch.cat([seq, token[:, None]], dim=1)
            if on_token is not None:
                on_token(seq.shape[1] - 2)
            if eos is not None:
                unfinished &= ~torch.isin(token, eos)
                if not bool(unfinished.any()):  # generate stops here: no trailing padding column
                    break
        return seq

    @staticmethod
    def _ends_within(chosen: torch.Tensor, agree: torch.Tensor, eos) -> torch.Tensor:
        """Rows whose teacher tokens hit EOS within their agreed run (so the row ends this round)."""
        if eos is None:
            return torch.zeros_like(agree, dtype=torch.bool)
        positions = torch.arange(chosen.shape[1] - 1, device=chosen.device)[None, :]
        return (torch.isin(chosen[:, :-1], eos) & (positions < agree[:, None])).any(dim=1)
