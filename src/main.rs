//! The `pgsched` command line: parses arguments and calls one function per command.

mod cli;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cli::report::{counted, print_spec_errors, report_outcome};
use cli::tables::{print_runs, print_status};
use pgsched::embedded::EmbeddedPostgres;
use pgsched::reconcile;
use pgsched::spec::{self, Kind};
use pgsched::store;
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
    /// Log lines as `text` for people or `json` (one object per line) for log collectors.
    /// The level comes from PGSCHED_LOG (`info`, `debug`, `pgsched=debug`...).
    #[arg(long, global = true, env = "PGSCHED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug, Clone)]
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
    /// The sidecar: reconcile on every change of the spec directory and every --resync,
    /// execute due runs, expire Timeouts, write status files and serve /healthz, /readyz and
    /// /metrics, until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Enqueue an on-demand run of a job, or one run per line of a --params-file.
    Trigger(TriggerArgs),
    /// Jobs, chains and timeouts with their last and next run.
    Status {
        name: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// A job's run history, newest first.
    Runs {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: i64,
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

/// `pgsched trigger`'s arguments.
#[derive(clap::Args, Debug, Clone)]
struct TriggerArgs {
    /// The job or chain.
    name: String,
    /// Parameters as a JSON object, overlaid on the job's `params` (default `{}`).
    #[arg(long, conflicts_with = "params_file")]
    params: Option<String>,
    /// One run per line of this file, each line a JSON object of parameters (blank lines
    /// skipped; `-` reads standard input). The whole file is checked first: a bad line
    /// enqueues nothing. The runs are enqueued in one transaction, all or none.
    #[arg(long, value_name = "FILE")]
    params_file: Option<PathBuf>,
    /// Parameter sets per `pgsched.trigger_many` call with --params-file.
    #[arg(long, value_name = "N", requires = "params_file",
          default_value_t = store::report::TRIGGER_BATCH,
          value_parser = parse_batch_size)]
    batch_size: usize,
    /// When to run (RFC 3339), every run with --params-file; default now.
    #[arg(long)]
    at: Option<String>,
}

/// `pgsched run`'s flags.
#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Write status files under this directory (same relative paths) instead of beside
    /// the specs: for a read-only spec mount (git-sync, ConfigMap).
    #[arg(long, env = "PGSCHED_STATUS_DIR")]
    status_dir: Option<PathBuf>,
    /// Address for /healthz, /readyz and /metrics; `off` serves nothing.
    #[arg(long, env = "PGSCHED_LISTEN", default_value = "127.0.0.1:9187")]
    listen: String,
    /// Reconcile this often even without file events (lost events, drift repair).
    #[arg(long, default_value = "60s", value_parser = parse_interval_arg)]
    resync: std::time::Duration,
    /// Quiet time after the last file event before the directory is read again.
    #[arg(long, default_value = "100ms", value_parser = parse_duration_arg)]
    debounce: std::time::Duration,
    /// How often status files are refreshed from the tables (also after every reconcile and,
    /// at most once a second, when a run of this process finishes).
    #[arg(long, default_value = "5s", value_parser = parse_interval_arg)]
    status_interval: std::time::Duration,
    /// Fallback poll interval: the longest a lost notification can delay a run.
    #[arg(long, default_value = "5s", value_parser = parse_interval_arg)]
    poll: std::time::Duration,
    /// Heartbeat interval; a run whose worker misses three beats is recovered.
    #[arg(long, default_value = "2s", value_parser = parse_interval_arg)]
    heartbeat: std::time::Duration,
    /// How long running runs may take to finish on shutdown before they are cancelled.
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    grace: std::time::Duration,
    /// Runs executing at once in this process.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The most runs claimed ahead of the free slots into the local queue; how many are is
    /// adapted to how fast runs finish (none for slow jobs). 0 claims only into free slots.
    #[arg(long, default_value_t = 1000)]
    prefetch: usize,
    /// Allow a reconcile that deletes every managed object.
    #[arg(long)]
    allow_empty: bool,
    /// Do not watch or reconcile the spec directory; only execute (extra executor replicas).
    #[arg(long)]
    no_reconcile: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr, so that stdout holds only what the command prints.
