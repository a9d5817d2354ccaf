//! `echod completions SHELL` and `echod man`: generated from the command
//! line itself (clap_complete, clap_mangen), so they never drift from it.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;

/// The completion script for `shell`, on standard output.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut command = Cli::command();
    let mut stdout = std::io::stdout().lock();
    clap_complete::generate(shell, &mut command, "echod", &mut stdout);
    stdout.flush().context("cannot write the completion script")
}

/// echod(1) on standard output, or, with `out_dir`, one page per command
/// (`echod.1`, `echod-serve.1`, `echod-serve-identity.1`, …) written there.
pub fn man(out_dir: Option<&Path>) -> anyhow::Result<()> {
    let command = Cli::command();
    match out_dir {
        Some(dir) => clap_mangen::generate_to(command, dir)
            .with_context(|| format!("cannot write the manual pages to {}", dir.display())),
        None => {
            let mut stdout = std::io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut stdout)
                .and_then(|()| stdout.flush())
                .context("cannot write the manual page")
        }
    }
}
