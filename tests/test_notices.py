"""The package's notices: on stderr by default, kept in a list inside collect_notices (innermost block first), on stderr
again after it."""

from anila_core.notices import collect_notices, notice


def test_notices_go_to_stderr_or_to_the_innermost_open_collection(capsys):
    notice("notice: first")
    with collect_notices() as outer:
        notice("notice: second")
        with collect_notices() as inner:
            notice("notice: third")
        notice("notice: fourth")
    notice("notice: fifth")
    err = capsys.readouterr().err
    assert err.splitlines() == ["notice: first", "notice: fifth"]
    assert outer == ["notice: second", "notice: fourth"] and inner == ["notice: third"]


def test_a_block_that_raises_still_closes_its_collection(capsys):
    try:
        with collect_notices() as notes:
            notice("notice: kept")
            raise RuntimeError("stop")
    except RuntimeError:
        pass
    notice("notice: after")
    assert notes == ["notice: kept"] and capsys.readouterr().err == "notice: after\n"
