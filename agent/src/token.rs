//! The agent's proof of which node it runs on: the projected ServiceAccount token of its pod.
//!
//! Every agent holds the same client certificate (Secret `lifeboat-agent-tls`), which proves
//! only that a process belongs to the install. The DaemonSet also projects a ServiceAccount
//! token for [`AUDIENCE`] into each agent pod; the API server binds it to that pod. The agent
//! sends it in Hello, and the server has the API server review it and looks up the pod's node,
//! so an agent gets only its own node's work.
//!
//! The kubelet rewrites the file before the token expires, so the agent reads it afresh for
//! every session instead of once at start.

use std::path::{Path, PathBuf};

/// The audience of the agents' tokens: the DaemonSet asks the kubelet for it, the server
/// requires it in its TokenReview. A token for the API server's own audience is refused, so a
/// token taken from some other pod cannot be replayed here.
pub const AUDIENCE: &str = "lifeboat";

/// Where the DaemonSet mounts the projected token volume.
pub const TOKEN_DIR: &str = "/var/run/secrets/lifeboat";

/// The token's file name in [`TOKEN_DIR`].
pub const TOKEN_FILE_NAME: &str = "token";

/// The token file the agent reads unless told otherwise: [`TOKEN_DIR`]/[`TOKEN_FILE_NAME`].
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/lifeboat/token";

/// Why the agent has no token to send.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error(
        "cannot read the agent's ServiceAccount token {path} (the DaemonSet projects it there; pass --token-file where it is mounted)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the agent's ServiceAccount token {path} is empty (the kubelet writes it; check the pod's projected volume)"
    )]
    Empty { path: PathBuf },
}

/// The token in `path`, without surrounding whitespace.
pub fn read(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_the_file_name_in_the_directory() {
        assert_eq!(
            Path::new(TOKEN_DIR).join(TOKEN_FILE_NAME),
            Path::new(DEFAULT_TOKEN_FILE)
        );
    }

    #[test]
    fn a_token_is_read_trimmed_and_a_missing_or_empty_file_is_named() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let path = dir.path().join("token");
        let missing = read(&path).expect_err("no file yet");
        assert!(matches!(missing, TokenError::Read { .. }), "{missing}");
        assert!(missing.to_string().contains(&path.display().to_string()));
        std::fs::write(&path, "  \n").expect("write");
        assert!(matches!(read(&path), Err(TokenError::Empty { .. })));
        std::fs::write(&path, "abc.def.ghi\n").expect("write");
        assert_eq!(read(&path).expect("a token"), "abc.def.ghi");
    }
}
