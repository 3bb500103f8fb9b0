//! A battery of broken region files. Each must make `validate` exit 2 with a message that
//! points at file:line:col, and never panic, hang or print a backtrace.

mod config_common;

use std::path::Path;
use std::time::{Duration, Instant};

use config_common::*;

/// The start of a valid Docker region; cases append to it from line 5 on.
const HEAD: &str = "currency: MXN\ntarget:\n  docker:\n    host: ssh://deploy@alpha.example\n";

fn alpha(extra: &str) -> Vec<u8> {
    format!("{HEAD}{extra}").into_bytes()
}

struct Case {
    name: &'static str,
    /// The file written into a copy of tests/fixtures/config/basic/regions (replacing it).
    file: &'static str,
    content: Vec<u8>,
    /// A line of stderr, without its `error: ` prefix, must be exactly this.
    expect: &'static str,
}

fn case(name: &'static str, file: &'static str, content: Vec<u8>, expect: &'static str) -> Case {
    Case {
        name,
        file,
        content,
        expect,
    }
}

fn alias_bomb() -> Vec<u8> {
    // "billion laughs": nine levels of ten aliases each would be 10^9 values
    let mut text = String::from("lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..=9 {
        let p = i - 1;
        let refs = vec![format!("*l{p}"); 10].join(", ");
        text.push_str(&format!("lol{i}: &l{i} [{refs}]\n"));
    }
    text.into_bytes()
}

