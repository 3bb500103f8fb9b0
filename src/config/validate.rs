//! Checks across fields and across regions, on the typed configuration.
//!
//! Type errors and unknown keys are found while deserializing (`de.rs`); what is here needs
//! more than one value at a time. Each rule points at the value to change, using the layered
//! tree so the location is where that value was written, whichever file that was.

use std::collections::HashMap;

use super::diag::Diagnostic;
use super::model::{
    DockerTarget, EnvValue, HookCommand, RegionConfig, ReleaseStep, Target, Traffic, WebhookKind,
};
use super::node::Node;

/// Names whose plain values are almost certainly secrets that belong in a reference.
const SECRET_SUFFIXES: [&str; 7] = [
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "TOKEN",
    "API_KEY",
    "PRIVATE_KEY",
    "SECRET_KEY",
];

/// An environment variable whose name says it is a secret, written as a plain value.
pub(crate) fn is_plain_secret(key: &str, value: &EnvValue) -> bool {
    let upper = key.to_ascii_uppercase();
    matches!(value, EnvValue::Plain(v) if !v.is_empty())
        && SECRET_SUFFIXES.iter().any(|s| upper.ends_with(s))
}

struct Ctx<'a> {
    tree: &'a Node,
    /// Key paths whose typed value is a stand-in for a value that failed to deserialize.
    poisoned: &'a [String],
    out: Vec<Diagnostic>,
}

impl Ctx<'_> {
    /// A problem at `path`, or at the nearest ancestor that exists in the tree, unless the value
    /// at `path` is a stand-in for a value already reported as wrong.
    fn at(&mut self, path: &str, message: String, hint: &str) {
        self.report(path, &[path], message, hint);
    }

    /// A problem at `path` found by reading the values at `reads`: silent when any of them is a
    /// stand-in (it would be a second report of one mistake, about a value nobody wrote).
    fn report(&mut self, path: &str, reads: &[&str], message: String, hint: &str) {
        if !self.clean(reads) {
            return;
        }
        let mut p = path;
        let node = loop {
            if let Some(n) = self.tree.lookup(p) {
                break n;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => break self.tree,
            }
        };
        let mut d = Diagnostic::at(&node.loc, message);
        if !hint.is_empty() {
            d.hint = Some(hint.to_string());
        }
        self.out.push(d);
    }

    /// A problem with the name of the key at `path` (not its value): reported where the key is
    /// written, and never silenced by stand-ins in its value.
    fn key(&mut self, path: &str, message: String, hint: &str) {
        let (parent, last) = path.rsplit_once('.').unwrap_or(("", path));
        let Some(entry) = self
            .tree
            .lookup(parent)
            .and_then(Node::as_map)
            .and_then(|m| m.entries.get(last))
        else {
            return self.report(path, &[], message, hint);
        };
        let mut d = Diagnostic::at(&entry.key_loc, message);
        if !hint.is_empty() {
            d.hint = Some(hint.to_string());
        }
        self.out.push(d);
    }

    /// True when no value at, above or below any of `reads` was replaced by a stand-in.
    fn clean(&self, reads: &[&str]) -> bool {
        !reads
            .iter()
            .any(|r| self.poisoned.iter().any(|q| related(q, r)))
    }
}

