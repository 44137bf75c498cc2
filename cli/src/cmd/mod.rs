//! Subcommand dispatch: one module per subcommand.

use std::process::ExitCode;

use crate::Command;

pub(crate) mod measure;

pub(crate) fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Measure(args) => measure::run(args),
    }
}
