//! The admin bearer token: where it comes from and how a presented token is checked.
//!
//! `SEAWALL_ADMIN_TOKEN` (or `admin.token`) wins. Without it, a random token is generated on
//! first start and kept in `<data_dir>/admin-token` with mode 0600, so restarts keep it. The
//! comparison runs in constant time for tokens of the same length.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::{AdminConfig, Secret};
use crate::hex;

/// Where the token in use came from, for the startup log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Configured,
    File { path: PathBuf, created: bool },
}

pub struct AdminToken {
    token: Secret,
    pub source: TokenSource,
}

impl AdminToken {
    /// The configured token, or the one in the data directory (created when missing).
    pub fn load(config: &AdminConfig, data_dir: &Path) -> io::Result<AdminToken> {
        if let Some(token) = &config.token {
            return Ok(AdminToken {
                token: token.clone(),
                source: TokenSource::Configured,
            });
        }
        let path = data_dir.join("admin-token");
        match fs::read_to_string(&path) {
            Ok(text) => {
                let token = text.trim().to_string();
                if token.len() < 16 {
                    return Err(io::Error::other(format!(
                        "{} holds no usable token; delete it to generate a new one",
                        path.display()
                    )));
                }
                if fs::metadata(&path)?.permissions().mode() & 0o077 != 0 {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
                    tracing::warn!(path = %path.display(), "admin token file was readable by others; its mode is now 0600");
                }
                Ok(AdminToken {
                    token: Secret::new(token),
                    source: TokenSource::File {
                        path,
                        created: false,
                    },
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(data_dir)?;
                let token = hex::encode(&rand::random::<[u8; 32]>());
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                file.write_all(token.as_bytes())?;
                file.write_all(b"\n")?;
                file.sync_all()?;
                Ok(AdminToken {
                    token: Secret::new(token),
                    source: TokenSource::File {
                        path,
                        created: true,
                    },
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Whether `Authorization: Bearer <token>` carries this token.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
        else {
            return false;
        };
        presented
            .trim()
            .as_bytes()
            .ct_eq(self.token.expose().as_bytes())
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn generated_tokens_are_private_and_stable() {
        let dir = std::env::temp_dir().join(format!(
            "seawall-token-{}",
            crate::request_context::new_request_id()
        ));
        let first = AdminToken::load(&AdminConfig { token: None }, &dir).unwrap();
        let path = dir.join("admin-token");
        assert_eq!(
            first.source,
            TokenSource::File {
                path: path.clone(),
                created: true
            }
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let second = AdminToken::load(&AdminConfig { token: None }, &dir).unwrap();
        let token = fs::read_to_string(&path).unwrap();
        assert!(second.authorizes(&headers(&format!("Bearer {}", token.trim()))));
        assert!(first.authorizes(&headers(&format!("Bearer {}", token.trim()))));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_the_exact_bearer_token_authorizes() {
        let token = AdminToken {
            token: Secret::new("correct-horse-battery".into()),
            source: TokenSource::Configured,
        };
        assert!(token.authorizes(&headers("Bearer correct-horse-battery")));
        assert!(!token.authorizes(&headers("Bearer correct-horse-batter")));
        assert!(!token.authorizes(&headers("Basic correct-horse-battery")));
        assert!(!token.authorizes(&HeaderMap::new()));
    }
}