fn cases() -> Vec<Case> {
    vec![
        // --- YAML syntax
        case("unclosed flow list", "alpha.yaml", alpha("services: {api: {ports: [{container: 80}}\n"),
            "invalid YAML: while parsing a flow sequence, expected ',' or ']' at regions/alpha.yaml:5:41"),
        case("bad indentation", "alpha.yaml", alpha("services:\n  api:\n    replicas: 2\n   image: x\n"),
            "invalid YAML: while parsing a block mapping, did not find expected key at regions/alpha.yaml:8:4"),
        case("unclosed quote", "alpha.yaml", alpha("locale: \"es-MX\n"),
            "invalid YAML: while scanning a quoted scalar, found unexpected end of stream at regions/alpha.yaml:5:9"),
        case("tab indentation", "alpha.yaml", alpha("services:\n\tapi: {}\n"),
            "invalid YAML: tabs disallowed within this context (block indentation) at regions/alpha.yaml:6:1 — replace the tab with spaces; YAML does not allow tabs for indentation"),
        case("tab after a value", "alpha.yaml", alpha("locale: es-MX\n\ttimezone: UTC\n"),
            "invalid YAML: while scanning a plain scalar, found a tab at regions/alpha.yaml:6:1 — replace the tab with spaces; YAML does not allow tabs for indentation"),
        case("duplicate top-level key", "alpha.yaml", alpha("currency: USD\n"),
            "duplicate key 'currency' at regions/alpha.yaml:5:1 — it is already set at regions/alpha.yaml:1:1"),
        case("duplicate nested key", "alpha.yaml", alpha("services:\n  api:\n    replicas: 2\n    replicas: 3\n"),
            "duplicate key 'replicas' at regions/alpha.yaml:8:5 — it is already set at regions/alpha.yaml:7:5"),
        case("second document", "alpha.yaml", alpha("---\ncurrency: USD\n"),
            "a second YAML document (`---`) in one file at regions/alpha.yaml:5:1 — put each region in its own file"),
        case("merge key", "alpha.yaml", alpha("x: &x {replicas: 2}\nservices:\n  api:\n    <<: *x\n"),
            "merge keys (`<<`) are not supported at regions/alpha.yaml:8:5 — use _defaults.yaml and environments: overlays to share values"),
        case("unknown tag", "alpha.yaml", alpha("locale: !vault es-MX\n"),
            "unsupported YAML tag '!vault' at regions/alpha.yaml:5:9"),
        case("alias bomb", "alpha.yaml", alias_bomb(),
            "the document expands to more than 100000 values at regions/alpha.yaml:5:47 — this looks like an alias bomb (anchors that multiply); write the values out"),
        case("absurd nesting", "alpha.yaml", alpha(&format!("settings: {{deep: {}{}}}\n", "[".repeat(100), "]".repeat(100))),
            "nesting deeper than 64 levels at regions/alpha.yaml:5:81 — region files are a few levels deep; check the indentation"),
        // --- not a region file at all
        case("empty file", "alpha.yaml", Vec::new(),
            "the file is empty at regions/alpha.yaml:1:1 — a region file is a mapping of settings, e.g. `currency: MXN`"),
        case("only comments", "alpha.yaml", b"# TODO: fill in\n".to_vec(),
            "the file is empty at regions/alpha.yaml:1:1 — a region file is a mapping of settings, e.g. `currency: MXN`"),
        case("a list", "alpha.yaml", b"- currency: MXN\n- currency: USD\n".to_vec(),
            "a region file must be a mapping of settings, found a list at regions/alpha.yaml:1:1 — start with keys such as `currency: MXN` and `services:`"),
        case("a scalar", "alpha.yaml", b"mexico\n".to_vec(),
            "a region file must be a mapping of settings, found a string at regions/alpha.yaml:1:1 — start with keys such as `currency: MXN` and `services:`"),
        case("binary garbage", "alpha.yaml", vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0xff, 0xfe, 0x00, 0x13],
            "the file is not UTF-8 text (byte 0xff) at regions/alpha.yaml:1:11 — region files are UTF-8 YAML; is this a binary file?"),
        case("NUL bytes", "alpha.yaml", b"currency: MXN\x00\x00\x00\n".to_vec(),
            "control character U+0000 in the file at regions/alpha.yaml:1:14 — region files are plain YAML text; is this a binary file?"),
        case("invalid UTF-8", "alpha.yaml", [HEAD.as_bytes(), b"locale: es-\xe9\n"].concat(),
            "the file is not UTF-8 text (byte 0xe9) at regions/alpha.yaml:5:12 — region files are UTF-8 YAML; is this a binary file?"),
        case("UTF-16", "alpha.yaml", "\u{feff}currency: MXN\n".encode_utf16().flat_map(u16::to_le_bytes).collect(),
            "the file is not UTF-8 text (byte 0xff) at regions/alpha.yaml:1:1 — region files are UTF-8 YAML; is this a binary file?"),
        case("control character", "alpha.yaml", alpha("locale: es\u{1b}[31mMX\n"),
            "control character U+001B in the file at regions/alpha.yaml:5:11 — region files are plain YAML text; is this a binary file?"),
        case("bad file name", "Mexico City.yaml", alpha(""),
            "'Mexico City' is not a valid region name at regions/Mexico City.yaml:1:1 — name region files in lower case with letters, digits and '-', e.g. costa-rica.yaml"),
        case("broken defaults", "_defaults.yaml", b"services:\n  api: {image: [x}\n".to_vec(),
            "invalid YAML: while parsing a flow sequence, expected ',' or ']' at regions/_defaults.yaml:2:18"),
        // --- keys and types
        case("unknown key with a near miss", "alpha.yaml", alpha("services:\n  api:\n    replcas: 3\n"),
            "unknown field 'replcas' in services.api at regions/alpha.yaml:7:5 — did you mean 'replicas'?"),
        case("unknown top-level key", "alpha.yaml", alpha("timezon: America/Mexico_City\n"),
            "unknown field 'timezon' at regions/alpha.yaml:5:1 — did you mean 'timezone'?"),
        case("unknown key, nothing close", "alpha.yaml", alpha("target2: x\n"),
            "unknown field 'target2' at regions/alpha.yaml:5:1 — did you mean 'target'?"),
        case("replicas as text", "alpha.yaml", alpha("services:\n  api: {replicas: three}\n"),
            "services.api.replicas: expected an integer, found a string (\"three\") at regions/alpha.yaml:6:19"),
        case("quoted replicas", "alpha.yaml", alpha("services:\n  api: {replicas: \"3\"}\n"),
            "services.api.replicas: expected an integer, found a string (\"3\") at regions/alpha.yaml:6:19 — remove the quotes: a quoted number is text"),
        case("ports as a mapping", "alpha.yaml", alpha("services:\n  api:\n    ports: {container: 80}\n"),
            "services.api.ports: expected a list, found a mapping at regions/alpha.yaml:7:12"),
        case("services as a list", "alpha.yaml", alpha("services: [api, web]\n"),
            "services: expected a mapping, found a list at regions/alpha.yaml:5:11"),
        case("primary: yes", "alpha.yaml", alpha("primary: yes\n"),
            "primary: expected true or false, found a string (\"yes\") at regions/alpha.yaml:5:10 — write true or false; YAML 1.2 reads yes/no/on/off as text"),
        case("negative replicas", "alpha.yaml", alpha("services:\n  api: {replicas: -2}\n"),
            "services.api.replicas: must not be negative, got -2 at regions/alpha.yaml:6:19"),
        case("zero replicas", "alpha.yaml", alpha("services:\n  api: {replicas: 0}\n"),
            "services.api.replicas: must be at least 1, got 0 (in staging) at regions/alpha.yaml:6:19 — to stop a service, remove it from the region"),
        case("port out of range", "alpha.yaml", alpha("services:\n  api:\n    ports: [{container: 80000}]\n"),
            "services.api.ports.0.container: 80000 is out of range (0..=65535) at regions/alpha.yaml:7:25"),
        case("bad duration", "alpha.yaml", alpha("lock_ttl: 15 minutes\n"),
            "lock_ttl: '15 minutes' is not a duration at regions/alpha.yaml:5:11 — write a number with a unit: ms, s, m or h (e.g. '10s', '1m30s')"),
        case("duration without unit", "alpha.yaml", alpha("services:\n  api:\n    health: {timeout: 5}\n"),
            "services.api.health.timeout: a duration needs a unit, got 5 at regions/alpha.yaml:7:23 — write '5s' for seconds or '5ms' for milliseconds"),
        case("bad quantity", "alpha.yaml", alpha("services:\n  api:\n    resources: {limits: {memory: 2 GB}}\n"),
            "services.api.resources.limits.memory: '2 GB' is not a resource quantity at regions/alpha.yaml:7:34 — use Kubernetes notation: '500m' or '1' for CPU, '512Mi' or '1Gi' for memory"),
        case("unknown traffic kind", "alpha.yaml", alpha("traffic: {nginx: {conf: /etc/nginx}}\n"),
            "traffic: unknown kind 'nginx' at regions/alpha.yaml:5:11 — expected one of: none, haproxy"),
        // --- environments
        case("unknown environment", "alpha.yaml", alpha("environments:\n  prod:\n    services: {api: {replicas: 9}}\n"),
            "unknown environment 'prod' at regions/alpha.yaml:6:3 — did you mean 'production'?"),
        case("environments as a list", "alpha.yaml", alpha("environments: [production]\n"),
            "environments: expected a mapping, found a list at regions/alpha.yaml:5:15"),
        case("bad value in one environment", "alpha.yaml", alpha("environments:\n  staging:\n    services: {api: {replicas: 0}}\n"),
            "services.api.replicas: must be at least 1, got 0 (in staging) at regions/alpha.yaml:7:32 — to stop a service, remove it from the region"),
        // --- secrets
        case("secret in plain text", "alpha.yaml", alpha("services:\n  api:\n    env: {DB_PASSWORD: hunter2}\n"),
            "services.api.env.DB_PASSWORD: looks like a secret written in plain text at regions/alpha.yaml:7:24 — write `DB_PASSWORD: {secret: \"env:DB_PASSWORD\"}` and set it where the deploy runs; secrets never belong in region files"),
        case("bad secret reference", "alpha.yaml", alpha("services:\n  api:\n    env: {JWT_SECRET: {secret: \"vault:kv/jwt\"}}\n"),
            "services.api.env.JWT_SECRET.secret: 'vault:kv/jwt' is not a secret reference at regions/alpha.yaml:7:32 — write 'env:NAME' to read the deploying machine's environment, or 'file:PATH'"),
        case("misspelt secret key", "alpha.yaml", alpha("services:\n  api:\n    env: {JWT_SECRET: {secrte: \"env:JWT\"}}\n"),
            "unknown field 'secrte' in services.api.env.JWT_SECRET at regions/alpha.yaml:7:24 — did you mean 'secret'?"),
        // --- rules across fields
        case("port collision (frontend and grafana on 3000)", "beta.yaml",
            b"currency: EUR\ntarget: {kubernetes: {namespace: shop-beta}}\nservices:\n  frontend: {image: r/frontend, ports: [{container: 3000, host: 3000}]}\n  grafana: {image: grafana/grafana, ports: [{container: 3000, host: 3000}]}\n".to_vec(),
            "services.grafana.ports.0.host: port 3000/tcp is already used by service 'frontend' at regions/beta.yaml:5:69 — two services of one region cannot share a host port; pick another"),
        case("max_surge and max_unavailable both 0", "alpha.yaml", alpha("services:\n  api:\n    rollout: {max_surge: 0, max_unavailable: 0}\n"),
            "services.api.rollout: max_surge and max_unavailable are both 0 at regions/alpha.yaml:7:26 — nothing could ever be replaced; set max_surge: 1 for a zero-downtime rollout"),
        case("health timeout above interval", "alpha.yaml", alpha("services:\n  api:\n    health: {interval: 2s}\n"),
            "services.api.health.timeout: 5s must be above 0 and at most the interval (2s) at regions/_defaults.yaml:19:16 — a check that outlives its interval overlaps the next one"),
        case("image with a tag", "alpha.yaml", alpha("services:\n  api: {image: registry.example/shop/api:latest}\n"),
            "services.api.image: 'registry.example/shop/api:latest' carries a tag or digest at regions/alpha.yaml:6:16 — give the repository only; every release is tagged with its own version so rollback has an immutable image"),
        case("bad currency", "alpha.yaml", b"currency: pesos\ntarget: {docker: {host: 'ssh://a'}}\n".to_vec(),
            "currency: 'pesos' is not an ISO 4217 code at regions/alpha.yaml:1:11 — use three capital letters, e.g. CUP, MXN, COP, USD, EUR"),
        case("two targets", "alpha.yaml", alpha("  kubernetes: {namespace: alpha}\n"),
            "target: both docker and kubernetes are set at regions/alpha.yaml:5:15 — a region deploys to one target; remove one of them (an overlay can remove an inherited one with `null`)"),
        case("bad namespace", "beta.yaml", b"currency: EUR\ntarget: {kubernetes: {namespace: Shop_Beta}}\n".to_vec(),
            "target.kubernetes.namespace: 'Shop_Beta' is not a valid namespace at regions/beta.yaml:2:34 — lower-case letters, digits and '-', at most 63 characters"),
        // --- rules across regions
        case("two primaries", "alpha.yaml", alpha("primary: true\n"),
            "more than one primary region: alpha, beta at regions/beta.yaml:3:10 — exactly one region holds the master database; set `primary: false` on the others"),
        case("capacity shares not summing to 100", "alpha.yaml", alpha("capacity_share: 30\n"),
            "capacity shares sum to 30%, not 100% at regions/alpha.yaml:5:17 — shares: alpha 30"),
    ]
}

