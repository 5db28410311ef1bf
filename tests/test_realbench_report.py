"""benchmark/realbench_report.py: the seed-selection means of run_realbench.py's report."""

from __future__ import annotations

import math

import pytest

from benchmark.realbench_report import selection_means


def test_seed_selection_means_keep_the_top_ranked_per_scene():
    def rows(folder: str, values: list[float], ranks: list[int | None]) -> list[dict]:
        return [
            {"dataset": "RealBench", "variant": "base", "folder": folder, "image": f"{i}.png",
             "rank": rank, "PSNR": value}
            for i, (value, rank) in enumerate(zip(values, ranks, strict=True))
        ]  # fmt: skip

    a = rows("RealBench-1-results", [10.0, 20.0, 30.0, 40.0], [4, 3, 2, 1])
    b = rows("RealBench-2-results", [12.0, 14.0, 16.0, 18.0], [1, 2, 3, 4])
    means = selection_means(a + b, ["PSNR"])[("RealBench", "base")]
    assert means["scenes"] == 2
    assert means["means"][0.0]["PSNR"] == pytest.approx((25.0 + 15.0) / 2)
    assert means["means"][0.75]["PSNR"] == pytest.approx((40.0 + 12.0) / 2)  # each scene's best
    unranked = rows("RealBench-3-results", [1.0, 2.0], [None, None])
    means = selection_means(a + unranked, ["PSNR"])[("RealBench", "base")]
    assert means["means"][0.0]["PSNR"] == pytest.approx((25.0 + 1.5) / 2)
    assert math.isnan(means["means"][0.75]["PSNR"])  # no ranking: no seed selection
