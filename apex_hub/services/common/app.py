"""The services as traitlets Applications: options from the command line, a config file or ``configure()``.

Why traitlets: each option is written once, as a trait with its help string; ``--help-all``, config
files (``--config FILE``, ``c.CullerApp.interval = 30``) and the generated option reference come from
it, and ``configure(c, culler={...})`` maps its dictionary onto the same traits (:func:`command_line`).

A trait tagged ``configure=True`` is also a key of ``configure(c, <service>={...})``; its ``cli``
tag, when set, is the command-line name when it differs from the trait's name with dashes.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal
import sys
from collections.abc import Iterable
from typing import Any, ClassVar

from traitlets import Bool, Enum, HasTraits, TraitError, TraitType, Unicode
from traitlets.config import Application, Configurable

from .traits import Duration, Switch

LOG_FORMAT = "[%(levelname).1s %(asctime)s %(name)s] %(message)s"


def cli_name(name: str, trait: TraitType) -> str:
    """The command-line option (without ``--``) of trait ``name``."""
    return trait.metadata.get("cli") or name.replace("_", "-")


def own_traits(cls: type) -> dict[str, TraitType]:
    """The config traits ``cls`` (or an apex-hub base) defines, by name, in definition order."""
    found: dict[str, TraitType] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("apex_hub"):
            continue
        for name, value in vars(klass).items():
            if isinstance(value, TraitType) and value.metadata.get("config"):
                found[name] = cls.class_traits()[name]
    return found


class ServiceApp(Application):
    """What the services' applications share: the config file, logging, the exit codes."""

    #: the message prefix, e.g. "apex culler"
    label: ClassVar[str] = "apex service"

    config_file = Unicode(
        "",
        help="A Python config file (c.<Application>.<option> = value lines) read after the command line;"
        " options given on the command line win.",
    ).tag(config=True, cli="config")

    log_level = Enum(
        (0, 10, 20, 30, 40, 50, "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"),
        default_value="INFO",
        help="Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    ).tag(config=True)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.aliases, self.flags = self.class_aliases(), self.class_flags()

    @classmethod
    def class_aliases(cls) -> dict:
        """``--<name>=VALUE`` for every own option (``--config`` for the config file)."""
        return {cli_name(name, trait): f"{cls.__name__}.{name}" for name, trait in own_traits(cls).items()}

    @classmethod
    def class_flags(cls) -> dict:
        """``--<name>`` alone for every switch (``--<name>=false`` still works), and ``--no-<name>``."""
        flags = {}
        for name, trait in own_traits(cls).items():
            if isinstance(trait, Bool):
                first = (trait.help or "").split(". ")[0].rstrip(".")
                flags[cli_name(name, trait)] = ({cls.__name__: {name: True}}, first)
                flags[f"no-{cli_name(name, trait)}"] = ({cls.__name__: {name: False}}, f"Not: {first}")
        return flags

    def initialize(self, argv: list[str] | None = None) -> None:
        # traitlets' own methods log a bad value and exit 1; a service says what is wrong and exits 2
        self.refuse_unknown_options(sys.argv[1:] if argv is None else argv)
        Application.parse_command_line.__wrapped__(self, argv)
        if self.extra_args:  # the services take options only
            raise ValueError(f"unexpected argument(s) {' '.join(self.extra_args)}")
        if self.config_file:
            path = os.path.abspath(self.config_file)
            if not os.path.isfile(path):
                raise ValueError(f"no config file {path}")
            Application.load_config_file.__wrapped__(self, os.path.basename(path), os.path.dirname(path))
            self.update_config(self.cli_config)  # the command line wins over the file

    def refuse_unknown_options(self, argv: list[str]) -> None:
        """A misspelt option is an error, as it was with argparse (traitlets would only warn)."""
        known = set(self.aliases) | set(self.flags) | {"help", "help-all", "version"}
        for arg in argv:
            if arg == "--":
                break
            if not arg.startswith("--"):
                continue
            name = arg[2:].split("=", 1)[0]
            if name not in known and "." not in name:  # --Class.trait=value is traitlets' own spelling
                raise ValueError(f"unknown option --{name} (--help-all lists them)")

    def setup_logging(self) -> None:
        logging.basicConfig(level=logging.getLevelName(self.log_level), format=LOG_FORMAT)

    def fail(self, message: str) -> int:
        print(f"{self.label}: {message}", file=sys.stderr)
        return 2

    def missing_hub_environment(self) -> list[str]:
        return [v for v in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN") if not os.environ.get(v)]

    def run(self) -> int:
        raise NotImplementedError

    @staticmethod
    def run_until_signalled(main: Any) -> None:
        """Run the coroutine ``main`` until it returns or SIGTERM/SIGINT arrives; then cancel it.

        The handlers are the loop's own, so a stop request is honoured even when this process was
        started with SIGINT ignored (a hub started from a background job passes that on, and
        JupyterHub stops its services with SIGINT, waiting 10 s for each before SIGTERM). ``main``'s
        ``finally`` blocks run: connections and listeners close before the process exits.
        """

        async def until_signalled() -> None:
            task = asyncio.ensure_future(main)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, task.cancel)
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

        asyncio.run(until_signalled())

    def start(self) -> None:
        self.exit(self.run())

    @classmethod
    def main(cls, argv: list[str] | None = None) -> int:
        """Parse ``argv`` (default: ``sys.argv[1:]``) and run; the exit code (2: bad options)."""
        app = cls()
        try:
            app.initialize(argv)
        except (TraitError, ValueError) as exc:
            return app.fail(f"invalid option: {exc}")
        app.setup_logging()
        return app.run()


def _as_trait_value(name: str, trait: TraitType, value: Any) -> Any:
    """``value`` checked by ``trait``; a string for a non-string trait is read as on the command line."""
    if isinstance(value, str) and not isinstance(trait, Unicode):
        value = trait.from_string(value)
    holder = type("Check", (HasTraits,), {name: copy.copy(trait)})()  # a trait validates on an owner
    setattr(holder, name, value)
    return getattr(holder, name)


def configure_keys(*classes: type) -> dict[str, TraitType]:
    """The keys of ``configure(c, <service>={...})``: the traits tagged ``configure=True``, in order."""
    keys: dict[str, TraitType] = {}
    for cls in classes:
        for name, trait in own_traits(cls).items():
            if trait.metadata.get("configure") or issubclass(cls, HubOptions):
                keys[name] = trait
    return keys


def refuse_unknown(what: str, options: dict, keys: dict[str, TraitType], word: str = "key") -> None:
    """A ValueError naming the keys of ``options`` that are not in ``keys``, and the known ones."""
    unknown = sorted(set(options) - set(keys))
    if unknown:
        raise ValueError(
            f"configure(c, {what}={{...}}): unknown {word}(s) {', '.join(unknown)}; known: {', '.join(keys)}"
        )


def check_options(what: str, options: dict, keys: dict[str, TraitType], word: str = "key") -> dict:
    """``options`` checked against ``keys``: an unknown key or a bad value is a ValueError naming it."""
    refuse_unknown(what, options, keys, word)
    checked = {}
    for key, value in options.items():
        if value is None:
            checked[key] = None
            continue
        try:
            checked[key] = _as_trait_value(key, keys[key], value)
        except (TraitError, ValueError) as exc:
            raise ValueError(f"configure(c, {what}={{...}}): {key}: {exc}") from None
    return checked


def command_line(app: type, values: dict, order: Iterable[str], written: dict | None = None) -> list[str]:
    """``--<option>=<value>`` for each of ``order`` present in ``values``: switches as true/false,
    durations in seconds, the rest as written (``written`` holds values to pass on unchanged)."""
    traits = own_traits(app)
    args = []
    for name in order:
        if values.get(name) is None:
            continue
        trait, value = traits[name], values[name]
        if written and name in written:
            text = str(written[name])
        elif isinstance(trait, Bool):
            text = "true" if value else "false"
        elif isinstance(trait, Duration):
            text = f"{value:g}"
        else:
            text = str(value)
        args.append(f"--{cli_name(name, trait)}={text}")
    return args


class HubOptions(Configurable):
    """The hub's side of a service (its name, URL, environment): ``configure()`` keys only, not
    options of the service's process."""


__all__ = [
    "LOG_FORMAT",
    "HubOptions",
    "ServiceApp",
    "Switch",
    "check_options",
    "cli_name",
    "command_line",
    "configure_keys",
    "own_traits",
    "refuse_unknown",
]
