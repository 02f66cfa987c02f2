//! The `sessiongate` command: parse the command line, start logging, and hand over to the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sessiongate::Config;

#[derive(Parser)]
#[command(
    version,
    about = "A reverse proxy that puts a session login in front of any HTTP backend"
)]
#[command(args_conflicts_with_subcommands = true, arg_required_else_help = true)]
struct Cli {
    /// Run the proxy with this config file.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Read one password from stdin and print its argon2id hash for `[[users]] password_hash`.
    HashPassword,
    /// Check a config file and what it names (listeners, TLS files, upstream, Redis): one
    /// ok/warning/problem line each; exit 1 on any problem, 0 otherwise.
    Check {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
    },
    /// Ask the running sessiongate for `{prefix}/healthz` on its listener: exit 0 when it
    /// answers 200, 1 otherwise (a container's HEALTHCHECK).
    Healthcheck {
        #[arg(long, value_name = "PATH", default_value = sessiongate::cli::healthcheck::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print a new TOTP secret for a user, its otpauth:// URI, a QR code to scan, and the line
    /// to paste into their [[users]] entry.
    TotpSetup {
        /// The [[users]] name the secret is for (shown in the authenticator app).
        #[arg(long, value_name = "NAME")]
        user: String,
        /// The issuer the authenticator app shows beside the name.
        #[arg(long, value_name = "NAME", default_value = "sessiongate")]
        issuer: String,
    },
    /// List a user's passkeys, or remove them (a lost device), where the config keeps them.
    Passkeys {
        #[command(subcommand)]
        action: PasskeysCommand,
    },
    /// Start a demo on 127.0.0.1:8080 in front of a built-in backend, with a demo user.
    Demo,
    /// Print what sessiongate would decide for a request, and the rule that decides it.
    Explain {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// The logged-in user (a [[users]] name, or PROVIDER:NAME for a provider's user);
        /// without it, a request with no session.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// A group a provider's user has (as the provider's groups claim says); repeat it for
        /// several.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// The request method, e.g. GET.
        method: String,
        /// A path (/admin/users) or a URL with a host (https://app.example.com/admin/users).
        url: String,
    },
}

#[derive(Subcommand)]
enum PasskeysCommand {
    /// One line per passkey of the user: id, name, added, last used, backed up. Works while
    /// sessiongate runs. Exit 2 when the user has none.
    List {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// The [[users]] name.
        #[arg(long, value_name = "NAME")]
        user: String,
    },
    /// Remove one passkey of the user (--id=ID, as `list` prints it; an id may start with '-')
    /// or all of them (--all).
    /// With session.state_dir, stop sessiongate first. Exit 2 when there is no such passkey.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Remove {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// The [[users]] name.
        #[arg(long, value_name = "NAME")]
        user: String,
        /// The passkey's id.
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Every passkey of the user.
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (cli.command, cli.config) {
        (Some(Command::HashPassword), _) => {
            sessiongate::cli::hash_password::run(std::io::stdin()).map(|hash| println!("{hash}"))
        }
        (Some(Command::TotpSetup { user, issuer }), _) => {
            sessiongate::credentials::totp::setup_text(&user, &issuer).map(|text| print!("{text}"))
        }
        (Some(Command::Check { config }), _) => {
            let report = sessiongate::cli::check::check_file(&config);
            print!("{report}");
            match report.problems() {
                0 => Ok(()),
                1 => Err(format!("{}: 1 problem", config.display())),
                n => Err(format!("{}: {n} problems", config.display())),
            }
        }
        (
            Some(Command::Explain {
                config,
                user,
                groups,
                method,
                url,
            }),
            _,
        ) => Config::load(&config)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                sessiongate::cli::explain::explain(&c, user.as_deref(), &groups, &method, &url)
            })
            .map(|text| print!("{text}")),
        // Its own one line, on stdout when healthy and on stderr otherwise.
        (Some(Command::Healthcheck { config }), _) => return healthcheck(&config),
        (Some(Command::Passkeys { action }), _) => return passkeys(action),
        (Some(Command::Demo), _) => {
            sessiongate::ops::logging::init(sessiongate::ops::logging::LogFormat::Text);
            sessiongate::cli::demo::run().map_err(|e| e.to_string())
        }
        // The config is read before logging starts: it says the log format. Its errors go to
        // standard error either way.
        (None, Some(path)) => Config::load(&path)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                sessiongate::ops::logging::init(c.log);
                sessiongate::run(c).map_err(|e| e.to_string())
            }),
        (None, None) => Err("nothing to do: pass --config PATH (see --help)".into()),
    };
    sessiongate::ops::logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessiongate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck(config: &Path) -> ExitCode {
    match sessiongate::cli::healthcheck::run(config) {
        Ok(healthy) => {
            println!("healthcheck: {healthy}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("healthcheck: {why}");
            ExitCode::FAILURE
        }
    }
}

/// `passkeys list|remove`: exit 2, not 1, when the user has no such passkey.
fn passkeys(command: PasskeysCommand) -> ExitCode {
    use sessiongate::cli::passkeys::{Action, Which, run};
    let (config, user, action) = match command {
        PasskeysCommand::List { config, user } => (config, user, Action::List),
        PasskeysCommand::Remove {
            config, user, id, ..
        } => {
            let which = id.map_or(Which::All, Which::Id);
            (config, user, Action::Remove(which))
        }
    };
    match run(&config, &user, &action) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sessiongate: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
