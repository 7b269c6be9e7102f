//! The `pgsched` command line: parses arguments and calls one function per command.

use anyhow::Context;
use clap::{Parser, Subcommand};
use pgsched::embedded::EmbeddedPostgres;
use pgsched::reconcile::{self, Outcome};
use pgsched::spec::{self, Kind};
use pgsched::{plan, store};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "pgsched",
    version,
    about = "Declarative, file-driven job scheduler for PostgreSQL"
)]
struct Cli {
    /// The spec directory.
    #[arg(long, global = true, env = "PGSCHED_DIR", default_value = ".")]
    dir: PathBuf,
    /// The database; without it, the embedded default PostgreSQL under .pgsched/ is used.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// A SQL file run on the database before anything else, e.g. the application tables of a
    /// demo (`make run` uses examples/demo-schema.sql). Should be idempotent.
    #[arg(long, global = true, env = "PGSCHED_SETUP_SQL")]
    setup_sql: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and check every spec, offline. Exit 0 valid, 1 invalid.
    Validate,
    /// Show what `apply` would change. Exit 0 no changes, 1 error, 2 changes pending.
    Plan {
        /// `text` (a coloured diff on a terminal) or `json`.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Reconcile once: apply the plan in one transaction. Exit 0 applied or nothing to do, 1 error.
    Apply {
        /// Allow a reconcile that deletes every managed object (an empty directory).
        #[arg(long)]
        allow_empty: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Write the JSON Schemas of the spec kinds.
    Schema {
        /// Directory to write into; without it, the umbrella schema is printed.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Text,
    Json,
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
        Command::Plan { output } => runtime()?.block_on(async move {
            let (mut client, _server) = open_database(&cli).await?;
            let outcome = reconcile::plan(&mut client, &cli.dir).await?;
            Ok(report_outcome(outcome, output, false))
        }),
        Command::Apply {
            allow_empty,
            output,
        } => runtime()?.block_on(async move {
            let (mut client, _server) = open_database(&cli).await?;
            let outcome = reconcile::apply(&mut client, &cli.dir, allow_empty).await?;
            Ok(report_outcome(outcome, output, true))
        }),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Connects to `--database-url`, or starts (or reuses) the embedded default under `.pgsched/`.
/// The returned server, if any, stops when dropped.
async fn open_database(
    cli: &Cli,
) -> anyhow::Result<(tokio_postgres::Client, Option<EmbeddedPostgres>)> {
    let (client, server) = connect_database(cli.database_url.as_deref()).await?;
    if let Some(path) = &cli.setup_sql {
        let sql = std::fs::read_to_string(path)
            .with_context(|| format!("reading --setup-sql {}", path.display()))?;
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), store::describe_pg_error(&e)))?;
    }
    Ok((client, server))
}

async fn connect_database(
    url: Option<&str>,
) -> anyhow::Result<(tokio_postgres::Client, Option<EmbeddedPostgres>)> {
    match url {
        Some(url) => Ok((store::connect(url).await?, None)),
        None => {
            let server =
                tokio::task::spawn_blocking(|| EmbeddedPostgres::start(Path::new(".pgsched")))
                    .await??;
            tracing::info!(
                socket = %server.socket_dir().display(),
                "using the embedded PostgreSQL in .pgsched/ (give --database-url to use another)"
            );
            let client = store::connect(&server.connection_string("postgres")).await?;
            Ok((client, Some(server)))
        }
    }
}

fn style() -> plan::Style {
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    if colour {
        plan::Style::COLOR
    } else {
        plan::Style::PLAIN
    }
}

/// Prints a plan or apply outcome; returns the exit status the command promises.
fn report_outcome(outcome: Outcome, output: Output, applying: bool) -> ExitCode {
    match outcome {
        Outcome::Invalid(errors) => {
            print_spec_errors(&errors);
            eprintln!("Nothing was changed: fix the errors above first.");
            ExitCode::from(1)
        }
        Outcome::Planned(report) | Outcome::RefusedWipeOut(report) | Outcome::Applied(report)
            if report.has_errors() =>
        {
            print_report(&report, output);
            print_spec_errors(&report.checks.errors);
            eprintln!("Nothing was changed: the checks against the database failed.");
            ExitCode::from(1)
        }
        Outcome::RefusedWipeOut(report) => {
            print_report(&report, output);
            eprintln!(
                "Refused: this would delete every object pgsched manages ({}). If the spec directory \
                 is meant to be empty, run again with --allow-empty.",
                report.plan.managed_before
            );
            ExitCode::from(1)
        }
        Outcome::Planned(report) => {
            print_report(&report, output);
            if report.plan.deletes_everything() {
                eprintln!("Warning: this plan deletes every object pgsched manages; apply will refuse it without --allow-empty.");
            }
            if report.plan.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Outcome::Applied(report) => {
            print_report(&report, output);
            if output == Output::Text && applying && !report.plan.is_empty() {
                let s = report.plan.summary();
                println!(
                    "Apply complete: {} added, {} changed, {} deleted.",
                    s.add, s.change, s.delete
                );
            }
            ExitCode::SUCCESS
        }
    }
}

fn print_report(report: &reconcile::PlanReport, output: Output) {
    match output {
        Output::Text => {
            print!("{}", plan::render_text(&report.plan, style()));
            if !report.checks.unchecked.is_empty() {
                println!("\nNot checked against the database:");
                for note in &report.checks.unchecked {
                    println!("  {note}");
                }
            }
        }
        Output::Json => {
            let mut notes = std::collections::BTreeMap::new();
            notes.insert(
                "unchecked".to_string(),
                serde_json::json!(report.checks.unchecked),
            );
            notes.insert(
                "errors".to_string(),
                serde_json::json!(report
                    .checks
                    .errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()),
            );
            notes.insert(
                "deletesEverything".to_string(),
                serde_json::json!(report.plan.deletes_everything()),
            );
            println!(
                "{}",
                serde_json::to_string_pretty(&plan::render_json(&report.plan, &notes))
                    .expect("JSON serialises")
            );
        }
    }
}

fn print_spec_errors(errors: &[spec::SpecError]) {
    for e in errors {
        eprintln!("{e}");
    }
    let files = errors
        .iter()
        .map(|e| &e.file)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if !errors.is_empty() {
        eprintln!(
            "{} in {}",
            counted(errors.len(), "error"),
            counted(files, "file")
        );
    }
}

fn validate(dir: &std::path::Path) -> ExitCode {
    let loaded = spec::load_dir(dir);
    if !loaded.is_valid() {
        print_spec_errors(&loaded.errors);
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