/// `a` and `b` are the same key path, or one is inside the other.
fn related(a: &str, b: &str) -> bool {
    let inside = |inner: &str, outer: &str| {
        outer.is_empty()
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    inside(a, b) || inside(b, a)
}

/// Checks one region's effective configuration.
pub fn region(name: &str, cfg: &RegionConfig, tree: &Node) -> Vec<Diagnostic> {
    region_partial(name, cfg, tree, &[])
}

/// Checks a configuration recovered from a file with type errors: rules that read a value in
/// `poisoned` (see [`super::de::Typed`]) stay silent.
pub fn region_partial(
    name: &str,
    cfg: &RegionConfig,
    tree: &Node,
    poisoned: &[String],
) -> Vec<Diagnostic> {
    let mut c = Ctx {
        tree,
        poisoned,
        out: Vec::new(),
    };
    match cfg.currency.as_deref() {
        None => c.at(
            "currency",
            format!("region '{name}' has no currency"),
            "add `currency:` with its ISO 4217 code, e.g. `currency: MXN`",
        ),
        Some(cur) if cur.len() != 3 || !cur.bytes().all(|b| b.is_ascii_uppercase()) => c.at(
            "currency",
            format!("currency: '{cur}' is not an ISO 4217 code"),
            "use three capital letters, e.g. CUP, MXN, COP, USD, EUR",
        ),
        Some(_) => {}
    }
    if let Some(v) = cfg
        .version
        .as_deref()
        .filter(|v| !v.contains("${") && !is_tag(v))
    {
        c.at(
            "version",
            if v.is_empty() {
                "version: the image tag is empty".to_string()
            } else {
                format!("version: '{v}' is not a valid image tag")
            },
            "letters, digits, '_', '.' and '-', at most 128, not starting with '.' or '-'",
        );
    }
    if let Some(share) = cfg.capacity_share {
        if !(0.0..=100.0).contains(&share) {
            c.at(
                "capacity_share",
                format!("capacity_share: {share} is not a percentage"),
                "use a number from 0 to 100",
            );
        }
    }
    // Typing picked one target; whether neither or both were written is in the tree.
    let written = |k: &str| {
        c.tree
            .lookup(&format!("target.{k}"))
            .is_some_and(|n| !matches!(n.value, super::node::Value::Null))
    };
    match (written("docker"), written("kubernetes")) {
        (false, false) => c.at(
            "target",
            format!("region '{name}' has no target"),
            "set `target: {docker: {host: ...}}` or `target: {kubernetes: {namespace: ...}}`",
        ),
        (true, true) => c.report(
            "target.kubernetes",
            &["target.docker", "target.kubernetes"],
            "target: both docker and kubernetes are set".into(),
            "a region deploys to one target; remove one of them (an overlay can remove an inherited one with `null`)",
        ),
        _ => {}
    }
    match &cfg.target {
        Target::Docker(d) => {
            let host_written = written("docker.host");
            docker_hosts(&mut c, d, host_written);
        }
        Target::Kubernetes(k) => {
            if k.namespace.is_empty() {
                c.at(
                    "target.kubernetes",
                    "target.kubernetes.namespace is not set".into(),
                    "every Kubernetes region deploys into its own namespace",
                );
            } else if !is_dns_label(&k.namespace) {
                c.at(
                    "target.kubernetes.namespace",
                    format!(
                        "target.kubernetes.namespace: '{}' is not a valid namespace",
                        k.namespace
                    ),
                    "lower-case letters, digits and '-', at most 63 characters",
                );
            }
            if let Some(url) = &k.health_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    c.at(
                        "target.kubernetes.health_url",
                        format!("target.kubernetes.health_url: '{url}' is not an http(s) URL"),
                        "write the full URL the bake checks, e.g. https://usa.packfy.example/health",
                    );
                }
            }
        }
    }
    if !is_dns_label(&cfg.app) {
        c.at(
            "app",
            format!("app: '{}' is not a valid name", cfg.app),
            "lower-case letters, digits and '-', at most 63 characters",
        );
    }
    if cfg.services.is_empty() {
        c.at(
            "services",
            format!("region '{name}' has no services"),
            "define at least one service under `services:`",
        );
    }
    if cfg.keep_releases == 0 {
        c.at(
            "keep_releases",
            "keep_releases: must be at least 1".into(),
            "rollback needs the previous release; keep at least 1",
        );
    }
    if let Traffic::Haproxy(h) = &cfg.traffic {
        runtime_apis(&mut c, &h.runtime_api);
        for svc in h.backends.keys() {
            if !cfg.services.contains_key(svc) {
                c.at(
                    &format!("traffic.haproxy.backends.{svc}"),
                    format!("traffic.haproxy.backends: no service named '{svc}'"),
                    &known(cfg.services.keys()),
                );
            }
        }
    }

    let is_docker = matches!(cfg.target, Target::Docker(_));
    // (host port, protocol) → first service that claimed it
    let mut host_ports: HashMap<(u16, String), String> = HashMap::new();
    for (sname, s) in &cfg.services {
        let p = format!("services.{sname}");
        if !is_dns_label(sname) {
            c.key(
                &p,
                format!("service name '{sname}' is not valid"),
                "lower-case letters, digits and '-', at most 63 characters",
            );
        }
        if s.image.as_deref().unwrap_or("").is_empty() {
            c.report(
                &p,
                &[&format!("{p}.image")],
                format!("{p}: no image"),
                "set `image:` to the image repository (the release version is the tag)",
            );
        } else if let Some(image) = &s.image {
            let last = image.rsplit('/').next().unwrap_or(image);
            if let Some(why) = image_repository_problem(image) {
                c.at(
                    &format!("{p}.image"),
                    format!("{p}.image: '{image}' is not a valid image reference: {why}"),
                    "write REGISTRY/NAME or NAME: lower-case letters, digits and . _ - in each part, no spaces, no tag (the release version is the tag)",
                );
            } else if last.contains(':') || image.contains('@') {
                c.at(
                    &format!("{p}.image"),
                    format!("{p}.image: '{image}' carries a tag or digest"),
                    "give the repository only; every release is tagged with its own version so rollback has an immutable image",
                );
            }
        }
        if s.replicas == 0 {
            c.at(
                &format!("{p}.replicas"),
                format!("{p}.replicas: must be at least 1, got 0"),
                "to stop a service, remove it from the region",
            );
        }
        if s.rollout.max_surge == 0 && s.rollout.max_unavailable == 0 {
            // Pointed at max_surge, where the fix goes (the rollout map itself is usually
            // written in _defaults.yaml, far from the value that broke it).
            c.report(
                &format!("{p}.rollout.max_surge"),
                &[&format!("{p}.rollout")],
                format!("{p}.rollout: max_surge and max_unavailable are both 0"),
                "nothing could ever be replaced; set max_surge: 1 for a zero-downtime rollout",
            );
        }
        if s.rollout.hosts_at_once == 0 {
            c.at(
                &format!("{p}.rollout.hosts_at_once"),
                format!("{p}.rollout.hosts_at_once: must be at least 1, got 0"),
                "the number of hosts that change at once; 1 (the default) rolls one host after another",
            );
        }
        if s.rollout.max_unavailable >= s.replicas
            && s.replicas > 0
            && s.rollout.max_unavailable > 0
        {
            c.report(
                &format!("{p}.rollout.max_unavailable"),
                &[
                    &format!("{p}.rollout.max_unavailable"),
                    &format!("{p}.replicas"),
                ],
                format!(
                    "{p}.rollout.max_unavailable: {} would let all {} replica(s) be down at once",
                    s.rollout.max_unavailable, s.replicas
                ),
                "keep it below replicas, or use max_surge for zero downtime",
            );
        }
        if !(0.0..=1.0).contains(&s.rollout.max_5xx_ratio) {
            c.at(
                &format!("{p}.rollout.max_5xx_ratio"),
                format!(
                    "{p}.rollout.max_5xx_ratio: {} is not a ratio",
                    s.rollout.max_5xx_ratio
                ),
                "use a number from 0 to 1, e.g. 0.05 for 5%",
            );
        }
        let h = &s.health;
        let hp = format!("{p}.health");
        let kinds = [
            h.http.is_some(),
            h.tcp.is_some(),
            h.command.is_some(),
            h.image,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if kinds > 1 {
            c.at(
                &hp,
                format!("{hp}: more than one kind of check (http, tcp, command, image)"),
                "choose one",
            );
        }
        if h.healthy_threshold == 0 {
            c.at(
                &format!("{hp}.healthy_threshold"),
                format!("{hp}.healthy_threshold: must be at least 1"),
                "",
            );
        }
        if h.unhealthy_threshold == 0 {
            c.at(
                &format!("{hp}.unhealthy_threshold"),
                format!("{hp}.unhealthy_threshold: must be at least 1"),
                "",
            );
        }
        if h.interval.0.is_zero() {
            c.at(
                &format!("{hp}.interval"),
                format!("{hp}.interval: must be above 0"),
                "e.g. 10s",
            );
        }
        if h.timeout.0.is_zero() || h.timeout > h.interval {
            c.report(
                &format!("{hp}.timeout"),
                &[&format!("{hp}.timeout"), &format!("{hp}.interval")],
                format!(
                    "{hp}.timeout: {} must be above 0 and at most the interval ({})",
                    h.timeout, h.interval
                ),
                "a check that outlives its interval overlaps the next one",
            );
        }
        let earliest = h.start_period.0 + h.interval.0 * h.healthy_threshold.max(1);
        if h.deadline.0 < earliest {
            c.report(
                &format!("{hp}.deadline"),
                &[&hp],
                format!(
                    "{hp}.deadline: {} is shorter than the earliest a container can pass ({}s: start_period + interval × healthy_threshold)",
                    h.deadline,
                    earliest.as_secs()
                ),
                "raise the deadline or lower the thresholds",
            );
        }
        let check_port = h
            .http
            .as_ref()
            .and_then(|x| x.port)
            .or(h.tcp.as_ref().and_then(|x| x.port));
        if let Some(port) = check_port {
            if !s.ports.iter().any(|x| x.container == port) {
                c.report(
                    &hp,
                    &[&hp, &format!("{p}.ports")],
                    format!("{hp}: checks port {port}, which the service does not declare"),
                    "add it under `ports:` or fix the check's port",
                );
            }
        } else if (h.http.is_some() || h.tcp.is_some()) && s.ports.is_empty() {
            c.report(
                &hp,
                &[&hp, &format!("{p}.ports")],
                format!("{hp}: an http or tcp check needs a port"),
                "declare the service's port under `ports:`",
            );
        }
        for (i, port) in s.ports.iter().enumerate() {
            let pp = format!("{p}.ports.{i}");
            if port.container == 0 {
                c.at(
                    &format!("{pp}.container"),
                    format!("{pp}.container: must be 1..65535"),
                    "the port the process listens on",
                );
            }
            if let Some(host) = port.host.filter(|_| c.clean(&[&format!("{pp}.host")])) {
                let key = (host, port.protocol.to_string());
                if let Some(other) = host_ports.get(&key) {
                    c.at(
                        &format!("{pp}.host"),
                        format!(
                            "{pp}.host: port {host}/{} is already used by service '{other}'",
                            port.protocol
                        ),
                        "two services of one region cannot share a host port; pick another",
                    );
                } else {
                    host_ports.insert(key, sname.clone());
                }
                if is_docker && (s.replicas > 1 || s.rollout.max_surge > 0) {
                    c.report(
                        &format!("{pp}.host"),
                        &[
                            &format!("{pp}.host"),
                            &format!("{p}.replicas"),
                            &format!("{p}.rollout.max_surge"),
                        ],
                        format!(
                            "{pp}.host: a fixed host port fits one container, but replicas and rolling updates run several"
                        ),
                        "leave `host` unset: each container gets its own port and HAProxy routes to it",
                    );
                }
            }
        }
        for (key, value) in &s.env {
            let ep = format!("{p}.env.{key}");
            if !super::model::is_env_name(key) {
                c.key(
                    &ep,
                    format!("{p}.env: '{key}' is not a valid variable name"),
                    "letters, digits and '_', not starting with a digit",
                );
            }
            if is_plain_secret(key, value) {
                c.at(
                    &ep,
                    format!("{ep}: looks like a secret written in plain text"),
                    &format!("write `{key}: {{secret: \"env:{key}\"}}` and set it where the deploy runs; secrets never belong in region files"),
                );
            }
        }
        if let Some(a) = &s.autoscale {
            let ap = format!("{p}.autoscale");
            if a.min == 0 || a.min > a.max {
                c.report(
                    &format!("{ap}.min"),
                    &[&ap],
                    format!(
                        "{ap}: min {} and max {} must satisfy 1 <= min <= max",
                        a.min, a.max
                    ),
                    "",
                );
            }
            for (k, v) in [("cpu", a.cpu), ("memory", a.memory)] {
                if let Some(v) = v {
                    if v == 0 || v > 100 {
                        c.at(
                            &format!("{ap}.{k}"),
                            format!("{ap}.{k}: {v}% is not a utilisation target"),
                            "use 1..100",
                        );
                    }
                }
            }
        }
        if let Some(b) = &s.build {
            if b.context.is_empty() {
                c.at(
                    &format!("{p}.build"),
                    format!("{p}.build.context is not set"),
                    "the directory to build, e.g. `.`",
                );
            }
        }
        if let Some(step) = &s.release {
            release_step(&mut c, &p, step);
        }
        use super::progressive::Place;
        let place = match (&cfg.target, &cfg.traffic) {
            (Target::Docker(_), Traffic::Haproxy(h)) => Place::Haproxy {
                backend: h.backends.contains_key(sname),
            },
            (Target::Kubernetes(_), _) => Place::Kubernetes,
            _ => Place::NoTraffic,
        };
        super::progressive::check(&p, s, place, &mut |path, message, hint| {
            c.at(path, message, hint)
        });
    }
    hooks(&mut c, cfg);
    notifications(&mut c, cfg);
    super::backups::check(cfg, &mut |path, message, hint| c.at(path, message, hint));
    c.out
}

