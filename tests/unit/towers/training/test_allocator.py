"""retain_freed_memory: a step's large tensors stop page-faulting once freed memory is kept (glibc)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, resource, torch
    from towers.training.allocator import retain_freed_memory

    def faults():  # minor page faults of 20 allocations of a [1024, 10240] float32 tensor, each written then freed
        torch.empty(1024, 10240).fill_(1.0)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            torch.empty(1024, 10240).fill_(1.0)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    torch.set_num_threads(1)
    default = faults()
    applied = retain_freed_memory()
    print(json.dumps({"default": default, "applied": applied, "retained": faults(), "again": retain_freed_memory()}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_step_tensors_are_reused_instead_of_page_faulted_afresh() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["applied"] and result["again"]
    # 40 MiB tensors lie above the largest mmap threshold glibc's own dynamic adjustment reaches (32 MiB), so by
    # default every allocation maps fresh pages: 204,800 page faults
    pages = 20 * 1024 * 10240 * 4 // 4096
    assert result["default"] > pages // 2, result
    assert result["retained"] <= pages // 20, result  # reused: at most the first allocation touches fresh pages
    assert result["retained"] < result["default"] // 10, result
