"""A short run of the structure-aware fuzzer (the long one: python -m napari_sciz.bench.fuzz)."""

from __future__ import annotations

import random
import time

import pytest

pytest.importorskip("imagecodecs")

from napari_sciz.bench import fuzz  # noqa: E402


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return fuzz.sample_files(seed=1)


def test_sample_files_of_some_kinds_are_those_of_every_kind(files) -> None:
    some = fuzz.sample_files(seed=1, kinds=["lossless", "bounded-sz3"])
    assert some == {k: files[k] for k in ("lossless", "bounded-sz3")}
    with pytest.raises(ValueError, match="no sample files of kinds"):
        fuzz.sample_files(kinds=["jpeg"])


@pytest.mark.parametrize(
    "mode",
    [
        *("lossy", "hybrid", "lossless", "bounded", "lossless-wide", "lossless-sparse"),
        *("bounded-sz3", "bounded-interp", "bounded-interp-f32", "lossless-labels"),
        "lossless-resampled",
    ],
)
def test_hostile_files_with_valid_crcs_are_refused_or_decoded(files, mode) -> None:
    outcomes: dict[str, int] = {}
    for case in range(60):
        rng = random.Random(f"test:{mode}:{case}")
        blob = fuzz.mutate(files[mode], rng)
        t0 = time.perf_counter()
        outcome, detail = fuzz.run_case(blob)
        assert time.perf_counter() - t0 < 10, f"case {case} took too long"
        assert outcome in ("refused", "decoded"), f"case {case}: {outcome} {detail}"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("refused", 0) > 0  # the mutations do reach the checks


@pytest.mark.parametrize("seed", [0, 1])
def test_the_bounded_samples_hold_the_codings_they_are_named_for(files, seed: int) -> None:
    """The long run's default seed and the tests' seed both give SZ3 blocks, version-1
    interpolation blocks and version-2 (float) interpolation blocks to mutate."""
    from napari_sciz.core.bitstream import container

    want = {
        "bounded-sz3": b"SZ3",
        "bounded-interp": b"SZI\x01",
        "bounded-interp-f32": b"SZI\x02",
        "lossless-labels": b"SZN\x01",
        "lossless-resampled": b"SZU\x01",
    }
    if seed != 1:  # (the module's files are seed 1's)
        files = fuzz.sample_files(seed=seed, kinds=want)
    for name, magic in want.items():
        with container.SciZFile(files[name]) as f:
            kinds = [f.payload(i)[: len(magic)] == magic for i in range(2)]
        # (a block that ends on an interpolated row codes it from one neighbour: the first
        # block of the resampled sample stays with the predictive coder)
        assert all(kinds) if name != "lossless-resampled" else any(kinds), name


@pytest.mark.slow
def test_the_long_run_counts_outcomes_in_child_processes() -> None:
    summary = fuzz.run(cases=6, seed=3, batch=3, case_seconds=10, memory_gib=8)
    assert summary["cases"] == 6
    assert summary["outcomes"]["crash"] == summary["outcomes"]["memory"] == 0