/// The longest a notification attempt may be given (`notify::DELIVERY_DEADLINE` bounds all).
const MAX_WEBHOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn hooks(c: &mut Ctx, cfg: &RegionConfig) {
    let h = &cfg.hooks;
    for (kind, list) in [
        ("pre_deploy", &h.pre_deploy),
        ("post_deploy", &h.post_deploy),
        ("pre_rollback", &h.pre_rollback),
        ("post_rollback", &h.post_rollback),
    ] {
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, hook) in list.iter().enumerate() {
            let p = format!("hooks.{kind}.{i}");
            if is_empty_command(&hook.command) {
                c.at(
                    &format!("{p}.command"),
                    format!("{p}: no command"),
                    "write `command: [program, arg, ...]`, or a string run with `sh -c`",
                );
            }
            if let Some(name) = &hook.name {
                if name.trim().is_empty() {
                    c.at(
                        &format!("{p}.name"),
                        format!("{p}.name: is empty"),
                        "name the hook, or leave `name` out to use the program's name",
                    );
                } else if let Some(first) = names.insert(name.clone(), i) {
                    c.at(
                        &format!("{p}.name"),
                        format!("{p}.name: '{name}' is already the name of hooks.{kind}.{first}"),
                        "give each hook of one kind its own name; errors and output name it",
                    );
                }
            }
            if hook.timeout.0.is_zero() {
                c.at(
                    &format!("{p}.timeout"),
                    format!("{p}.timeout: must be above 0"),
                    "the longest the command may run, e.g. 5m",
                );
            }
            if let Some(dir) = &hook.dir {
                if dir.is_empty() || std::path::Path::new(dir).is_absolute() {
                    c.at(
                        &format!("{p}.dir"),
                        format!("{p}.dir: '{dir}' is not a path relative to the repository root"),
                        "e.g. `dir: backend`; leave it out to run in the repository root",
                    );
                }
            }
        }
    }
}

