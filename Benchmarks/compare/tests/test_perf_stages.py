"""perf_stages.py on hand-made `perf script` text: first matching stage wins, kernel leaves are counted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import perf_stages

SCRIPT = """steer 4452 100.1: 500000 cpu-clock:ppp:
\t7f01 (anonymous namespace)::inner_product_avx2+0x1 (/x/steer)
\t7f02 steer_index_search+0x2 (/x/steer)
\t7f03 $s12SteerService14RequestHandlerC3run+0x3 (/x/steer)
\t7f04 $s11SteerServer10WorkerPoolC4work+0x4 (/x/steer)

steer 4452 100.2: 500000 cpu-clock:ppp:
\tffff1 finish_task_switch.isra.0+0x1 ([kernel.kallsyms])
\t7f05 $s11SteerServer10WorkerPoolC4work+0x4 (/x/steer)

steer 4451 100.3: 500000 cpu-clock:ppp:
\tffff2 tcp_sendmsg+0x1 ([kernel.kallsyms])
\t7f06 __GI___libc_write+0x1 (/lib/libc.so.6)
\t7f07 $s11SteerServer17ConnectionHandlerC8complete+0x2 (/x/steer)

steer 4451 100.4: 500000 cpu-clock:ppp:
\t7f08 $s13SteerProtocol10JSONParserV11parseNumber+0x1 (/x/steer)
\t7f09 $s11SteerServer17ConnectionHandlerC7process+0x2 (/x/steer)

steer 4451 100.5: 500000 cpu-clock:ppp:
\tffff3 irq_exit+0x1 ([kernel.kallsyms])

steer 4451 100.6: 500000 cpu-clock:ppp:
\t7f0a memcpy+0x1 (/lib/libc.so.6)
"""


def test_each_sample_goes_to_its_most_specific_stage() -> None:
    counts, total, kernel = perf_stages.shares(SCRIPT)
    assert total == 6
    assert kernel == 3
    assert counts["index search (faiss/HNSW)"] == 1
    assert counts["worker thread: pool (parking, waking, job wrapper)"] == 1
    assert counts["event loop: socket write"] == 1
    assert counts["request parse and decode"] == 1
    assert counts["kernel only (interrupts, scheduling)"] == 1
    assert counts["other"] == 1


def test_main_prints_shares_that_sum_to_the_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "perf.txt"
    path.write_text(SCRIPT)
    assert perf_stages.main(["--script", str(path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "%" in line]
    assert abs(sum(float(row.split("|")[2].strip().rstrip(" %")) for row in rows) - 100) < 0.6
    assert "leaf frame in the kernel: 50.0 %" in out
