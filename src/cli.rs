//! Command-line arguments: which command to run and where the config file is.
//!
//! Parsing is by hand because the surface is four commands and a few options. Everything else is
//! configured through the file and the environment (see `config`).

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: seawall [run] [--config PATH]
       seawall check-config [--config PATH]
       seawall backup --to DIR [--config PATH]
       seawall audit verify --data DIR [--pubkey HEX] [--config PATH]
       seawall audit verify-export --pubkey HEX FILE
       seawall audit witness --url URL --token-file FILE --pubkey HEX --state FILE
                             [--metrics-file FILE]
       seawall --help | --version

Runs the seawall resilience gateway. Configuration comes from the optional TOML file
(--config or SEAWALL_CONFIG) and environment variables; see README.md.
`backup` copies and verifies the data directory of a stopped server into DIR
(a running server backs up with POST /admin/backup).
`audit verify` recomputes every audit chain and checks the signed digests of a
data directory no server is using (a copy or a backup), against --pubkey (the
hex key from GET /admin/audit/pubkey, recorded off the machine) or the
directory's own key; it prints a JSON report and exits 1 when anything breaks.
`audit verify-export` checks a subject-access export (FILE, or - for standard
input) on its own: the digests it lists against --pubkey, and each event's
leaf and inclusion proof; it prints a JSON report and exits 1 when anything
breaks.
`audit witness`, run from another machine, fetches the signed digests from the
admin listener at --url (http://host:port) with the admin token in
--token-file, checks them against --pubkey and against the digests it kept in
--state on earlier runs (still there, unchanged, extended link by link), and
keeps the newest (--metrics-file: also writes the outcome for node_exporter's
textfile collector); it prints a JSON report and exits 1 when anything breaks, 69
when it cannot reach or read the feed, 65 or 74 when --state is not a witness
state or cannot be read or written.";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run {
        config: Option<PathBuf>,
    },
    CheckConfig {
        config: Option<PathBuf>,
    },
    Backup {
        config: Option<PathBuf>,
        to: PathBuf,
    },
    AuditVerify {
        config: Option<PathBuf>,
        data: PathBuf,
        pubkey: Option<String>,
    },
    AuditVerifyExport {
        /// `-` for standard input.
        file: PathBuf,
        pubkey: String,
    },
    AuditWitness {
        url: String,
        token_file: PathBuf,
        pubkey: String,
        state: PathBuf,
        metrics_file: Option<PathBuf>,
    },
    Help,
    Version,
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut command: Option<String> = None;
    let mut config: Option<PathBuf> = None;
    let mut to: Option<PathBuf> = None;
    let mut data: Option<PathBuf> = None;
    let mut pubkey: Option<String> = None;
    let mut file: Option<PathBuf> = None;
    let mut url: Option<String> = None;
    let mut token_file: Option<PathBuf> = None;
    let mut state: Option<PathBuf> = None;
    let mut metrics_file: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        let text = arg
            .to_str()
            .ok_or_else(|| format!("argument {arg:?} is not valid UTF-8"))?;
        match text {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--config" => {
                let path = args.next().ok_or("--config needs a path")?;
                config = Some(PathBuf::from(path));
            }
            _ if text.starts_with("--config=") => {
                config = Some(PathBuf::from(&text["--config=".len()..]))
            }
            "--to" => {
                let path = args.next().ok_or("--to needs a directory")?;
                to = Some(PathBuf::from(path));
            }
            _ if text.starts_with("--to=") => to = Some(PathBuf::from(&text["--to=".len()..])),
            "--data" => {
                let path = args.next().ok_or("--data needs a directory")?;
                data = Some(PathBuf::from(path));
            }
            "--pubkey" => {
                let key = args.next().ok_or("--pubkey needs a hex key")?;
                pubkey = Some(key.to_string_lossy().into_owned());
            }
            "--url" => {
                let value = args.next().ok_or("--url needs http://host:port")?;
                url = Some(value.to_string_lossy().into_owned());
            }
            "--token-file" => {
                let path = args.next().ok_or("--token-file needs a path")?;
                token_file = Some(PathBuf::from(path));
            }
            "--state" => {
                let path = args.next().ok_or("--state needs a path")?;
                state = Some(PathBuf::from(path));
            }
            "--metrics-file" => {
                let path = args.next().ok_or("--metrics-file needs a path")?;
                metrics_file = Some(PathBuf::from(path));
            }
            "run" | "check-config" | "backup" | "audit" if command.is_none() => {
                command = Some(text.to_string())
            }
            "verify" | "verify-export" | "witness" if command.as_deref() == Some("audit") => {
                command = Some(format!("audit {text}"))
            }
            _ if command.as_deref() == Some("audit verify-export") && file.is_none() => {
                file = Some(PathBuf::from(text))
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if to.is_some() && command.as_deref() != Some("backup") {
        return Err("--to only applies to backup".to_string());
    }
    if data.is_some() && command.as_deref() != Some("audit verify") {
        return Err("--data only applies to audit verify".to_string());
    }
    if pubkey.is_some() && !command.as_deref().is_some_and(|c| c.starts_with("audit ")) {
        return Err(
            "--pubkey only applies to audit verify, audit verify-export and audit witness"
                .to_string(),
        );
    }
    if (url.is_some() || token_file.is_some() || state.is_some() || metrics_file.is_some())
        && command.as_deref() != Some("audit witness")
    {
        return Err(
            "--url, --token-file, --state and --metrics-file only apply to audit witness"
                .to_string(),
        );
    }
    Ok(match command.as_deref() {
        Some("check-config") => Command::CheckConfig { config },
        Some("backup") => Command::Backup {
            config,
            to: to.ok_or("backup needs --to DIR")?,
        },
        Some("audit") => {
            return Err("audit needs a subcommand: verify, verify-export or witness".to_string());
        }
        Some("audit verify") => Command::AuditVerify {
            config,
            data: data.ok_or("audit verify needs --data DIR")?,
            pubkey,
        },
        Some("audit verify-export") => Command::AuditVerifyExport {
            file: file.ok_or("audit verify-export needs a FILE (- for standard input)")?,
            pubkey: pubkey.ok_or("audit verify-export needs --pubkey HEX")?,
        },
        Some("audit witness") => {
            let url = url.ok_or("audit witness needs --url http://host:port")?;
            if !url.starts_with("http://") {
                return Err(format!(
                    "--url {url:?} must start with http:// (the admin listener is on a private network)"
                ));
            }
            Command::AuditWitness {
                url: url.trim_end_matches('/').to_string(),
                token_file: token_file.ok_or("audit witness needs --token-file FILE")?,
                pubkey: pubkey.ok_or("audit witness needs --pubkey HEX")?,
                state: state.ok_or("audit witness needs --state FILE")?,
                metrics_file,
            }
        }
        _ => Command::Run { config },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn commands_and_config_paths() {
        assert_eq!(parse_str(&[]), Ok(Command::Run { config: None }));
        assert_eq!(
            parse_str(&["--config", "a.toml"]),
            Ok(Command::Run {
                config: Some("a.toml".into())
            })
        );
        assert_eq!(
            parse_str(&["check-config", "--config=b.toml"]),
            Ok(Command::CheckConfig {
                config: Some("b.toml".into())
            })
        );
        assert!(parse_str(&["serve"]).is_err());
        assert!(parse_str(&["--config"]).is_err());
        assert!(parse_str(&["run", "run"]).is_err());
        assert_eq!(
            parse_str(&["backup", "--to", "/b"]),
            Ok(Command::Backup {
                config: None,
                to: "/b".into()
            })
        );
        assert!(parse_str(&["backup"]).is_err());
        assert!(parse_str(&["run", "--to", "/b"]).is_err());
        assert_eq!(
            parse_str(&["audit", "verify", "--data", "/d", "--pubkey", "ab"]),
            Ok(Command::AuditVerify {
                config: None,
                data: "/d".into(),
                pubkey: Some("ab".into())
            })
        );
        assert!(parse_str(&["audit"]).is_err());
        assert!(parse_str(&["audit", "verify"]).is_err());
        assert!(parse_str(&["verify"]).is_err());
        assert!(parse_str(&["run", "--data", "/d"]).is_err());
        assert_eq!(
            parse_str(&["audit", "verify-export", "--pubkey", "ab", "-"]),
            Ok(Command::AuditVerifyExport {
                file: "-".into(),
                pubkey: "ab".into()
            })
        );
        assert!(parse_str(&["audit", "verify-export", "e.json"]).is_err());
        assert!(parse_str(&["audit", "verify-export", "--pubkey", "ab"]).is_err());
        assert!(parse_str(&["audit", "verify-export", "--pubkey", "ab", "a", "b"]).is_err());
        assert!(parse_str(&["audit", "verify-export", "--data", "/d", "x"]).is_err());
        assert_eq!(
            parse_str(&[
                "audit",
                "witness",
                "--url",
                "http://10.0.0.2:9090/",
                "--token-file",
                "t",
                "--pubkey",
                "ab",
                "--state",
                "s.json",
            ]),
            Ok(Command::AuditWitness {
                url: "http://10.0.0.2:9090".to_string(),
                token_file: PathBuf::from("t"),
                pubkey: "ab".to_string(),
                state: PathBuf::from("s.json"),
                metrics_file: None,
            })
        );
        let witness = [
            "audit",
            "witness",
            "--url",
            "http://h:1",
            "--token-file",
            "t",
            "--pubkey",
            "ab",
            "--state",
            "s",
        ];
        for missing in [2, 4, 6, 8] {
            let mut args = witness.to_vec();
            args.drain(missing..missing + 2);
            assert!(parse_str(&args).is_err(), "{args:?}");
        }
        let mut https = witness;
        https[3] = "https://h:1";
        assert!(parse_str(&https).is_err());
        assert!(parse_str(&["audit", "verify", "--data", "/d", "--state", "s"]).is_err());
        assert!(parse_str(&["run", "--pubkey", "ab"]).is_err());
    }
}
