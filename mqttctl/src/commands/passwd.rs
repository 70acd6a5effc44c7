//! `mqttctl passwd add|set|delete|verify|list FILE [USER]`: edit mqttd's
//! password file. Works on the file directly, no broker needed; a running
//! mqttd notices the change within 2 seconds (or at once on SIGHUP).
//!
//! Passwords are read from the terminal without echo (asked twice when
//! set), or as one line from standard input when it is not a terminal,
//! so scripts can pipe them in. They never appear on the command line.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use clap::{Args as ClapArgs, Subcommand};
use mqttd_passwd::{Algorithm, Hasher, PasswdError, PasswordFile, Verification};

use crate::error::CtlError;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add a user (the file is created if missing, with mode 0600).
    Add(Change),
    /// Add a user or change its password.
    Set(Change),
    /// Remove a user.
    Delete(Target),
    /// Check a user's password (exit status 0 if it matches, 1 if not).
    Verify(Target),
    /// Print the usernames in the file.
    List {
        /// The password file.
        file: PathBuf,
    },
}

#[derive(Debug, ClapArgs)]
pub struct Target {
    /// The password file.
    pub file: PathBuf,
    /// The username.
    pub user: String,
}

#[derive(Debug, ClapArgs)]
pub struct Change {
    #[command(flatten)]
    pub target: Target,
    /// Hash algorithm for the new entry.
    #[arg(long, default_value = "argon2id", value_parser = parse_algorithm)]
    pub algorithm: Algorithm,
}

fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    s.parse()
}

fn failed(e: PasswdError) -> CtlError {
    CtlError::Failed(e.to_string())
}

pub fn run(cmd: Command) -> Result<(), CtlError> {
    match cmd {
        Command::Add(c) => change(c, false),
        Command::Set(c) => change(c, true),
        Command::Delete(t) => {
            let mut file = PasswordFile::load(&t.file).map_err(failed)?;
            if !file.remove(&t.user) {
                return Err(CtlError::Failed(format!(
                    "no user `{}` in {}",
                    t.user,
                    t.file.display()
                )));
            }
            file.save(&t.file).map_err(failed)?;
            done(&format!(
                "removed user `{}` from {}",
                t.user,
                t.file.display()
            ));
            Ok(())
        }
        Command::Verify(t) => {
            let file = PasswordFile::load(&t.file).map_err(failed)?;
            let password = read_password(false)?;
            match file.verify(&t.user, password.as_bytes()) {
                Verification::Valid => {
                    eprintln!("password of `{}` matches", t.user);
                    Ok(())
                }
                Verification::Invalid => {
                    Err(CtlError::Failed(format!("wrong password for `{}`", t.user)))
                }
                Verification::UnknownUser => Err(CtlError::Failed(format!(
                    "no user `{}` in {}",
                    t.user,
                    t.file.display()
                ))),
            }
        }
        Command::List { file } => {
            let file = PasswordFile::load(&file).map_err(failed)?;
            for user in file.users() {
                println!("{user}");
            }
            Ok(())
        }
    }
}

/// `add` (refusing an existing user) or `set`.
fn change(c: Change, replace: bool) -> Result<(), CtlError> {
    let Target { file: path, user } = c.target;
    let mut file = load_or_new(&path)?;
    if !replace && file.contains(&user) {
        return Err(CtlError::Failed(format!(
            "user `{user}` already exists in {} (use `mqttctl passwd set` to change the password)",
            path.display()
        )));
    }
    mqttd_passwd::file::validate_username(&user).map_err(|e| CtlError::Usage(e.to_string()))?;
    let password = read_password(true)?;
    let hasher = Hasher::new(c.algorithm);
    let added = file
        .set(&user, password.as_bytes(), &hasher)
        .map_err(failed)?;
    file.save(&path).map_err(failed)?;
    let what = if added {
        "added user"
    } else {
        "changed the password of user"
    };
    done(&format!("{what} `{user}` in {}", path.display()));
    Ok(())
}

fn load_or_new(path: &Path) -> Result<PasswordFile, CtlError> {
    match PasswordFile::load(path) {
        Ok(f) => Ok(f),
        Err(PasswdError::Read { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            Ok(PasswordFile::new())
        }
        Err(e) => Err(failed(e)),
    }
}

fn done(what: &str) {
    eprintln!("{what}; mqttd reloads it within 2 seconds (or at once on SIGHUP)");
}

/// The password: from the terminal without echo (twice when `confirm`),
/// else the first line of standard input.
fn read_password(confirm: bool) -> Result<String, CtlError> {
    let io_err = |e: std::io::Error| CtlError::Failed(format!("cannot read the password: {e}"));
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(io_err)?;
        if confirm && rpassword::prompt_password("Again: ").map_err(io_err)? != first {
            return Err(CtlError::Usage("the two passwords differ".into()));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(io_err)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() {
        return Err(CtlError::Usage("the password is empty".into()));
    }
    Ok(password)
}
