//! The `hostscan` binary: parses the command line and hands over to the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hostscan::cli::{self, ClientCommand, ProbeArgs};
use hostscan::config::{DatabaseArgs, ServeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "hostscan",
    version,
    about = "Agentless host scanner over SSH, with a gRPC service"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. info or hostscan=debug.
    #[arg(long, env = "HOSTSCAN_LOG", global = true)]
    log: Option<String>,
    /// Log format: text or json.
    #[arg(
        long,
        env = "HOSTSCAN_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once per process: the size of the `serve` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC service.
    #[command(args_override_self = true)]
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Delete finished scans older than an age, once (what serve
    /// --retention does in the background).
    Prune {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Age, e.g. 90d, 12w, 36h.
        #[arg(long, value_parser = hostscan::config::parse_age)]
        older_than: std::time::Duration,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Copy every scan and host key pin from one database to another
    /// (e.g. the embedded database into PostgreSQL), idempotently.
    CopyDb {
        /// Source database URL (postgres://… or sqlite:///path.db).
        #[arg(long, hide_env_values = true)]
        from: String,
        /// Destination database URL.
        #[arg(long, hide_env_values = true)]
        to: String,
    },
    /// Scan one host from this terminal: no server, no database.
    #[command(args_override_self = true)]
    Probe(ProbeArgs),
    #[command(flatten)]
    Client(ClientCommand),
}

fn init_logging(filter: Option<&str>, default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter.unwrap_or(default))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    ctrl_c.await.ok();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.ok();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Serve(_)
        | Command::Migrate { .. }
        | Command::Prune { .. }
        | Command::CopyDb { .. } => "info",
        _ => "warn",
    };
    init_logging(cli.log.as_deref(), default_log, cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => match args.validate() {
            Ok(config) => hostscan::serve::run(config, shutdown_signal(), None)
                .await
                .map(|()| 0),
            Err(e) => Err(e.into()),
        },
        Command::Migrate { database } => match database.database() {
            Ok(database) => hostscan::serve::migrate(&database).await.map(|()| 0),
            Err(e) => Err(e.into()),
        },
        Command::Prune {
            database,
            older_than,
            dry_run,
        } => match database.database() {
            Ok(database) => hostscan::serve::prune(&database, older_than, dry_run)
                .await
                .map(|()| 0),
            Err(e) => Err(e.into()),
        },
        Command::CopyDb { from, to } => hostscan::serve::copy_db(&from, &to).await.map(|()| 0),
        Command::Probe(args) => cli::probe(args).await,
        Command::Client(command) => cli::client(command).await,
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
