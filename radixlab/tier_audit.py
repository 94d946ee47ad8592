"""Check what the pages of a tiered cache hold, in both tiers, against the cost model's KV.

`CostModelExecutor` writes into each slot a hash of the whole token prefix up to it, so the KV a
cached page must hold is known from its tokens alone. `audit(mgr, executor)` walks the tree and
compares every device slot (`executor.kv`) and every host slot (`executor.host_kv`) with that hash.
Copies still queued (not yet run by an executor) are skipped: their destinations are written by
the next plan. Used by the tier's tests, the notebook's exercise checker and the notebook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from radixlab.batch import LOAD, SAVE, mix64


@dataclass
class AuditReport:
    """Pages checked per tier (and skipped because a queued copy will write them)."""

    device_pages: int = 0
    host_pages: int = 0
    pending: int = 0


def audit(mgr: Any, executor: Any) -> AuditReport:
    """AssertionError naming the first page whose KV is not its prefix's, in either tier."""
    tree, p = mgr.prefix_cache, mgr.page_size
    queued = tree.transfers
    pend_dev = {d for kind, _, d in queued if kind == LOAD}
    pend_host = {h for kind, _, h in queued if kind == SAVE}
    report = AuditReport(pending=len(queued))
    stack = [(tree.root, mix64(executor.seed, 0), 0)]
    while stack:
        node, h, depth = stack.pop()
        for child in node.children.values():
            hashes = []
            for t in child.key.tolist():
                h2 = mix64(hashes[-1] if hashes else h, t)
                hashes.append(h2)
            for tier, slots, kv, pending in (
                    ("device", child.value, executor.kv, pend_dev),
                    ("host", child.host, executor.host_kv, pend_host)):
                if slots is None:
                    continue
                for i in range(0, len(slots), p):
                    page = int(slots[i]) // p
                    if page in pending:
                        continue
                    got = [int(kv[s]) if s < len(kv) else 0 for s in slots[i : i + p].tolist()]
                    if got != hashes[i : i + p]:
                        raise AssertionError(
                            f"{tier} page {page} of node {child.id} (positions {depth + i}.."
                            f"{depth + i + p - 1}) does not hold the KV of its prefix")
                    if tier == "device":
                        report.device_pages += 1
                    else:
                        report.host_pages += 1
            stack.append((child, hashes[-1], depth + len(child)))
    return report
