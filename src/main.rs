//! The `pgsched` command line: parses arguments and calls one function per command.

use anyhow::Context;
use clap::{Parser, Subcommand};
use pgsched::spec::{self, Kind};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "pgsched", version, about = "Declarative, file-driven job scheduler for PostgreSQL")]
struct Cli {
    /// The spec directory.
    #[arg(long, global = true, env = "PGSCHED_DIR", default_value = ".")]
    dir: PathBuf,
    /// The database; without it, the embedded default PostgreSQL under .pgsched/ is used.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and check every spec, offline. Exit 0 valid, 1 invalid.
    Validate,
    /// Write the JSON Schemas of the spec kinds.
    Schema {
        /// Directory to write into; without it, the umbrella schema is printed.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PGSCHED_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate => Ok(validate(&cli.dir)),
        Command::Schema { out } => schema(out),
    }
}

fn validate(dir: &std::path::Path) -> ExitCode {
    let loaded = spec::load_dir(dir);
    if !loaded.is_valid() {
        for e in &loaded.errors {
            eprintln!("{e}");
        }
        let files = loaded
            .errors
            .iter()
            .map(|e| &e.file)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        eprintln!(
            "{} in {}",
            counted(loaded.errors.len(), "error"),
            counted(files, "file")
        );
        return ExitCode::from(1);
    }
    let count = |k: Kind| loaded.objects.iter().filter(|o| o.kind == k).count();
    println!(
        "{} is valid: {} in {} ({})",
        dir.display(),
        counted(loaded.objects.len(), "object"),
        counted(loaded.files.len(), "file"),
        Kind::ALL
            .iter()
            .map(|k| counted(count(*k), k.slug()))
            .collect::<Vec<_>>()
            .join(", "),
    );
    ExitCode::SUCCESS
}

fn schema(out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match out {
        Some(dir) => {
            let written = spec::schema::write_schemas(&dir)
                .with_context(|| format!("writing schemas to {}", dir.display()))?;
            for path in written {
                println!("wrote {}", path.display());
            }
        }
        None => print!("{}", spec::schema::all_schemas().pop().expect("umbrella").1),
    }
    Ok(ExitCode::SUCCESS)
}

/// `1 file`, `2 files`.
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
