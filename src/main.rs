//! The `authql` binary: parse the command line, set up logging, run the
//! subcommand (`serve` by default, `migrate`, `print-schema`).

use std::process::ExitCode;

use authql::config::{Cli, Command, KeysCommand};
use authql::{app, graphql, telemetry, App};
use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve(Box::new(cli.serve))) {
        Command::Serve(config) => {
            telemetry::init(&config.log);
            match App::build(*config).await {
                Ok(app) => app.run_until(app::shutdown_signal()).await,
                Err(e) => Err(e),
            }
        }
        Command::Migrate(config) => {
            telemetry::init(&config.log);
            app::open_database(&config.database, true)
                .await
                .map(|_| tracing::info!("migrations applied"))
        }
        Command::Keys(KeysCommand::Rotate(config)) => {
            telemetry::init(&config.log);
            match app::open_database(&config.database, true).await {
                Ok(store) => authql::auth::keys::rotate(store.as_ref(), config.jwt_algorithm)
                    .await
                    .map(|kid| println!("{kid}")),
                Err(e) => Err(e),
            }
        }
        Command::Keys(KeysCommand::List(config)) => {
            telemetry::init(&config.log);
            match app::open_database(&config.database, true).await {
                Ok(store) => store.signing_keys().await.map_err(Into::into).map(|keys| {
                    for key in keys {
                        println!(
                            "{}\t{}\t{}",
                            key.kid,
                            key.algorithm.name(),
                            key.created_at.to_rfc3339()
                        );
                    }
                }),
                Err(e) => Err(e),
            }
        }
        Command::PrintSchema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("authql: {e:#}");
            ExitCode::FAILURE
        }
    }
}
