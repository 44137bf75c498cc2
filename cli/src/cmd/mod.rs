//! Subcommand dispatch: one module per subcommand.

use std::process::ExitCode;

use crate::Command;

pub(crate) mod broker_client;
pub(crate) mod check;
pub(crate) mod demo;
pub(crate) mod get_resource;
pub(crate) mod guest;
pub(crate) mod image;
pub(crate) mod image_sign;
pub(crate) mod kbs;
pub(crate) mod measure;
pub(crate) mod policy;
pub(crate) mod sim;

pub(crate) fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Measure(args) => measure::run(args),
        Command::Check(args) => check::run(args),
        Command::Guest(args) => guest::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Kbs(args) => kbs::run(args),
        Command::Image(args) => image::run(args),
        Command::Sim(args) => sim::run(args),
        Command::Policy(args) => policy::run(args),
    }
}
