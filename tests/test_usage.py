"""core/usage.py: the process's peak memory and CPU time, as final.json records them."""

import numpy as np

from lapmusic.core.usage import process_usage


def test_peak_memory_grows_with_what_the_process_touches():
    before = process_usage()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, every page written
    after = process_usage()
    assert block.sum() == block.size
    assert after["peak_rss_mb"] >= before["peak_rss_mb"]
    assert after["peak_rss_mb"] >= 64  # the block alone is 64 MiB resident


def test_cpu_times_and_the_kernel_share_are_consistent():
    usage = process_usage()
    assert usage["cpu_user_s"] > 0 and usage["cpu_system_s"] >= 0
    share = usage["cpu_system_s"] / (usage["cpu_user_s"] + usage["cpu_system_s"])
    assert abs(usage["kernel_share"] - share) < 1e-12
    assert 0.0 <= usage["kernel_share"] <= 1.0