/// The basic fixture, with beta as the primary and gamma gone (for the rules across regions),
/// and the case's file written over it.
fn setup(c: &Case) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let regions = d.path().join("regions");
    copy_dir(&fixture("basic/regions"), &regions);
    std::fs::remove_file(regions.join("gamma.yaml")).unwrap();
    let beta = std::fs::read_to_string(regions.join("beta.yaml")).unwrap();
    std::fs::write(
        regions.join("beta.yaml"),
        beta.replacen("target:", "primary: true\ntarget:", 1),
    )
    .unwrap();
    std::fs::write(regions.join(c.file), &c.content).unwrap();
    d
}

fn check(dir: &Path, name: &str, expect: &str) -> Result<(), String> {
    let start = Instant::now();
    let r = run(dir, &["validate"]);
    let took = start.elapsed();
    let mut wrong = Vec::new();
    if r.code != 2 {
        wrong.push(format!("exit {} instead of 2", r.code));
    }
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        if r.stderr.contains(bad) || r.stdout.contains(bad) {
            wrong.push(format!("'{bad}' in the output"));
        }
    }
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .collect();
    if !lines.contains(&expect) {
        wrong.push(format!("no line `{expect}`"));
    }
    // every problem (not the closing count) carries a location
    for l in lines.iter().filter(|l| !l.ends_with("nothing was changed")) {
        let located = l.split(" at ").skip(1).any(|rest| {
            let loc = rest.split(" — ").next().unwrap_or("");
            let mut parts = loc.rsplitn(3, ':');
            let (col, line, file) = (parts.next(), parts.next(), parts.next());
            col.is_some_and(|c| c.parse::<u32>().is_ok())
                && line.is_some_and(|c| c.parse::<u32>().is_ok())
                && file.is_some_and(|f| f.ends_with(".yaml"))
        });
        if !located {
            wrong.push(format!("no file:line:col in `{l}`"));
        }
    }
    if took > Duration::from_secs(5) {
        wrong.push(format!("took {took:?}"));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{name}: {}\n{r}", wrong.join("; ")))
    }
}

