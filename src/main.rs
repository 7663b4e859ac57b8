//! The `larder` binary: parse the command line, start logging, run one subcommand, and map
//! its error to a non-zero exit status.

use clap::Parser;
use larder::cli::{self, Cli, Cmd};

fn main() {
    // Before anything else: a stop or drain signal during start-up must wait for the
    // server's handlers, not kill it (larder::server::signals).
    let blocked = larder::server::signals::block();
    let cli = Cli::parse();
    let verbose = match &cli.command {
        Cmd::Serve(args) if args.version => {
            println!("larder {}", env!("CARGO_PKG_VERSION"));
            std::process::exit(0);
        }
        Cmd::Serve(args) => args.verbose,
        _ => {
            let _ = larder::server::signals::unblock();
            0
        }
    };
    let filter = match cli::verbosity_filter(verbose) {
        Some(level) => tracing_subscriber::EnvFilter::new(level),
        None => tracing_subscriber::EnvFilter::try_from_env("LARDER_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: a file or journal gets plain text.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        );
    match cli::log_format() {
        Ok(cli::LogFormat::Json) => builder.json().init(),
        Ok(cli::LogFormat::Text) => builder.init(),
        Err(e) => {
            eprintln!("larder: {e}");
            std::process::exit(2);
        }
    }
    if let Err(e) = blocked {
        tracing::warn!(error = %e, "could not block signals during start-up");
    }
    let threads = match &cli.command {
        Cmd::Serve(args) => args.threads,
        _ => 1,
    };
    let runtime = match cli::runtime(threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("larder: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let mut stdout = std::io::stdout();
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Serve(args) => cli::serve(*args).await.map(|()| 0),
            Cmd::Stats(args) => cli::stats(args, &mut stdout).await.map(|()| 0),
            Cmd::Tubes(args) => cli::tubes::run(args, &mut stdout).await.map(|()| 0),
            Cmd::Put(args) => cli::put(args, &mut stdout).await.map(|()| 0),
            Cmd::Reserve(args) => cli::reserve(args, &mut stdout).await,
            Cmd::Peek(args) => cli::job::peek(args, &mut stdout).await.map(|()| 0),
            Cmd::Wal(cli::WalCmd::Verify(args)) => cli::wal_verify(&args, &mut stdout),
            Cmd::Wal(cli::WalCmd::Dump(args)) => cli::wal_dump(&args, &mut stdout).map(|()| 0),
            Cmd::Tube(cli::tube::TubeCmd::Config(args)) => {
                cli::tube::config(args, &mut stdout).await.map(|()| 0)
            }
            Cmd::Tube(cli::tube::TubeCmd::Show(args)) => {
                cli::tube::show(args, &mut stdout).await.map(|()| 0)
            }
            Cmd::Dlq(cmd) => cli::dlq::run(cmd, &mut stdout).await.map(|()| 0),
            Cmd::Cluster(cmd) => cli::cluster::run(cmd, &mut stdout).await.map(|()| 0),
            Cmd::Auth(cmd) => cli::secure::auth(
                cmd,
                &mut std::io::stdin().lock(),
                &mut stdout,
                &mut std::io::stderr(),
            )
            .map(|()| 0),
        }
    });
    match result {
        Ok(code) => std::process::exit(code),
        // The reader of standard output went away (`larder stats | head`): nothing more to
        // say, and nothing went wrong.
        Err(e) if cli::is_broken_pipe(&e) => std::process::exit(0),
        Err(e) => {
            eprintln!("larder: {e:#}");
            std::process::exit(1);
        }
    }
}
