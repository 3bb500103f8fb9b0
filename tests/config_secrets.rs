//! Secrets are references: no command that reads configuration ever prints or renders the
//! value behind one. Each variable and file a reference names holds a sentinel here, and the
//! sentinel must appear in no output and no rendered file.

mod config_common;

use std::path::Path;

use config_common::*;

const SENTINEL: &str = "S3NTINEL-7f3c2a";

/// The environment variables the repository's and the fixture's references name.
fn secret_env() -> Vec<(String, String)> {
    [
        "PACKFY_DATABASE_URL",
        "PACKFY_JWT_SECRET",
        "PACKFY_STRIPE_SECRET_KEY",
        "SHOP_JWT_SECRET",
    ]
    .iter()
    .map(|k| (k.to_string(), format!("{SENTINEL}-{k}")))
    .collect()
}

fn runs(dir: &Path, commands: &[Vec<&str>]) -> Vec<(String, Run)> {
    let env = secret_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    commands
        .iter()
        .map(|args| (args.join(" "), run_in(dir, args, &env)))
        .collect()
}

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(SENTINEL),
        "a secret's value in {what}:\n{text}"
    );
}

#[test]
fn the_references_are_the_ones_set_here() {
    // if the region files grow a new reference, it must be added to `secret_env`
    let explain = run(&root(), &["explain", "usa", "services", "-o", "json"]);
    let mut named: Vec<String> = explain
        .stdout
        .split("<secret:env:")
        .skip(1)
        .map(|s| s.split('>').next().unwrap().to_string())
        .collect();
    named.sort();
    named.dedup();
    let set: Vec<String> = secret_env().into_iter().map(|(k, _)| k).collect();
    for n in &named {
        assert!(set.contains(n), "{n} is not given a sentinel; {explain}");
    }
    assert!(!named.is_empty());
}

#[test]
fn no_command_shows_a_secret_value_in_the_repository() {
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    let mut commands: Vec<Vec<&str>> = vec![
        vec!["validate"],
        vec!["validate", "-o", "json"],
        vec!["validate", "-v"],
        vec!["schema"],
        vec!["render", "--out", out_dir],
        vec!["render", "--check", "-o", "json"],
        vec!["diff", "usa", "spain"],
        vec!["diff", "cuba", "local", "-o", "json"],
        vec!["diff", "local", "mexico", "--env", "development"],
    ];
    for region in ["usa", "cuba", "local"] {
        for key in [
            "",
            "services",
            "services.backend",
            "services.backend.env",
            "services.backend.env.JWT_SECRET",
            "services.backend.env.DATABASE_URL",
            "services.backend.env.STRIPE_SECRET_KEY.secret",
        ] {
            commands.push(vec!["explain", region, key]);
            commands.push(vec!["explain", region, key, "-o", "json"]);
        }
    }
    let results = runs(&root(), &commands);
    for (what, r) in &results {
        r.no_panic();
        assert_clean(what, &r.stdout);
        assert_clean(what, &r.stderr);
    }
    // the commands did show the references themselves
    let shown: String = results.iter().map(|(_, r)| r.stdout.as_str()).collect();
    assert!(shown.contains("<secret:env:PACKFY_JWT_SECRET>"));
    let rendered = files_under(out.path());
    assert!(rendered.len() >= 30);
    for f in rendered {
        assert_clean(&f, &std::fs::read_to_string(out.path().join(&f)).unwrap());
    }
}

#[test]
fn file_references_are_never_read() {
    let d = tempfile::tempdir().unwrap();
    copy_dir(&fixture("basic/regions"), &d.path().join("regions"));
    copy_dir(&root().join("templates"), &d.path().join("templates"));
    let secret_file = d.path().join("stripe.key");
    std::fs::write(&secret_file, format!("{SENTINEL}-file\n")).unwrap();
    // beta (the Kubernetes region) gets the file reference too, so render sees it
    let beta = d.path().join("regions/beta.yaml");
    let text = std::fs::read_to_string(&beta).unwrap().replace(
        "      LOG_LEVEL: null\n",
        &format!(
            "      LOG_LEVEL: null\n      STRIPE_KEY: {{secret: \"file:{}\"}}\n",
            secret_file.display()
        ),
    );
    std::fs::write(&beta, text).unwrap();
    let alpha = d.path().join("regions/alpha.yaml");
    let text = std::fs::read_to_string(&alpha)
        .unwrap()
        .replace("/run/secrets/stripe", secret_file.to_str().unwrap());
    std::fs::write(&alpha, text).unwrap();

    let commands: Vec<Vec<&str>> = vec![
        vec!["validate"],
        vec!["render"],
        vec!["render", "--check"],
        vec!["diff", "alpha", "beta"],
        vec!["diff", "alpha", "beta", "-o", "json"],
        vec!["explain", "beta", "services.api.env"],
        vec![
            "explain",
            "alpha",
            "services.api.env.STRIPE_KEY",
            "-o",
            "json",
        ],
        vec!["explain", "beta", ""],
    ];
    for (what, r) in runs(d.path(), &commands) {
        assert!(r.code <= 1, "{what}: {r}");
        assert_clean(&what, &r.stdout);
        assert_clean(&what, &r.stderr);
    }
    let manifests = d.path().join("manifests");
    let files = files_under(&manifests);
    assert!(!files.is_empty());
    let mut refs = 0;
    for f in files {
        let text = std::fs::read_to_string(manifests.join(&f)).unwrap();
        assert_clean(&f, &text);
        refs += text.matches("key: STRIPE_KEY").count();
    }
    assert_eq!(
        refs, 3,
        "a secretKeyRef in each environment's api Deployment"
    );
}
