//! `micro completions SHELL`.

use std::process::ExitCode;

use clap::Args;
use clap_complete::Shell;

/// `micro completions` options.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  micro completions bash > ~/.local/share/bash-completion/completions/micro
  micro completions zsh > \"${fpath[1]}/_micro\"
  micro completions fish > ~/.config/fish/completions/micro.fish")]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub(super) fn run(args: CompletionsArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut cmd = super::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "micro", &mut out);
    super::output::raw(&out)?;
    Ok(ExitCode::SUCCESS)
}
