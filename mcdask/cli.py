"""The ``mcdask`` command. Each subcommand lives in the module that owns its job and is
imported only when used, so ``mcdask --help`` stays fast (no TensorFlow import)."""

from __future__ import annotations

import importlib

import click

#: subcommand -> "module:attribute" of a click command
COMMANDS = {
    "demo": ("mcdask.commands:demo", "Stream synthetic frames through a local cluster and check them."),
    "run": ("mcdask.commands:run", "Stream a source through a plan on a running Dask scheduler."),
    "status": ("mcdask.dashboard.status_cli:status", "Show a running deployment, its streams and devices."),
    "plan": ("mcdask.planning.cli:plan", "Choose a task assignment for every device count 1..N."),
    "profile": ("mcdask.profiling.cli:profile", "Measure every worker's layers and the links between them."),
    "farm": ("cluster.cli:farm", "Emulate a farm of small devices on this machine."),
    "bench": ("bench.cli:bench", "Benchmark the farm beside the published Pi farm and Jetson TX2."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        target, help_ = COMMANDS[name]
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            reason = str(e)  # `e` is unbound once the except block ends

            @click.command(name=name, help=f"{help_} (unavailable: {reason})")
            def missing():
                raise click.ClickException(f"'{name}' is not available in this installation: {reason}")
            return missing

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcdask")
def main():
    """Real-time recognition split across a crowd of small devices, on Dask."""


if __name__ == "__main__":
    main()
