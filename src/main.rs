//! The `gatehouse` command: parses the command line and wires the library. The only place
//! `anyhow` is used.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use gatehouse::base::password::hash_password;
use gatehouse::base::Secret;
use gatehouse::flow::sms_factor::FactorState;
use gatehouse::script::ScriptState;
use gatehouse::web;
use gatehouse::{Builder, Mode};

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Authentication server whose login flows are Rhai scripts"
)]
struct Cli {
    /// The configuration file (every command reads it).
    #[arg(long, global = true, default_value = "config/gatehouse.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the config and scripts, watch them for changes, and serve HTTP.
    Serve {
        /// Overrides `server.listen` of the config.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate the config, compile every script and run init of the enabled ones; serve nothing.
    Check,
    /// Run the script tests (scripts/tests/*.toml, or the FILEs given) offline: the real host,
    /// no network, no server. One line per test; exit status 1 if any fails.
    Test { files: Vec<PathBuf> },
    /// Read a password from standard input and print its argon2id hash for config/users.toml.
    HashPassword,
    /// Manage users of the embedded directory.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// The person-authentication scripts (jans-cli's get-config-scripts-by-type, -by-inum and
    /// put-config-scripts): list, show, enable, disable, set and unset properties. Edits keep
    /// the file's comments, are checked before they are written, and a running server applies
    /// them by its usual reload.
    Scripts {
        #[command(subcommand)]
        command: ScriptsCommand,
    },
    /// The acrs (jans-cli's put-acrs).
    Acrs {
        #[command(subcommand)]
        command: AcrsCommand,
    },
}

#[derive(Subcommand)]
enum ScriptsCommand {
    /// Every configured script: acr, state, level, file, revision.
    List {
        /// One JSON array, for tools.
        #[arg(long)]
        json: bool,
    },
    /// One script with its properties (secret values are never shown).
    Show {
        acr: String,
        #[arg(long)]
        json: bool,
    },
    /// Turn a script on.
    Enable { acr: String },
    /// Turn a script off (not the default acr: make another the default first).
    Disable { acr: String },
    /// Set a property of a script (its `config.PROPERTY`). VALUE "-" reads it from standard
    /// input, so that a secret stays out of the shell history; prefer "${env:NAME}" for
    /// secrets. A secret value is never echoed.
    Set {
        acr: String,
        property: String,
        value: String,
    },
    /// Remove a property of a script.
    Unset { acr: String, property: String },
}

#[derive(Subcommand)]
enum AcrsCommand {
    /// Print the default acr ([login] default_acr), or make ACR the default.
    Default { acr: Option<String> },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Generate 10 single-use backup codes for a user (replacing any earlier ones) and print them
    /// once; only their hashes are kept.
    BackupCodes { name: String },
    /// Re-enable SMS sign-in for a user whose SMS factor was disabled or locked after too many
    /// wrong codes: a directory user's name, or a phone-number subject like tel:+447700900123.
    ResetSms { name: String },
    /// Print whether a user's SMS factor is open, locked (and for how long) or disabled.
    SmsStatus { name: String },
}

fn main() -> ExitCode {
    // Files this server creates (logs, the user file's rewrites, keys) are not for others:
    // logs come out 0640, the user file and the signing key set 0600 themselves.
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o027);
    }
    let cli = Cli::parse();
    let config = cli.config;
    let result = match cli.command {
        Command::Serve { listen } => serve(config, listen),
        Command::Check => check(config),
        Command::Test { files } => script_tests(config, files),
        Command::HashPassword => hash(),
        Command::Users {
            command: UsersCommand::ResetSms { name },
        } => reset_sms(&name, config),
        Command::Users {
            command: UsersCommand::BackupCodes { name },
        } => backup_codes(&name, config),
        Command::Users {
            command: UsersCommand::SmsStatus { name },
        } => sms_status(&name, config),
        Command::Scripts { command } => scripts_command(command, config),
        Command::Acrs {
            command: AcrsCommand::Default { acr },
        } => default_acr(acr, config),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("gatehouse: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config_path: PathBuf, listen: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let mut app = Builder::new(&config_path).build()?;
    // Events outside an instance scope (HTTP layer) go to the same log.
    let _global = tracing::dispatcher::set_default(&app.log.dispatch);
    app.load_scripts();
    app.watch()?;
    let listen = listen.unwrap_or(app.config.current().server.listen.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let state = app
        .web_state()
        .context("the web layer needs a serving instance")?;
    let admin = app.admin_state();
    let admin_listen = app.config.current().admin.listen;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let local = listener.local_addr()?;
        app.log
            .scope(|| tracing::info!(target: "server", "listening on http://{local}"));
        // One signal stops both listeners.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let admin_server = match (admin, admin_listen) {
            (Some(admin), Some(address)) => {
                let admin_listener = tokio::net::TcpListener::bind(address.0)
                    .await
                    .with_context(|| format!("cannot listen on {} ([admin] listen)", address.0))?;
                let local = admin_listener.local_addr()?;
                app.log.scope(
                    || tracing::info!(target: "server", "admin API and /metrics on http://{local}"),
                );
                Some(tokio::spawn(web::serve_admin(
                    admin_listener,
                    admin,
                    until_stopped(stopped.clone()),
                )))
            }
            _ => None,
        };
        let public = web::serve(listener, state, until_stopped(stopped))
            .await
            .context("serving HTTP");
        if let Some(admin_server) = admin_server {
            admin_server
                .await
                .context("the admin listener stopped")?
                .context("serving the admin API")?;
        }
        public
    });
    app.shutdown();
    served.map(|_| ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn check(config_path: PathBuf) -> anyhow::Result<ExitCode> {
    let app = Builder::new(&config_path).mode(Mode::Check).build()?;
    let config = app.config.current();
    let rows = app.log.scope(|| app.host.check(&config));
    println!(
        "{:<16} {:<28} {:<14} {:<9} ERROR",
        "ACR", "FILE", "REVISION", "STATE"
    );
    let mut failed = false;
    for row in &rows {
        failed |= row.state == ScriptState::Failed;
        let state = format!("{:?}", row.state).to_lowercase();
        println!(
            "{:<16} {:<28} {:<14} {:<9} {}",
            row.acr,
            row.file,
            row.digest.as_deref().unwrap_or("-"),
            state,
            row.last_error.as_deref().unwrap_or("-")
        );
    }
    let pages = &app.pages;
    let findings = app
        .host
        .lint(&config, &|page| pages.exists(&format!("{page}.html")));
    for finding in &findings {
        println!("{finding}");
    }
    failed |= !findings.is_empty();
    if let Err((key, message)) = config.admin.serving_token() {
        println!("{key}: {message}: gatehouse serve will refuse to start");
        failed = true;
    }
    if let Some(default_acr) = &config.login.default_acr {
        if rows
            .iter()
            .any(|r| &r.acr == default_acr && r.state != ScriptState::Active)
        {
            println!(
                "default acr {default_acr} is not usable: logins without acr_values will fail"
            );
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn script_tests(config_path: PathBuf, files: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    use gatehouse::app::script_tests;
    let files = if files.is_empty() {
        script_tests::default_files(&config_path)?
    } else {
        files
    };
    anyhow::ensure!(
        !files.is_empty(),
        "no test files: put them in scripts/tests/*.toml (scripts/README.md says how) or name them"
    );
    let results = script_tests::run(&config_path, &files)?;
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    for result in &results {
        println!("{result}");
    }
    println!(
        "script tests: {} passed, {failed} failed",
        results.len() - failed
    );
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn hash() -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("password (input is visible; end with Enter):");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    anyhow::ensure!(
        !password.is_empty(),
        "empty password: type one, or pipe it: printf %s 'secret' | gatehouse hash-password"
    );
    println!("{}", hash_password(&Secret::new(password))?);
    Ok(ExitCode::SUCCESS)
}

fn reset_sms(name: &str, config_path: PathBuf) -> anyhow::Result<ExitCode> {
    let app = Builder::new(&config_path)
        .mode(Mode::Check)
        .configured_store()
        .build()?;
    let admin = app.admin();
    let report = admin.reset_sms(name)?;
    if report.directory_mark_removed {
        println!(
            "SMS sign-in re-enabled for {name} (a running server picks the change up at once)"
        );
    } else if report.store_record_removed {
        println!("SMS sign-in re-enabled for {name} in the shared state store (every node sees it at once)");
    } else if gatehouse::base::phone::is_phone_subject(name) && !app.shares_state() {
        // The disable of a phone-number subject lives in the state store only. The embedded
        // store is the server's own memory, which this command cannot reach.
        println!(
            "{name} has no directory entry: its SMS factor state is kept in the running server's state store, which the in-memory store does not share with this command; it is cleared when that server restarts"
        );
    } else {
        let place = if app.shares_state() {
            "the directory or the shared state store"
        } else {
            "the directory"
        };
        println!("SMS sign-in was not disabled or locked for {name}: nothing to reset in {place}");
    }
    if let FactorState::Locked {
        retry_after_seconds,
    } = admin.sms_status(name)?
    {
        println!("(still locked for {retry_after_seconds} s in this store)");
    }
    Ok(ExitCode::SUCCESS)
}

fn sms_status(name: &str, config_path: PathBuf) -> anyhow::Result<ExitCode> {
    let app = Builder::new(&config_path)
        .mode(Mode::Check)
        .configured_store()
        .build()?;
    let state = app.admin().sms_status(name)?;
    match state {
        FactorState::Open => println!("{name}: SMS sign-in open"),
        FactorState::Locked {
            retry_after_seconds,
        } => println!("{name}: SMS sign-in locked for {retry_after_seconds} s more (gatehouse users reset-sms {name} lifts it)"),
        FactorState::Disabled => println!("{name}: SMS sign-in disabled until `gatehouse users reset-sms {name}`"),
    }
    if !app.shares_state() {
        println!("(locks live in the state store; the embedded in-memory store is the running server's own, so a lock there is not seen here: use the admin API, GET /admin/users/{name}/sms)");
    }
    Ok(ExitCode::SUCCESS)
}

fn backup_codes(name: &str, config_path: PathBuf) -> anyhow::Result<ExitCode> {
    let app = Builder::new(&config_path).mode(Mode::Check).build()?;
    let shown = app.admin().issue_backup_codes(name)?;
    println!("Backup codes for {name} (each works once; earlier codes no longer work). They are shown only now:");
    for code in shown {
        println!("  {code}");
    }
    Ok(ExitCode::SUCCESS)
}

fn scripts_command(command: ScriptsCommand, config_path: PathBuf) -> anyhow::Result<ExitCode> {
    let app = Builder::new(&config_path).mode(Mode::Check).build()?;
    let scripts = app.script_admin();
    let print_view = |view: &gatehouse::admin::scripts::ScriptView| {
        let state = serde_json::to_value(view.state).unwrap_or_default();
        println!(
            "acr:        {}{}",
            view.acr,
            if view.is_default { " (default)" } else { "" }
        );
        println!("file:       {}", view.file);
        println!("enabled:    {}", view.enabled);
        println!("state:      {}", state.as_str().unwrap_or("-"));
        println!("level:      {}", view.level);
        println!(
            "usage:      {}",
            serde_json::to_value(view.usage)
                .unwrap_or_default()
                .as_str()
                .unwrap_or("-")
        );
        println!("revision:   {}", view.digest.as_deref().unwrap_or("-"));
        if !view.sms_provider.is_empty() {
            println!("sms:        {}", view.sms_provider.join(", "));
        }
        if let Some(error) = &view.last_error {
            println!("error:      {error}");
        }
        println!("properties:");
        for (name, value) in &view.properties {
            println!("  {name} = {value}");
        }
    };
    match command {
        ScriptsCommand::List { json } => {
            // The states come from compiling every script (and running init of the enabled
            // ones), as `gatehouse check` does.
            app.load_scripts();
            let views = scripts.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<16} {:<8} {:<9} {:>5} {:<24} {:<14}",
                "ACR", "ENABLED", "STATE", "LEVEL", "FILE", "REVISION"
            );
            for view in &views {
                let state = serde_json::to_value(view.state).unwrap_or_default();
                println!(
                    "{:<16} {:<8} {:<9} {:>5} {:<24} {:<14}{}",
                    view.acr,
                    if view.enabled { "yes" } else { "no" },
                    state.as_str().unwrap_or("-"),
                    view.level,
                    view.file,
                    view.digest.as_deref().unwrap_or("-"),
                    if view.is_default { "  (default)" } else { "" }
                );
            }
        }
        ScriptsCommand::Show { acr, json } => {
            app.load_scripts();
            let view = scripts.show(&acr)?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&view)?),
                false => print_view(&view),
            }
        }
        ScriptsCommand::Enable { acr } => toggle(&scripts, &acr, true)?,
        ScriptsCommand::Disable { acr } => toggle(&scripts, &acr, false)?,
        ScriptsCommand::Set {
            acr,
            property,
            value,
        } => {
            let secret = scripts.is_secret(&acr, &property)?;
            let value = match value.as_str() {
                "-" => read_value_from_stdin()?,
                _ => value,
            };
            let edit = gatehouse::admin::config_file::ScriptEdit {
                enabled: None,
                properties: vec![(property.clone(), Some(value.clone()))],
            };
            let (_, changed) = scripts.edit(&acr, &edit)?;
            let shown = match secret {
                true => "(secret: value not shown)".to_owned(),
                false => format!("= {value:?}"),
            };
            match changed {
                true => {
                    println!("{acr}: {property} {shown}; a running server applies it on its reload")
                }
                false => println!("{acr}: {property} already had that value; nothing changed"),
            }
        }
        ScriptsCommand::Unset { acr, property } => {
            let edit = gatehouse::admin::config_file::ScriptEdit {
                enabled: None,
                properties: vec![(property.clone(), None)],
            };
            match scripts.edit(&acr, &edit)?.1 {
                true => {
                    println!("{acr}: {property} removed; a running server applies it on its reload")
                }
                false => println!("{acr} has no property {property}; nothing changed"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn toggle(
    scripts: &gatehouse::admin::scripts::ScriptAdmin,
    acr: &str,
    enabled: bool,
) -> anyhow::Result<()> {
    let edit = gatehouse::admin::config_file::ScriptEdit {
        enabled: Some(enabled),
        properties: Vec::new(),
    };
    let (_, changed) = scripts.edit(acr, &edit)?;
    let word = if enabled { "enabled" } else { "disabled" };
    match changed {
        true => println!("{acr} {word} in {}; a running server applies it on its reload (`gatehouse check` compiles it now)", scripts.config_path().display()),
        false => println!("{acr} was already {word}; nothing changed"),
    }
    Ok(())
}

/// One line from standard input (a property value kept out of the command line).
fn read_value_from_stdin() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("value (end with Enter):");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the value from standard input")?;
    Ok(line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line)
        .to_owned())
}

fn default_acr(acr: Option<String>, config_path: PathBuf) -> anyhow::Result<ExitCode> {
    let app = Builder::new(&config_path).mode(Mode::Check).build()?;
    let scripts = app.script_admin();
    match acr {
        None => match scripts.default_acr()? {
            Some(acr) => println!("{acr}"),
            None => println!("(none: applications must name an acr in acr_values)"),
        },
        Some(acr) => match scripts.set_default_acr(&acr)? {
            true => println!(
                "default acr is now {}; a running server applies it on its reload",
                acr.trim()
            ),
            false => println!("{} already is the default acr; nothing changed", acr.trim()),
        },
    }
    Ok(ExitCode::SUCCESS)
}
