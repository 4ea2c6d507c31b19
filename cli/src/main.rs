//! `palisade`: see the library (`palisade_cli`) and docs/cli.md.

use clap::Parser;
use palisade_cli::{Cli, error::exit, run};

fn main() {
    // clap exits with 2 on a usage error; 2 means "not blocked" here (docs/cli.md).
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(if e.use_stderr() {
            exit::ERROR
        } else {
            exit::OK
        })
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("palisade: cannot start the async runtime: {e}");
            std::process::exit(exit::ERROR);
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(out) => {
            print!("{out}");
            std::process::exit(exit::OK);
        }
        Err(e) => {
            let code = e.exit_code();
            // `{:#}`: the error and its causes on one line.
            eprintln!("palisade: {:#}", anyhow::Error::new(e));
            std::process::exit(code);
        }
    }
}
