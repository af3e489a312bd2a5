"""Discover, load, enable/disable and install extensions (``extensions/NAME/extension.yaml`` + a module).

Each extension's module is imported from its file path under a private package name
(``sdwebui_extension_<name>``), so extensions can use relative imports among their own files and never
shadow real packages. Anything that goes wrong (bad YAML, a missing requirement, an import error,
``setup`` raising, a callback raising later) puts that one extension in status ``error`` with the
reason; the app and the other extensions carry on.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..engine.request import GenerationRequest, GenerationResult, RequestError
from .api import API_VERSION, ExtensionAPI
from .callbacks import Callbacks
from .scripts import MODES, SCRIPT_KEY, Script, ScriptCall, ScriptContext

log = logging.getLogger("extensions")
MANIFEST = "extension.yaml"
MODULE_CANDIDATES = ("extension.py", "__init__.py")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ExtensionError(Exception):
    """A user-facing problem with an extension operation (install, enable): one clear line."""


@dataclass
class Extension:
    name: str
    path: Path
    version: str = ""
    description: str = ""
    api_version: int = API_VERSION
    requirements: list[str] = field(default_factory=list)
    module_file: str | None = None
    enabled: bool = True
    status: str = "not loaded"  # loaded / error / disabled
    error: str | None = None
    module: types.ModuleType | None = None
    tabs: list[tuple[str, Callable]] = field(default_factory=list)
    scripts: list[Script] = field(default_factory=list)
    callbacks: dict[str, list[Callable]] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status == "loaded"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "description": self.description,
                "enabled": self.enabled, "status": self.status, "error": self.error, "path": str(self.path),
                "api_version": self.api_version, "requirements": list(self.requirements),
                "scripts": [s.title for s in self.scripts], "tabs": [t for t, _ in self.tabs],
                "callbacks": sorted(k for k, v in self.callbacks.items() if v)}


class ExtensionManager:
    """The registry of one App: every extension found, its status, and what the loaded ones registered."""

    def __init__(self, folder: Path, disabled: list[str] | None = None,
                 save_disabled: Callable[[list[str]], None] | None = None):
        self.folder = Path(folder)
        self.disabled = set(disabled or [])
        self._save_disabled = save_disabled
        self.extensions: list[Extension] = []
        self.callbacks = Callbacks(self)
        self._lock = threading.RLock()

    # ---- discovery and loading ------------------------------------------------------------
    def load_all(self) -> list[Extension]:
        """Find every ``*/extension.yaml`` under the folder (sorted by folder name) and load the enabled ones."""
        self.extensions = []
        if not self.folder.is_dir():
            return self.extensions
        for folder in sorted(p for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if (folder / MANIFEST).is_file():
                self.extensions.append(self._load(folder))
        return self.extensions

    def _load(self, folder: Path) -> Extension:
        extension = Extension(name=folder.name, path=folder)
        try:
            self._read_manifest(extension)
        except ExtensionError as e:
            return self._failed(extension, str(e))
        if any(e.name == extension.name for e in self.extensions):
            return self._failed(extension, f"another extension is already named {extension.name!r}")
        extension.enabled = extension.name not in self.disabled
        if not extension.enabled:
            extension.status = "disabled"
            return extension
        return self._import(extension)

    def _read_manifest(self, extension: Extension) -> None:
        import yaml

        path = extension.path / MANIFEST
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or " ".join(str(e).split())
            raise ExtensionError(f"{MANIFEST}: cannot read it{where} ({e.__class__.__name__}: {problem})") from None
        if not isinstance(document, dict):
            raise ExtensionError(f"{MANIFEST}: expected a mapping (name: ..., version: ...)")
        extension.name = str(document.get("name") or extension.path.name)
        extension.version = str(document.get("version") or "")
        extension.description = str(document.get("description") or "")
        requirements = document.get("requirements") or []
        if isinstance(requirements, str):
            requirements = [requirements]
        extension.requirements = [str(r) for r in requirements]
        try:
            extension.api_version = int(document.get("api_version", API_VERSION))
        except (TypeError, ValueError):
            raise ExtensionError(f"{MANIFEST}: api_version must be a whole number") from None
        module = document.get("module")
        if module is not None:
            module = str(module)
            if Path(module).is_absolute() or ".." in Path(module).parts:
                raise ExtensionError(f"{MANIFEST}: module must be a file inside the extension's folder")
        extension.module_file = module

    def _import(self, extension: Extension) -> Extension:
        if extension.api_version > API_VERSION or extension.api_version < 1:
            return self._failed(extension, f"needs extension API version {extension.api_version}; this app "
                                           f"provides version {API_VERSION}")
        missing = missing_requirements(extension.requirements)
        if missing:
            return self._failed(extension, "missing requirements: " + ", ".join(missing) +
                                f" (install with: pip install {' '.join(repr(m) for m in missing)})")
        candidates = [extension.module_file] if extension.module_file else list(MODULE_CANDIDATES)
        module_path = next((extension.path / c for c in candidates if (extension.path / c).is_file()), None)
        if module_path is None:
            return self._failed(extension, f"no module: expected {' or '.join(candidates)} in {extension.path}")
        try:
            module = import_from_path(extension, module_path)
        except Exception as e:  # noqa: BLE001 (any import-time failure is the extension's, reported)
            return self._failed(extension, f"import failed: {_describe(e, extension.path)}", exc=e)
        setup = getattr(module, "setup", None)
        if not callable(setup):
            return self._failed(extension, f"{module_path.name} has no setup(api) function")
        try:
            setup(ExtensionAPI(extension))
        except Exception as e:  # noqa: BLE001
            extension.tabs, extension.scripts, extension.callbacks = [], [], {}
            return self._failed(extension, f"setup failed: {_describe(e, extension.path)}", exc=e)
        extension.module = module
        extension.status = "loaded"
        log.info("extension %s %s loaded", extension.name, extension.version)
        return extension

    def _failed(self, extension: Extension, message: str, exc: BaseException | None = None) -> Extension:
        extension.status, extension.error = "error", message
        if exc is not None:
            log.error("extension %s: %s\n%s", extension.name, message,
                      "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())
        else:
            log.error("extension %s: %s", extension.name, message)
        return extension

    def fail(self, extension: Extension, what: str, exc: BaseException) -> None:
        """A loaded extension raised (in a callback, a script or a tab): off for the rest of this run."""
        with self._lock:
            if extension.status != "loaded":
                return
            self._failed(extension, f"{what} failed: {_describe(exc, extension.path)}; disabled until restart", exc=exc)

    # ---- queries --------------------------------------------------------------------------
    def get(self, name: str) -> Extension | None:
        return next((e for e in self.extensions if e.name == name), None)

    def active(self) -> list[Extension]:
        return [e for e in self.extensions if e.active]

    def scripts(self, mode: str | None = None) -> list[tuple[Extension, Script]]:
        """Scripts of loaded extensions, optionally only those offered in ``mode`` (txt2img/img2img)."""
        found = []
        for extension in self.active():
            for script in extension.scripts:
                if mode is None or mode in script.modes:
                    found.append((extension, script))
        return found

    def find_script(self, name: str, mode: str) -> tuple[Extension, Script]:
        """A script by title, case-insensitively (A1111's ``script_name``); ValueError lists the choices."""
        wanted = " ".join(str(name).lower().split())
        scripts = self.scripts(mode)
        for extension, script in scripts:
            if wanted in (" ".join(script.title.lower().split()), script.slug):
                return extension, script
        available = ", ".join(repr(s.title) for _, s in scripts) or "none"
        raise ValueError(f"script {name!r} is not available for {mode}; available: {available}")

    def script_call(self, name: str, mode: str, args: list[Any] | tuple[Any, ...] | None) -> ScriptCall:
        """UI/API script choice -> the ``ScriptCall`` a request carries; errors name ``script_name`` or
        ``script_args``."""
        try:
            _, script = self.find_script(name, mode)
        except ValueError as e:
            raise RequestError("script_name", str(e)) from None
        if args is None:
            args = []
        if not isinstance(args, (list, tuple)):
            raise RequestError("script_args", "must be a list of the script's arguments in order")
        try:
            parsed = script.parse_args(list(args), mode)
        except RequestError:
            raise
        except (ValueError, TypeError) as e:
            raise RequestError("script_args", f"{script.title}: {e}") from None
        return ScriptCall(script.title, tuple(parsed))

    def run_script(self, request: GenerationRequest, context: ScriptContext) -> GenerationResult:
        """Run the script a request names. The user's mistakes (ValueError) and the engine's errors pass
        through as they are; anything else the script raises turns its extension off and is reported."""
        call = request.extra[SCRIPT_KEY]
        try:
            extension, script = self.find_script(call.title, context.mode)
        except ValueError as e:
            raise RequestError("script_name", str(e)) from None
        base = request.with_changes(extra={k: v for k, v in request.extra.items() if k != SCRIPT_KEY})
        try:
            result = script.run(context, base, *call.args)
        except ValueError as e:  # a bad value for the script: the API answers 422 naming script_args
            if isinstance(e, RequestError) or any(e is error for error in context.engine_errors):
                raise
            raise RequestError("script_args", f"{script.title}: {e}") from e
        except Exception as e:  # noqa: BLE001
            if any(e is error for error in context.engine_errors):
                raise
            self.fail(extension, f"script {script.title!r}", e)
            raise ExtensionError(f"extension {extension.name}: script {script.title!r} failed: "
                                 f"{type(e).__name__}: {e}") from e
        if not isinstance(result, GenerationResult):
            error = TypeError(f"run() returned {type(result).__name__}, not a GenerationResult")
            self.fail(extension, f"script {script.title!r}", error)
            raise ExtensionError(f"extension {extension.name}: script {script.title!r} failed: {error}")
        return result

    def describe(self) -> list[dict[str, Any]]:
        return [e.as_dict() for e in self.extensions]

    # ---- enable / disable -----------------------------------------------------------------
    def set_enabled(self, name: str, enabled: bool) -> Extension:
        """Disable: its callbacks and scripts stop now. Enable: it is loaded now (its tabs and script
        panels appear in the web UI after a restart). Saved in the options (``disabled_extensions``)."""
        with self._lock:
            extension = self.get(name)
            if extension is None:
                raise ExtensionError(f"no extension named {name!r}")
            if enabled:
                self.disabled.discard(name)
            else:
                self.disabled.add(name)
            if self._save_disabled is not None:
                self._save_disabled(sorted(self.disabled))
            if extension.enabled == enabled:
                return extension
            extension.enabled = enabled
            if not enabled:
                if extension.status == "loaded":
                    extension.status = "disabled"
                elif extension.status != "error":
                    extension.status = "disabled"
                return extension
            if extension.module is not None:  # loaded earlier in this run: switch it back on
                extension.status, extension.error = "loaded", None
            else:
                extension.status, extension.error = "not loaded", None
                self._import(extension)
            return extension

    # ---- install --------------------------------------------------------------------------
    def install(self, url: str, folder_name: str | None = None, timeout: float = 300) -> Extension:
        """``git clone`` a URL or a local path into the extensions folder and load it."""
        url = (url or "").strip()
        if not url:
            raise ExtensionError("give a git URL or a local path to a git repository")
        if url.startswith("-"):
            raise ExtensionError(f"not a URL or path: {url!r}")
        name = (folder_name or "").strip() or re.sub(r"\.git$", "", url.rstrip("/\\").replace("\\", "/")
                                                    .rsplit("/", 1)[-1].rsplit(":", 1)[-1])
        if not _SAFE_NAME.match(name):
            raise ExtensionError(f"cannot use {name!r} as a folder name; give one of letters, digits, . _ -")
        target = self.folder / name
        if target.exists():
            raise ExtensionError(f"{target} already exists; remove it first to reinstall")
        git = shutil.which("git")
        if git is None:
            raise ExtensionError("git is not installed")
        self.folder.mkdir(parents=True, exist_ok=True)
        source = url
        if Path(url).expanduser().exists():
            source = str(Path(url).expanduser().resolve())
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        try:
            done = subprocess.run([git, "clone", "--depth", "1", "--", source, str(target)], capture_output=True,
                                  text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            shutil.rmtree(target, ignore_errors=True)
            raise ExtensionError(f"git clone of {url} took longer than {timeout:.0f} s") from None
        if done.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            message = (done.stderr or done.stdout).strip().splitlines()
            raise ExtensionError(f"git clone failed: {message[-1] if message else done.returncode}")
        if not (target / MANIFEST).is_file():
            shutil.rmtree(target, ignore_errors=True)
            raise ExtensionError(f"{url} is not an extension: it has no {MANIFEST}")
        with self._lock:
            extension = self._load(target)
            # a new list, swapped in whole: the worker may be reading the old one right now
            self.extensions = sorted(self.extensions + [extension], key=lambda e: e.path.name)
        log.info("installed extension %s into %s (%s)", extension.name, target, extension.status)
        return extension


EXPOSED_REFUSAL = ("Installing extensions is turned off because the server is exposed ({how}): an extension "
                   "runs any code it likes. Restart with --enable-insecure-extension-access to allow it.")


def install_refusal(settings) -> str | None:
    """Why installing from the web UI is refused: as in A1111, when ``--listen`` or ``--share`` exposes
    the server and ``--enable-insecure-extension-access`` was not given. None: allowed."""
    if (settings.listen or settings.share) and not settings.enable_insecure_extension_access:
        return EXPOSED_REFUSAL.format(how="--share" if settings.share else "--listen")
    return None


def missing_requirements(requirements: list[str]) -> list[str]:
    """Requirements (pip syntax) not satisfied in this environment. Nothing is installed at load time."""
    missing = []
    for requirement in requirements:
        try:
            from packaging.requirements import Requirement

            parsed = Requirement(requirement)
            name, specifier = parsed.name, parsed.specifier
        except Exception:  # noqa: BLE001 (packaging absent or an odd line: check the bare name)
            name, specifier = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0], None
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        if specifier and not specifier.contains(version, prereleases=True):
            missing.append(f"{requirement} (found {version})")
    return missing


def import_from_path(extension: Extension, module_path: Path) -> types.ModuleType:
    """Import the extension's module as ``sdwebui_extension_<name>.<stem>`` inside a package whose path
    is the extension folder (relative imports work); nothing is registered under a plain name."""
    package_name = "sdwebui_extension_" + re.sub(r"\W", "_", extension.name)
    for key in [k for k in sys.modules if k == package_name or k.startswith(package_name + ".")]:
        del sys.modules[key]  # a reload (after install or enable) starts clean
    package = types.ModuleType(package_name)
    package.__path__ = [str(extension.path)]
    package.__file__ = None
    sys.modules[package_name] = package
    if module_path.name == "__init__.py":
        spec = importlib.util.spec_from_file_location(package_name, module_path,
                                                      submodule_search_locations=[str(extension.path)])
        name = package_name
    else:
        name = f"{package_name}.{module_path.stem}"
        spec = importlib.util.spec_from_file_location(name, module_path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {module_path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for key in [k for k in sys.modules if k == package_name or k.startswith(package_name + ".")]:
            del sys.modules[key]
        raise
    return module


def _describe(exc: BaseException, folder: Path | None = None) -> str:
    """``ValueError: bad thing (extension.py line 12)``: the error and where in the extension it happened."""
    where = ""
    root = str(folder.resolve()) if folder is not None else None
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        filename = str(Path(frame.filename).resolve()) if frame.filename else ""
        if root and filename.startswith(root + os.sep):
            where = f" ({Path(filename).relative_to(root)} line {frame.lineno})"
            break
    return f"{type(exc).__name__}: {exc}{where}"


__all__ = ["Extension", "ExtensionError", "ExtensionManager", "MODES", "install_refusal", "missing_requirements"]