/// A service's `release:` step: a command to run and a time it may take.
fn release_step(c: &mut Ctx, service: &str, step: &ReleaseStep) {
    let p = format!("{service}.release");
    if is_empty_command(&step.command) {
        c.at(
            &format!("{p}.command"),
            format!("{p}: no command"),
            "write `command: [program, arg, ...]` (run in the new image), or a string run with `sh -c` when the image has a shell",
        );
    }
    if step.timeout.0.is_zero() {
        c.at(
            &format!("{p}.timeout"),
            format!("{p}.timeout: must be above 0"),
            "the longest the step may run before it is stopped, e.g. 10m",
        );
    }
}

fn is_empty_command(command: &HookCommand) -> bool {
    match command {
        HookCommand::Argv(argv) => argv.first().is_none_or(|a| a.trim().is_empty()),
        HookCommand::Shell(line) => line.trim().is_empty(),
    }
}

fn notifications(c: &mut Ctx, cfg: &RegionConfig) {
    for (i, w) in cfg.notifications.iter().enumerate() {
        let p = format!("notifications.{i}");
        match &w.url {
            EnvValue::Plain(url) if url.is_empty() => c.at(
                &p,
                format!("{p}: no url"),
                "set `url:` to the receiver, or `url: {secret: \"env:NAME\"}`",
            ),
            EnvValue::Plain(url) => match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                    if u.host_str() == Some("hooks.slack.com") {
                        c.at(
                            &format!("{p}.url"),
                            format!("{p}.url: a Slack webhook URL is a credential written in plain text"),
                            "write `url: {secret: \"env:SLACK_WEBHOOK_URL\"}` and set it where the deploy runs",
                        );
                    } else if !u.username().is_empty() || u.password().is_some() {
                        c.at(
                            &format!("{p}.url"),
                            format!("{p}.url: carries a user name or password"),
                            "write `url: {secret: \"env:NAME\"}` so the credential stays out of region files",
                        );
                    }
                }
                _ => c.at(
                    &format!("{p}.url"),
                    format!("{p}.url: '{url}' is not an http:// or https:// URL"),
                    "e.g. https://hooks.example.com/packfy",
                ),
            },
            EnvValue::Secret { .. } => {}
        }
        if w.kind == WebhookKind::Slack && w.secret.is_some() {
            c.at(
                &format!("{p}.secret"),
                format!("{p}.secret: Slack webhooks are not signed"),
                "remove `secret`, or use `kind: generic` for a receiver that checks X-Packfy-Signature",
            );
        }
        if w.events.is_empty() {
            c.at(
                &format!("{p}.events"),
                format!("{p}.events: is empty, so nothing would be sent"),
                "list some of start, success, failure, rollback, or leave `events` out for all",
            );
        }
        if w.timeout.0.is_zero() || w.timeout.0 > MAX_WEBHOOK_TIMEOUT {
            c.at(
                &format!("{p}.timeout"),
                format!("{p}.timeout: {} must be above 0 and at most 30s", w.timeout),
                "a notification never holds a deploy for long; e.g. 5s",
            );
        }
    }
}

