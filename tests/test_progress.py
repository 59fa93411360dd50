"""Progress bars: TQDM_DISABLE hides the project's bars too, which pass their own ``disable=``."""

from retinaunet.parallel import run_parallel
from retinaunet.progress import hidden


def _square(x: int) -> int:
    return x * x


def test_tqdm_disable_hides_bars_that_decide_for_themselves(monkeypatch, capsys):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert hidden(True) and not hidden(False)
    assert [r for _, r, _ in run_parallel(_square, [1, 2, 3], 0, "squares")] == [1, 4, 9]
    assert "squares" in capsys.readouterr().err  # three items: the bar is drawn
    for value, off in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert hidden(False) is off
        assert [r for _, r, _ in run_parallel(_square, [1, 2, 3], 0, "squares")] == [1, 4, 9]
        assert ("squares" in capsys.readouterr().err) is not off
