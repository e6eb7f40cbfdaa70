//! `lifeboat completion bash|zsh|fish`: shell completion scripts generated from the command
//! definitions, so they never fall behind the commands.

use anyhow::Result;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub(crate) struct CompletionArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

pub(crate) fn run<C: CommandFactory>(args: CompletionArgs) -> Result<()> {
    let mut command = C::command();
    clap_complete::generate(args.shell, &mut command, "lifeboat", &mut std::io::stdout());
    Ok(())
}