/// Checks across regions of one environment: one primary, capacity shares summing to 100.
/// `regions` must be all of them: a sum over some is meaningless.
pub fn across(regions: &[(&str, &RegionConfig, &Node)]) -> Vec<Diagnostic> {
    let with: Vec<_> = regions
        .iter()
        .map(|(n, c, t)| (*n, *c, *t, &[][..]))
        .collect();
    across_partial(&with)
}

/// [`across`] over configurations recovered from files with type errors; the fourth item is
/// each region's poisoned paths (see [`super::de::Typed`]).
pub fn across_partial(regions: &[(&str, &RegionConfig, &Node, &[String])]) -> Vec<Diagnostic> {
    let shares_known = regions
        .iter()
        .all(|(.., poisoned)| !poisoned.iter().any(|q| related(q, "capacity_share")));
    let regions: Vec<(&str, &RegionConfig, &Node)> =
        regions.iter().map(|(n, c, t, _)| (*n, *c, *t)).collect();
    let mut out = Vec::new();
    let primaries: Vec<_> = regions.iter().filter(|(_, c, _)| c.primary).collect();
    if primaries.len() > 1 {
        let names: Vec<&str> = primaries.iter().map(|(n, ..)| *n).collect();
        for (_, _, tree) in primaries.iter().skip(1) {
            let loc = tree.lookup("primary").map_or(&tree.loc, |n| &n.loc);
            out.push(
                Diagnostic::at(loc, format!("more than one primary region: {}", names.join(", ")))
                    .hint("exactly one region holds the master database; set `primary: false` on the others"),
            );
        }
    }
    let shares: Vec<_> = regions
        .iter()
        .filter_map(|(n, c, t)| c.capacity_share.map(|s| (*n, s, *t)))
        .collect();
    if shares_known && !shares.is_empty() {
        let total: f64 = shares.iter().map(|(_, s, _)| s).sum();
        let missing: Vec<&str> = regions
            .iter()
            .filter(|(_, c, _)| c.capacity_share.is_none())
            .map(|(n, ..)| *n)
            .collect();
        let (_, _, tree) = shares[0];
        let loc = tree.lookup("capacity_share").map_or(&tree.loc, |n| &n.loc);
        let detail: Vec<String> = shares.iter().map(|(n, s, _)| format!("{n} {s}")).collect();
        if (total - 100.0).abs() > 1e-6 {
            out.push(
                Diagnostic::at(loc, format!("capacity shares sum to {total}%, not 100%"))
                    .hint(format!("shares: {}", detail.join(", "))),
            );
        }
        if !missing.is_empty() {
            out.push(
                Diagnostic::at(
                    loc,
                    format!("regions without a capacity_share while others have one: {}", missing.join(", ")),
                )
                .hint("give every region a share; `capacity_share: 0` for a region that takes no traffic"),
            );
        }
    }
    out
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "the region defines no services".into()
    } else {
        format!("services are: {}", v.join(", "))
    }
}

