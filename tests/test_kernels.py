import numpy as np
import pytest

from dsrecon.errors import DsreconError
from dsrecon.signal.kernels import Kernel, calcium_kernel, convolve_valid, glover_hrf, make_kernel, spm_hrf

# docs/method.md §2: first SPM taps at TR = 2.0
SPM_TR2 = [0, 0.0866, 0.3749, 0.3849, 0.2161, 0.0769, 0.0016, -0.0306, -0.0373, -0.0308]


def test_spm_taps_at_tr2_match_reference():
    h = spm_hrf(2.0)
    assert len(h) == 17
    np.testing.assert_allclose(h[:10], SPM_TR2, atol=1e-4)
    assert h.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("tr,k", [(0.2, 161), (0.5, 65), (1.4, 23), (2.0, 17)])
def test_spm_tap_counts(tr, k):
    assert len(spm_hrf(tr)) == k


def test_glover_normalised_and_peaks_near_5s():
    h = glover_hrf(0.1)
    assert h.sum() == pytest.approx(1.0)
    assert 4.0 < np.argmax(h) * 0.1 < 6.5


def test_calcium_single_and_double_exponential():
    h = calcium_kernel(30.0, 0.4)
    assert h[0] > 0 and np.all(np.diff(h) < 0)
    assert len(h) == int(np.floor(5 * 0.4 * 30 + 1e-9)) + 1
    h2 = calcium_kernel(30.0, 0.4, 0.02)
    assert h2[0] == 0 and h2.sum() == pytest.approx(1.0)
    with pytest.raises(DsreconError):
        calcium_kernel(30.0, 0.4, 0.5)


def test_convolve_valid_matches_direct_sum():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 2))
    h = rng.normal(size=7)
    out = convolve_valid(z, h)
    direct = np.array([[sum(h[k] * z[j + 6 - k, d] for k in range(7)) for d in range(2)] for j in range(44)])
    np.testing.assert_allclose(out, direct, atol=1e-12)


def test_make_kernel_names_and_errors(tmp_path):
    assert make_kernel("none", 1.0).K == 1
    assert make_kernel("spm", 2.0).K == 17
    f = tmp_path / "k.txt"
    f.write_text("0.5\n0.5\n")
    assert make_kernel(f, 1.0).K == 2
    with pytest.raises(DsreconError, match="unknown kernel"):
        make_kernel("bogus", 1.0)
    with pytest.raises(DsreconError, match="TR must be positive"):
        make_kernel("spm", 0.0)


def test_kernel_file_errors_name_the_file_and_the_line(tmp_path):
    from dsrecon.errors import DataError

    with pytest.raises(DataError, match=r"missing\.txt: kernel file not found"):
        make_kernel(tmp_path / "missing.txt", 1.0)
    bad = tmp_path / "bad.txt"
    bad.write_text("# taps\n0.5\n\nnan\n0.5\n")
    with pytest.raises(DataError, match=r"bad\.txt: line 4: kernel tap is nan"):
        make_kernel(bad, 1.0)
    zero = tmp_path / "zero.txt"
    zero.write_text("0\n0.0\n-0\n")
    with pytest.raises(DataError, match=r"zero\.txt: all 3 kernel taps are zero"):
        make_kernel(zero, 1.0)
    word = tmp_path / "word.txt"
    word.write_text("0.5\nhrf\n")
    with pytest.raises(DataError, match=r"word\.txt: line 2: 'hrf' is not a number"):
        make_kernel(word, 1.0)
    ok = tmp_path / "ok.txt"
    ok.write_text("# comment\n0.25, 0.5\n0.25  # last\n")
    np.testing.assert_array_equal(make_kernel(ok, 1.0).taps, [0.25, 0.5, 0.25])
    with pytest.raises(DsreconError, match="all 2 taps are zero"):
        Kernel(np.zeros(2), "file")
