//! Registry credentials, found the way the docker CLI finds them after `docker login`: the
//! Docker config file (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), its
//! `auths` entry for the registry, or the credential helper it names (`credHelpers` for that
//! registry, else `credsStore`: `docker-credential-NAME get`). The engine gets them with each
//! push and pull (the `X-Registry-Auth` header); they are never written anywhere, and the
//! password is registered as a secret, so no output shows it.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde::Deserialize;

use super::registry_host;

/// The parts of the Docker config file that say how to log in.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// What `docker-credential-NAME get` prints.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// The Docker config file the docker CLI would read.
pub fn config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir).join("config.json")),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
    }
}

/// Credentials for the registry `image` names; None for a Docker Hub name, or when the
/// config file has nothing for that registry (an anonymous pull or push).
pub fn credentials(image: &str) -> anyhow::Result<Option<DockerCredentials>> {
    let Some(registry) = registry_host(image) else {
        return Ok(None);
    };
    let Some(path) = config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let config: DockerConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a Docker config file", path.display()))?;
    let found = lookup(&config, registry)
        .with_context(|| format!("the login for {registry} in {}", path.display()))?;
    Ok(found.inspect(|c| {
        for secret in [&c.password, &c.identitytoken].into_iter().flatten() {
            crate::secrets::register(secret);
        }
    }))
}

/// A registry refused an anonymous pull or push: the error that says which login is missing
/// and where the docker CLI would have kept it (`docker login HOST`).
#[derive(Debug)]
pub struct NoLogin(pub String);

impl std::fmt::Display for NoLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoLogin {}

/// `Some(NoLogin)` when `text`, the engine's error of an anonymous `doing` (pulling, pushing)
/// of `reference`, is the registry asking for a login.
pub fn no_login(text: &str, anonymous: bool, doing: &str, reference: &str) -> Option<NoLogin> {
    let refused = [
        "no basic auth credentials",
        "unauthorized",
        "authentication required",
    ]
    .iter()
    .any(|s| text.contains(s));
    (refused && anonymous).then(|| {
        let config = config_path().map_or_else(
            || "no Docker config file".into(),
            |p| p.display().to_string(),
        );
        NoLogin(format!(
            "{doing} {reference} failed: {text}; the registry wants a login and {config} has none for it (docker login {})",
            registry_host(reference).unwrap_or(reference)
        ))
    })
}

fn lookup(config: &DockerConfig, registry: &str) -> anyhow::Result<Option<DockerCredentials>> {
    if let Some(helper) = config.cred_helpers.get(registry) {
        return helper_get(helper, registry).map(Some);
    }
    let entry = config
        .auths
        .iter()
        .find(|(key, _)| server_name(key) == registry)
        .map(|(_, e)| e);
    if let Some(entry) = entry {
        if let Some(c) = from_entry(entry, registry)? {
            return Ok(Some(c));
        }
    }
    match &config.creds_store {
        Some(store) => helper_get(store, registry).map(Some),
        None => Ok(None),
    }
}

/// `https://127.0.0.1:5000/v1/` → `127.0.0.1:5000`: auths keys are written either way.
fn server_name(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

fn from_entry(entry: &AuthEntry, registry: &str) -> anyhow::Result<Option<DockerCredentials>> {
    let (username, password) = match (&entry.auth, &entry.username, &entry.password) {
        (Some(auth), _, _) if !auth.is_empty() => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| anyhow!("its `auth` is not base64"))?;
            let text = String::from_utf8(bytes).map_err(|_| anyhow!("its `auth` is not text"))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| anyhow!("its `auth` is not USER:PASSWORD"))?;
            (Some(u.to_string()), Some(p.to_string()))
        }
        (_, u, p) => (u.clone(), p.clone()),
    };
    if username.is_none() && entry.identitytoken.is_none() {
        return Ok(None);
    }
    Ok(Some(DockerCredentials {
        username,
        password,
        identitytoken: entry.identitytoken.clone(),
        serveraddress: Some(registry.to_string()),
        ..Default::default()
    }))
}

/// Asks `docker-credential-NAME get` for the registry's login.
fn helper_get(helper: &str, registry: &str) -> anyhow::Result<DockerCredentials> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(registry.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} get failed: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    let answer: HelperAnswer = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{program} get did not print its JSON answer"))?;
    // A helper's identity token comes back under the user name "<token>".
    let (username, password, identitytoken) = if answer.username == "<token>" {
        (None, None, Some(answer.secret))
    } else {
        (Some(answer.username), Some(answer.secret), None)
    };
    Ok(DockerCredentials {
        username,
        password,
        identitytoken,
        serveraddress: Some(registry.to_string()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DockerConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn an_auths_entry_is_found_under_any_spelling_of_its_server() {
        // base64("ci:s3cret-pw")
        for key in [
            "127.0.0.1:5000",
            "http://127.0.0.1:5000",
            "https://127.0.0.1:5000/v1/",
        ] {
            let c = config(&format!(
                r#"{{"auths": {{"{key}": {{"auth": "Y2k6czNjcmV0LXB3"}}}}}}"#
            ));
            let got = lookup(&c, "127.0.0.1:5000").unwrap().unwrap();
            assert_eq!(got.username.as_deref(), Some("ci"), "{key}");
            assert_eq!(got.password.as_deref(), Some("s3cret-pw"), "{key}");
            assert_eq!(got.serveraddress.as_deref(), Some("127.0.0.1:5000"));
        }
        let c = config(r#"{"auths": {"127.0.0.1:5001": {"auth": "Y2k6czNjcmV0LXB3"}}}"#);
        assert!(lookup(&c, "127.0.0.1:5000").unwrap().is_none());
    }

    #[test]
    fn a_broken_auth_field_is_an_error_not_an_anonymous_pull() {
        let c = config(r#"{"auths": {"r.example": {"auth": "not base64!"}}}"#);
        let e = lookup(&c, "r.example").unwrap_err();
        assert!(format!("{e:#}").contains("not base64"), "{e:#}");
        let c = config(r#"{"auths": {"r.example": {"auth": "bm9jb2xvbg=="}}}"#);
        let e = lookup(&c, "r.example").unwrap_err();
        assert!(format!("{e:#}").contains("USER:PASSWORD"), "{e:#}");
    }

    #[test]
    fn an_empty_entry_and_no_entry_mean_anonymous() {
        let c = config(r#"{"auths": {"r.example": {}}}"#);
        assert!(lookup(&c, "r.example").unwrap().is_none());
        assert!(lookup(&config("{}"), "r.example").unwrap().is_none());
    }

    #[test]
    fn a_missing_credential_helper_is_named() {
        let c = config(r#"{"credHelpers": {"r.example": "packfy-none-such"}}"#);
        let e = lookup(&c, "r.example").unwrap_err();
        assert!(
            format!("{e:#}").contains("docker-credential-packfy-none-such"),
            "{e:#}"
        );
    }
}