/// Why an image repository (`image:`, without its tag) is not a valid reference, after the
/// grammar of distribution/reference: an optional registry host (`host[:port]/`), then
/// path components of lower-case letters and digits joined by `.`, `_`, `__` or dashes.
/// A part with `${…}` is expanded where the deploy runs and is not checked here.
pub fn image_repository_problem(image: &str) -> Option<String> {
    if image.chars().any(char::is_whitespace) {
        return Some("it contains a space".into());
    }
    if image.ends_with(':') {
        return Some("its tag is empty".into());
    }
    let name = image.split(['@']).next().unwrap_or(image);
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 {
        let host = parts[0];
        if host.contains('.') || host.contains(':') || host == "localhost" || host.contains("${") {
            parts.remove(0);
        }
    }
    // the last part may carry a tag: that is another rule's message
    if let Some(last) = parts.last_mut() {
        *last = last.split(':').next().unwrap_or(last);
    }
    for part in parts {
        if part.contains("${") {
            continue;
        }
        if part.is_empty() {
            return Some("a part of its path is empty".into());
        }
        if part.bytes().any(|b| b.is_ascii_uppercase()) {
            return Some(format!(
                "the repository part '{part}' has upper-case letters"
            ));
        }
        let ok_chars = part.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        let ends_ok =
            |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok_chars || !ends_ok(part.bytes().next()) || !ends_ok(part.bytes().last()) {
            return Some(format!(
                "the repository part '{part}' may only hold lower-case letters, digits and . _ - between them"
            ));
        }
    }
    None
}

