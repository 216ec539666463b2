"""The ``mcdask`` command. Each subcommand lives in the module that owns its job and is
imported only when used, so ``mcdask --help`` stays fast (no TensorFlow import). An error no
subcommand expected is one line on stderr and exit status 1 (``mcdask.errors``); ``--debug``
(or ``MCDASK_DEBUG=1``) shows its traceback instead."""

from __future__ import annotations

import importlib
import os
import traceback

import click

from mcdask.errors import McdaskError, exit_code

#: subcommand -> "module:attribute" of a click command
COMMANDS = {
    "demo": ("mcdask.commands:demo", "Stream synthetic frames through a local cluster and check them."),
    "run": ("mcdask.commands:run", "Stream a source through a plan on a running Dask scheduler."),
    "batch": ("mcdask.batch_command:batch", "Classify a whole dataset in batches of frames, resumable."),
    "status": ("mcdask.dashboard.status_cli:status", "Show a running deployment, its streams and devices."),
    "plan": ("mcdask.planning.cli:plan", "Choose a task assignment for every device count 1..N."),
    "profile": ("mcdask.profiling.cli:profile", "Measure every worker's layers and the links between them."),
    "farm": ("cluster.cli:farm", "Emulate a farm of small devices on this machine."),
    "bench": ("bench.cli:bench", "Benchmark the farm beside the published Pi farm and Jetson TX2."),
    "certs": ("mcdask.security.cli:certs", "Mutual TLS: a CA and certificates for devices, clients, scheduler."),
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

    def invoke(self, ctx):
        """Run the subcommand; what it did not expect becomes one line (``--debug``: a traceback)."""
        debug = ctx.params.get("debug", False)
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            if debug and e.__cause__ is not None:
                traceback.print_exception(e.__cause__)
            raise
        except (click.exceptions.Exit, click.Abort):   # --help, ctx.exit(), Ctrl-C: click's own
            raise
        except Exception as e:
            if debug:
                raise
            click.echo(f"mcdask: error: {one_line(e)} (--debug shows the traceback)", err=True)
            ctx.exit(exit_code(e))

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def one_line(e: BaseException) -> str:
    """What went wrong, on one line: mcdask's own message, a file's name and the OS's reason,
    else the exception's type and message."""
    if isinstance(e, McdaskError):
        text = str(e)
    elif isinstance(e, OSError) and e.filename is not None:
        text = f"{e.filename}: {e.strerror or e}"
    else:
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return " ".join(text.split())


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcdask")
@click.option("--debug", is_flag=True, envvar="MCDASK_DEBUG",
              help="Show the traceback of an error instead of one line (also MCDASK_DEBUG=1).")
@click.option("-v", "--verbose", is_flag=True, envvar="MCDASK_VERBOSE",
              help="Let TensorFlow's, absl's and OpenCV's logs through, here and in local workers.")
@click.option("-q", "--quiet", "quiet_", is_flag=True, envvar="MCDASK_QUIET",
              help="No progress bar and no notes: only results and errors.")
def main(debug, verbose, quiet_):
    """Real-time recognition split across a crowd of small devices, on Dask.

    Exit status: 0 done; 1 an error (bad input, a plan that cannot be deployed, anything
    unexpected: one line on stderr); 2 a wrong command line; 3 a stream stopped early."""
    from mcdask.runtime import quiet
    from mcdask.runtime.malloc import trim_freed_memory

    quiet.let_through() if verbose else quiet.quiet()
    trim_freed_memory()   # a long stream's client gives freed frames back to the OS
    if quiet_:
        os.environ["MCDASK_QUIET"] = "1"


if __name__ == "__main__":
    main()
