"""The one logging setup: the level from UNISON_LOG_LEVEL, one format, and a second call that changes nothing."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from unison.ops.logs import FORMAT, LEVEL_ENV, log_level, setup_logging


@contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger as Ray hands it to a worker (no handlers), restored afterwards with pytest's own."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    for handler in saved:
        root.removeHandler(handler)
    try:
        yield root
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)


def test_the_level_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LEVEL_ENV, raising=False)
    assert log_level() == logging.INFO
    for value, level in [("debug", logging.DEBUG), (" Warning ", logging.WARNING), ("ERROR", logging.ERROR),
                         ("15", 15), ("", logging.INFO)]:
        monkeypatch.setenv(LEVEL_ENV, value)
        assert log_level() == level, value
    assert log_level("critical") == logging.CRITICAL  # an explicit value wins over the environment


def test_a_misspelt_level_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LEVEL_ENV, "verbose")
    with pytest.raises(ValueError, match=r"UNISON_LOG_LEVEL='verbose' is not a log level: use one of .*DEBUG"):
        log_level()
    with pytest.raises(ValueError, match="verbose"):  # even where logging is already set up
        setup_logging()


def test_setup_gives_the_root_logger_one_handler_with_the_format(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(LEVEL_ENV, "debug")
    with bare_root() as root:
        setup_logging()
        assert len(root.handlers) == 1 and root.level == logging.DEBUG
        assert root.handlers[0].formatter is not None and root.handlers[0].formatter._fmt == FORMAT
        logging.getLogger("unison.test").debug("hello %s", "there")
        err = capsys.readouterr().err
    assert err.endswith(" unison.test DEBUG hello there\n"), err


def test_a_second_call_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LEVEL_ENV, raising=False)
    with bare_root() as root:
        setup_logging()
        handlers = root.handlers[:]
        monkeypatch.setenv(LEVEL_ENV, "error")
        setup_logging()  # another constructor in the same process
        assert root.handlers == handlers and root.level == logging.INFO


def test_logging_someone_else_set_up_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LEVEL_ENV, "debug")
    with bare_root() as root:
        theirs = logging.StreamHandler()
        root.addHandler(theirs)
        root.setLevel(logging.WARNING)
        setup_logging()
        assert root.handlers == [theirs] and root.level == logging.WARNING