/// Whether a version can be an image tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `target.docker.host` / `hosts`: Docker endpoints, one spelling of the host list, no host
/// twice.
fn docker_hosts(c: &mut Ctx, d: &DockerTarget, host_written: bool) {
    let list: Vec<(String, &str)> = if d.hosts.is_empty() {
        vec![("target.docker.host".into(), d.host.as_str())]
    } else {
        d.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (format!("target.docker.hosts.{i}"), h.as_str()))
            .collect()
    };
    if host_written && !d.hosts.is_empty() {
        c.report(
            "target.docker.hosts",
            &["target.docker.host", "target.docker.hosts"],
            "target.docker: both host and hosts are set".into(),
            "`host: X` is the shorthand for `hosts: [X]`; keep one of them",
        );
    }
    let mut seen: Vec<String> = Vec::new();
    for (path, raw) in &list {
        // `${VAR}` endpoints are checked once expanded; an unset variable is a deploy-time error.
        let host = super::expand_env(raw);
        let ok = host.is_empty()
            || ["unix://", "tcp://", "ssh://", "npipe://"]
                .iter()
                .any(|p| host.starts_with(p));
        if !ok {
            c.at(
                path,
                format!("{path}: '{raw}' is not a Docker endpoint"),
                "use unix:///var/run/docker.sock, tcp://HOST:2376 or ssh://USER@HOST",
            );
        } else if seen.contains(&host) {
            c.at(
                path,
                format!("{path}: '{raw}' is listed twice"),
                "each host is one engine; list it once",
            );
        }
        seen.push(host);
    }
}

/// `traffic.haproxy.runtime_api`: one address or a list of them, none empty, none twice.
fn runtime_apis(c: &mut Ctx, apis: &super::model::RuntimeApis) {
    const PATH: &str = "traffic.haproxy.runtime_api";
    let list = apis.addresses();
    if list.len() <= 1 {
        if apis.is_empty() {
            let written = c.tree.lookup(PATH).is_some();
            c.report(
                if written { PATH } else { "traffic.haproxy" },
                &[PATH],
                if list.is_empty() && written {
                    format!("{PATH}: the list is empty")
                } else {
                    format!("{PATH} is not set")
                },
                "the path of HAProxy's `stats socket ... level admin`, HOST:PORT or ssh://USER@HOST/SOCKET; a list names several load balancers",
            );
        }
        return;
    }
    let mut seen: Vec<String> = Vec::new();
    for (i, raw) in list.iter().enumerate() {
        let path = format!("{PATH}.{i}");
        // `${VAR}` addresses are compared once expanded.
        let addr = super::expand_env(raw).trim().to_string();
        if addr.is_empty() {
            c.at(
                &path,
                format!("{path}: an empty address"),
                "each entry is one load balancer's Runtime API",
            );
        } else if seen.contains(&addr) {
            c.at(
                &path,
                format!("{path}: '{raw}' is listed twice"),
                "each load balancer is listed once; every one gets the same changes",
            );
        }
        seen.push(addr);
    }
}

pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests;
