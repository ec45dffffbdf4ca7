"""BUILD_HANDLER / DEPLOY_HANDLER: 'package.module:function' resolved by pkgutil.resolve_name, every
mistake a HandlerError naming the variable, the old module names still accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.build.pipeline import build
from listener.deploy.production import deploy
from listener.service import MOVED_HANDLERS, HandlerError, load_handler


def test_a_handler_is_the_function_its_name_points_at() -> None:
    assert load_handler("listener.build.pipeline:build", "BUILD_HANDLER") is build
    assert load_handler("listener.deploy.production:deploy", "DEPLOY_HANDLER") is deploy


def test_an_attribute_path_after_the_colon_is_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "handlers_dotted.py").write_text("class Stage:\n    @staticmethod\n    def run(ctx):\n        return ctx\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    handler = load_handler("handlers_dotted:Stage.run", "BUILD_HANDLER")
    assert handler("ctx") == "ctx"


@pytest.mark.parametrize("old", sorted(MOVED_HANDLERS))
def test_the_old_module_names_still_load_with_a_warning(old: str) -> None:
    assert load_handler(old, "BUILD_HANDLER") is load_handler(MOVED_HANDLERS[old], "BUILD_HANDLER")


@pytest.mark.parametrize(("spec", "message"), [
    ("listener.build.pipeline.build", "BUILD_HANDLER='listener.build.pipeline.build': expected 'package.module:function'"),
    ("listener.build.pipeline:", "expected 'package.module:function'"),
    (":build", "expected 'package.module:function'"),
    ("listener build:run", "expected 'package.module:function'"),
    ("listener.build.pipeline:build:again", "expected 'package.module:function'"),
    ("tests.fakes.nothing_here:build", "BUILD_HANDLER='tests.fakes.nothing_here:build': cannot import tests.fakes.nothing_here"),
    ("listener.build.pipeline:nothing", "listener.build.pipeline has no function 'nothing'"),
    ("listener.build.pipeline:build.nothing", "listener.build.pipeline has no function 'build.nothing'"),
    ("listener.service:EXIT_OK", "listener.service has no function 'EXIT_OK'"),  # not callable
])
def test_every_mistake_names_the_variable_and_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(HandlerError) as raised:
        load_handler(spec, "BUILD_HANDLER")
    assert message in str(raised.value)
    assert str(raised.value).startswith(f"BUILD_HANDLER={spec!r}: ")


@pytest.mark.parametrize(("body", "shown"), [
    ("raise RuntimeError('no config')\n", "cannot import handlers_broken: RuntimeError: no config"),
    ("import os\nos.nothing\n", "cannot import handlers_broken: AttributeError:"),
    ("def build(:\n", "cannot import handlers_broken: SyntaxError:"),
])
def test_a_module_that_fails_while_imported_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              body: str, shown: str) -> None:
    (tmp_path / "handlers_broken.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "handlers_broken", raising=False)
    with pytest.raises(HandlerError, match="^DEPLOY_HANDLER='handlers_broken:deploy': ") as raised:
        load_handler("handlers_broken:deploy", "DEPLOY_HANDLER")
    assert shown in str(raised.value)
