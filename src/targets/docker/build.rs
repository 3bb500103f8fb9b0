//! Building service images with the engine's classic builder, and pushing them.
//!
//! The build context is sent as a tar made here, honouring `.dockerignore` (the `ignore`
//! crate reads it with gitignore rules, close to Docker's own). A Dockerfile outside the context
//! is added to the tar under a private name, as the docker CLI does. A failing build stops
//! before anything on the target is touched and shows the tail of the build log.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use bollard::query_parameters::{BuildImageOptions, PushImageOptions};
use futures_util::StreamExt;

use super::Engine;
use crate::config::model::Build;

/// How many lines of build output a failure shows.
const LOG_TAIL: usize = 25;

/// The tar of a build context, and the Dockerfile's path inside it.
pub fn context_tar(context: &Path, dockerfile: Option<&Path>) -> anyhow::Result<(Vec<u8>, String)> {
    if !context.is_dir() {
        bail!("the build context {} is not a directory", context.display());
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut walker = ignore::WalkBuilder::new(context);
    walker
        .standard_filters(false)
        .hidden(false)
        .add_custom_ignore_filename(".dockerignore");
    for entry in walker.build() {
        let entry = entry?;
        let path = entry.path();
        let rel = path.strip_prefix(context)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        builder
            .append_path_with_name(path, rel)
            .with_context(|| format!("cannot add {} to the build context", path.display()))?;
    }
    let default = context.join("Dockerfile");
    let dockerfile = dockerfile.map(Path::to_path_buf).unwrap_or(default);
    let inside = match dockerfile.strip_prefix(context) {
        Ok(rel) if dockerfile.exists() => rel.to_string_lossy().to_string(),
        _ => {
            let text = std::fs::read(&dockerfile)
                .with_context(|| format!("cannot read the Dockerfile {}", dockerfile.display()))?;
            let name = ".packfy.Dockerfile".to_string();
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, &name, text.as_slice())?;
            name
        }
    };
    Ok((builder.into_inner()?, inside))
}

/// Where the paths of a `build:` section point, relative to `root` (the repository).
pub fn paths(root: &Path, build: &Build) -> (PathBuf, Option<PathBuf>) {
    let context = root.join(&build.context);
    let dockerfile = build.dockerfile.as_ref().map(|d| root.join(d));
    (context, dockerfile)
}

impl Engine {
    /// Builds `tag` from a `build:` section; returns the image ID.
    pub async fn build(
        &self,
        root: &Path,
        build: &Build,
        tag: &str,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> anyhow::Result<String> {
        let (context, dockerfile) = paths(root, build);
        let (tar, dockerfile) = context_tar(&context, dockerfile.as_deref())?;
        let options = BuildImageOptions {
            dockerfile,
            t: Some(tag.to_string()),
            rm: true,
            forcerm: true,
            buildargs: Some(
                build
                    .args
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            target: build.target.clone().unwrap_or_default(),
            ..Default::default()
        };
        let mut log: Vec<String> = Vec::new();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(tar.into())));
        let mut failure = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(s) = info.stream.as_deref() {
                        for line in s.lines().filter(|l| !l.trim().is_empty()) {
                            on_line(line);
                            log.push(line.to_string());
                        }
                    }
                    if let Some(e) = info.error_detail.and_then(|d| d.message) {
                        failure = Some(e);
                    }
                }
                Err(e) => failure = Some(e.to_string()),
            }
        }
        if let Some(e) = failure {
            let tail = log[log.len().saturating_sub(LOG_TAIL)..].join("\n");
            bail!("building {tag} failed: {e}\n--- last lines of the build log ---\n{tail}");
        }
        self.image_id(tag)
            .await?
            .ok_or_else(|| anyhow!("the build of {tag} finished but the image is missing"))
    }

    /// Pushes `repo:tag`; returns the registry digest.
    pub async fn push(&self, repo: &str, tag: &str) -> anyhow::Result<Option<String>> {
        let credentials = super::auth::credentials(repo)?;
        let anonymous = credentials.is_none();
        let mut stream = self.docker.push_image(
            repo,
            Some(PushImageOptions {
                tag: Some(tag.to_string()),
                ..Default::default()
            }),
            credentials,
        );
        let mut digest = None;
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(e) => {
                    let reference = format!("{repo}:{tag}");
                    if let Some(no) =
                        super::auth::no_login(&e.to_string(), anonymous, "pushing", &reference)
                    {
                        return Err(no.into());
                    }
                    return Err(e).with_context(|| format!("pushing {reference} failed"));
                }
            };
            if let Some(status) = info.status.as_deref() {
                if let Some(d) = status.split("digest: ").nth(1) {
                    digest = d.split_whitespace().next().map(str::to_string);
                }
            }
        }
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_honours_dockerignore() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join("app"), "x").unwrap();
        std::fs::write(dir.path().join("secret.env"), "TOKEN=1").unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "*.env\n").unwrap();
        let (tar, df) = context_tar(dir.path(), None).unwrap();
        assert_eq!(df, "Dockerfile");
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().to_string())
            .collect();
        assert!(names.contains(&"app".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("secret.env")), "{names:?}");
    }
}
