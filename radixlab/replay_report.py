"""What a replay measured: one record per request sent (answered or failed), and totals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_FLAGS_HINT = ("the server reported no cached_tokens (SGLang: --enable-cache-report; "
               "vLLM: --enable-prompt-tokens-details)")


@dataclass
class ReplayRecord:
    """What the server said about one request; `error` is set (and the counts are 0) when the
    request failed, and names the server, the request index, the rid and what was wrong."""

    rid: int
    prompt_tokens: int            # as counted by the server's tokenizer
    cached_tokens: int | None     # None when the server does not report it
    completion_tokens: int
    latency_s: float
    text: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ReplayReport:
    """Per-request records (in trace order) and totals of one replay; totals count answered
    requests only, failed ones are listed apart."""

    url: str
    api: str
    records: list[ReplayRecord] = field(default_factory=list)

    @property
    def answered(self) -> list[ReplayRecord]:
        return [r for r in self.records if r.ok]

    @property
    def failures(self) -> list[ReplayRecord]:
        return [r for r in self.records if not r.ok]

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.answered)

    @property
    def cached_tokens(self) -> int:
        return sum(r.cached_tokens or 0 for r in self.answered)

    @property
    def reported(self) -> bool:
        """Whether the server reported cached tokens at all."""
        return any(r.cached_tokens is not None for r in self.answered)

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def totals(self) -> dict[str, Any]:
        return {
            "requests": len(self.records),
            "failed": len(self.failures),
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens if self.reported else None,
            "hit_rate": round(self.hit_rate, 4) if self.reported else None,
            "completion_tokens": sum(r.completion_tokens for r in self.answered),
            "total_latency_s": sum(r.latency_s for r in self.records),
        }

    def table(self, limit: int | None = None, failures_shown: int = 10) -> str:
        """A plain-text table: one row per request, the totals, then the failed requests."""
        rows = self.records if limit is None else self.records[:limit]
        lines = [f"{'rid':>4} {'prompt':>7} {'cached':>7} {'hit':>6}"]
        for r in rows:
            if not r.ok:
                lines.append(f"{r.rid:>4} {'failed':>7}")
                continue
            cached = "n/a" if r.cached_tokens is None else str(r.cached_tokens)
            hit = "n/a" if r.cached_tokens is None else f"{r.cached_tokens / r.prompt_tokens:.0%}"
            lines.append(f"{r.rid:>4} {r.prompt_tokens:>7} {cached:>7} {hit:>6}")
        if limit is not None and len(self.records) > limit:
            lines.append(f" ... {len(self.records) - limit} more")
        t = self.totals()
        cached = "n/a" if t["cached_tokens"] is None else str(t["cached_tokens"])
        hit = "n/a" if t["hit_rate"] is None else f"{t['hit_rate']:.1%}"
        lines.append(f"total {t['prompt_tokens']:>6} {cached:>7} {hit:>6}")
        if self.answered and not self.reported:
            lines.append(_FLAGS_HINT)
        failed = self.failures
        if failed:
            lines.append(f"{len(failed)} of {len(self.records)} requests failed "
                         "(not in the totals):")
            lines += [f"  {r.error}" for r in failed[:failures_shown]]
            if len(failed) > failures_shown:
                lines.append(f"  ... {len(failed) - failures_shown} more")
        return "\n".join(lines)