#[test]
fn the_battery_has_enough_cases() {
    assert!(cases().len() >= 30, "{}", cases().len());
}

#[test]
fn the_unbroken_setup_is_valid() {
    let c = case("none", "unused.txt", Vec::new(), "");
    let d = setup(&c);
    run(d.path(), &["validate"]).code(0);
}

#[test]
fn every_broken_file_is_reported_with_its_location() {
    let failures: Vec<String> = cases()
        .iter()
        .filter_map(|c| check(setup(c).path(), c.name, c.expect).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases().len(),
        failures.join("\n\n")
    );
}

/// 50 MB, generated here (never committed): refused by its size before it is read.
#[test]
fn a_50_megabyte_file() {
    let c = case("50 MB", "alpha.yaml", Vec::new(), "");
    let d = setup(&c);
    let line = "      KEY: value value value value value value value value value value\n";
    let mut text = String::with_capacity(50_000_100);
    text.push_str(HEAD);
    text.push_str("services:\n  api:\n    env:\n");
    while text.len() < 50_000_000 {
        text.push_str(line);
    }
    std::fs::write(d.path().join("regions/alpha.yaml"), text).unwrap();
    check(
        d.path(),
        "50 MB",
        "the file is 50.0 MB; region files are limited to 1024 KiB at regions/alpha.yaml:1:1 — a region file holds settings, not data; split or trim it",
    )
    .unwrap();
}