fn init_logs(format: LogFormat) {
    // tokio-postgres logs the server's NOTICEs at info ("schema already exists, skipping" on
    // every migration check); they are noise unless asked for by name.
    let mut directives = std::env::var("PGSCHED_LOG").unwrap_or_else(|_| "info".into());
    if !directives.contains("tokio_postgres") {
        directives.push_str(",tokio_postgres=warn");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("PGSCHED_LOG={directives:?} is not a log filter ({e}); using info");
        tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn")
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.clone() {
        Command::Validate => Ok(validate(&cli.dir)),
        Command::Schema { out } => schema(out),
        Command::Run(args) => runtime()?.block_on(sidecar(&cli, args)),
        Command::Trigger(args) => runtime()?.block_on(trigger(&cli, args)),
        Command::Status { name, output } => runtime()?.block_on(status(&cli, name, output)),
        Command::Runs {
            name,
            limit,
            output,
        } => runtime()?.block_on(runs(&cli, &name, limit, output)),
        Command::Plan { output } => runtime()?.block_on(plan(&cli, output)),
        Command::Apply {
            allow_empty,
            output,
        } => runtime()?.block_on(apply(&cli, allow_empty, output)),
    }
}

/// `pgsched plan`: what `apply` would change, without changing it.
async fn plan(cli: &Cli, output: Output) -> anyhow::Result<ExitCode> {
    let (mut client, _server) = open_database(cli).await?;
    let outcome = reconcile::plan(&mut client, &cli.dir).await?;
    Ok(report_outcome(outcome, output, false))
}

/// `pgsched apply`: one reconcile, in one transaction.
async fn apply(cli: &Cli, allow_empty: bool, output: Output) -> anyhow::Result<ExitCode> {
    let (mut client, _server) = open_database(cli).await?;
    let outcome = reconcile::apply(&mut client, &cli.dir, allow_empty).await?;
    Ok(report_outcome(outcome, output, true))
}

/// `pgsched validate`: every spec parsed and checked, offline.
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

/// `pgsched schema`: the JSON Schemas, written to a directory or printed.
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

/// `pgsched run`: the sidecar, until a signal stops it.
async fn sidecar(cli: &Cli, args: RunArgs) -> anyhow::Result<ExitCode> {
    // Bind first: a taken port is a start-up error, not a surprise later.
    let listener = match args.listen.as_str() {
        "off" | "" => None,
        addr => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for /healthz, /readyz and /metrics; give --listen another address, or --listen off")
        })?),
    };
    if !args.no_reconcile && !cli.dir.is_dir() {
        anyhow::bail!(
            "the spec directory {} does not exist (give --dir, or PGSCHED_DIR)",
            cli.dir.display()
        );
    }
    // With --database-url and nothing to set up, the sidecar connects by itself and waits for a
    // database that is not up yet (pods start their containers in any order).
    let server = if cli.database_url.is_none() || cli.setup_sql.is_some() {
        open_database(cli).await?.1
    } else {
        None
    };
    let url = match (&cli.database_url, &server) {
        (Some(url), _) => url.clone(),
        (None, Some(server)) => server.connection_string("postgres"),
        (None, None) => unreachable!("open_database returns a server without a URL"),
    };
    if let Some(l) = &listener {
        tracing::info!(address = %l.local_addr()?, "serving /healthz, /readyz and /metrics");
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(stop_on_signals(shutdown.clone()));
    let config = sidecar_config(cli, args, url);
    let result = pgsched::controller::run_sidecar(config, listener, shutdown).await;
    // The embedded server stops here, after everything that used it.
    drop(server);
    result?;
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// The sidecar's settings from `pgsched run`'s flags.
fn sidecar_config(cli: &Cli, args: RunArgs, url: String) -> pgsched::controller::SidecarConfig {
    let mut config = pgsched::controller::SidecarConfig::new(&cli.dir, url);
    config.status_dir = args.status_dir;
    config.resync = args.resync;
    config.debounce = args.debounce;
    config.status_interval = args.status_interval;
    config.allow_empty = args.allow_empty;
    config.reconcile = !args.no_reconcile;
    config.executor.poll = args.poll;
    config.executor.heartbeat = args.heartbeat;
    config.executor.grace = args.grace;
    config.executor.concurrency = args.concurrency.max(1);
    config.executor.prefetch = args.prefetch;
    config
}

/// The first SIGTERM or SIGINT stops gracefully; a second one at once.
async fn stop_on_signals(shutdown: tokio_util::sync::CancellationToken) {
    wait_for_signal().await;
    tracing::info!("stopping (signal received; a second one stops at once)");
    shutdown.cancel();
    wait_for_signal().await;
    tracing::warn!("second signal: stopping now, without waiting for running runs");
    std::process::exit(130);
}

/// `pgsched trigger`: enqueues one run, or one per line of `--params-file`.
async fn trigger(cli: &Cli, args: TriggerArgs) -> anyhow::Result<ExitCode> {
    let at = args.at.as_deref().map(parse_at).transpose()?;
    if let Some(file) = &args.params_file {
        return trigger_file(cli, &args.name, file, at, args.batch_size).await;
    }
    let params: serde_json::Value = serde_json::from_str(args.params.as_deref().unwrap_or("{}"))
        .map_err(|e| anyhow::anyhow!("--params is not JSON: {e}"))?;
    if !params.is_object() {
        anyhow::bail!("--params must be a JSON object, like '{{\"user_id\": 42}}'");
    }
    let (mut client, _server) = open_database(cli).await?;
    pgsched::store::migrations::migrate(&mut client).await?;
    let name = &args.name;
    let id = store::report::trigger(&client, name, &params, at).await?;
    match at {
        Some(at) => println!("run {id} of {name} enqueued for {}", at.to_rfc3339()),
        None => println!("run {id} of {name} enqueued"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `pgsched trigger --params-file`: the file checked whole, then its runs enqueued in one
/// transaction, `batch` per `pgsched.trigger_many` call.
async fn trigger_file(
    cli: &Cli,
    name: &str,
    file: &Path,
    at: Option<chrono::DateTime<chrono::Utc>>,
    batch: usize,
) -> anyhow::Result<ExitCode> {
    // Before connecting: a bad file is reported without touching the database.
    let sets = match cli::params_file::read(file)? {
        Ok(sets) => sets,
        Err(bad) => {
            cli::params_file::print_bad_lines(file, &bad);
            return Ok(ExitCode::from(1));
        }
    };
    let (mut client, _server) = open_database(cli).await?;
    pgsched::store::migrations::migrate(&mut client).await?;
    let started = std::time::Instant::now();
    let ids = store::report::trigger_in_batches(&mut client, name, &sets, at, batch).await?;
    let took = started.elapsed();
    let when = at
        .map(|at| format!(" for {}", at.to_rfc3339()))
        .unwrap_or_default();
    match (ids.first(), ids.last()) {
        (Some(first), Some(last)) => println!(
            "{} of {name} enqueued{when}: first id {first}, last id {last}, in {:.3} s ({:.0} runs/s)",
            counted(ids.len(), "run"),
            took.as_secs_f64(),
            runs_per_second(ids.len(), took),
        ),
        _ => println!(
            "0 runs of {name} enqueued: {} holds no parameter sets",
            cli::params_file::display_name(file)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `--at` as a time.
fn parse_at(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| {
            anyhow::anyhow!(
                "--at {text:?} is not an RFC 3339 time ({e}), e.g. 2026-11-22T10:00:00Z"
            )
        })
}

/// A rate for people: a count over a duration, never a division by zero.
fn runs_per_second(runs: usize, took: std::time::Duration) -> f64 {
    runs as f64 / took.as_secs_f64().max(1e-9)
}

/// `pgsched status`: every object (or one) with its last and next run, and who leads.
async fn status(cli: &Cli, name: Option<String>, output: Output) -> anyhow::Result<ExitCode> {
    let (mut client, _server) = open_database(cli).await?;
    pgsched::store::migrations::migrate(&mut client).await?;
    let objects = store::report::status(&client, name.as_deref()).await?;
    if let Some(name) = &name {
        if objects.is_empty() {
            anyhow::bail!("no job, chain or timeout named {name}");
        }
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&objects)?),
        Output::Text => {
            print_status(&objects);
            if name.is_none() {
                match store::leader::current_leader(&client).await? {
                    Some(who) => println!("\nreconciling: {who}"),
                    None => println!("\nreconciling: no `pgsched run` holds the leadership"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `pgsched runs`: one object's run history, newest first.
async fn runs(cli: &Cli, name: &str, limit: i64, output: Output) -> anyhow::Result<ExitCode> {
    let (mut client, _server) = open_database(cli).await?;
    pgsched::store::migrations::migrate(&mut client).await?;
    let runs = store::report::runs_of(&client, name, limit.max(1)).await?;
    if runs.is_empty() && store::report::status(&client, Some(name)).await?.is_empty() {
        anyhow::bail!("no job, chain or timeout named {name}");
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&runs)?),
        Output::Text => print_runs(&runs),
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_batch_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) | Err(_) => Err("must be a whole number from 1 (e.g. 10000)".into()),
        Ok(n) => Ok(n),
    }
}

fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    pgsched::duration::parse_duration(text).map_err(|e| e.to_string())
}

/// An interval something runs at: zero would spin.
fn parse_interval_arg(text: &str) -> Result<std::time::Duration, String> {
    match parse_duration_arg(text)? {
        d if d.is_zero() => Err("must be longer than 0 (e.g. 500ms, 5s)".into()),
        d => Ok(d),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
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
