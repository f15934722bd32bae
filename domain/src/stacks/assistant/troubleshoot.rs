//! Troubleshooting by log patterns: each rule recognizes its cause in lines of a log, takes
//! what it can from them (the port, the module, the image, the path) and answers concrete
//! fixes.
//!
//! Rules: `port_in_use`, `out_of_memory`, `missing_module`, `connection_refused`,
//! `image_not_found`, `permission_denied`. A rule's confidence is its strongest pattern's
//! weight, a little more for each further line it matches (at most 0.99).

use serde::{Deserialize, Serialize};

use super::catalog;

/// One cause found in a log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// What went wrong, for a person: `Port 3000 is already in use`.
    pub cause: String,
    /// The rule that found it: `port_in_use`…
    pub rule: String,
    /// The lines that show it (at most three, trimmed and cut at 300 characters).
    pub evidence: Vec<String>,
    /// What to do, most likely first.
    pub fixes: Vec<String>,
    /// How sure the rule is, 0 to 1.
    pub confidence: f64,
}

/// Most evidence lines per diagnosis.
const MAX_EVIDENCE: usize = 3;
/// Longest evidence line, in characters.
const MAX_EVIDENCE_CHARS: usize = 300;

/// How a pattern matches a line.
#[derive(Clone, Copy)]
enum Pattern {
    /// Contains this text, case aside.
    Text(&'static str),
    /// Contains this word, case kept (`Killed`).
    Word(&'static str),
    /// Contains all of these, case aside.
    All(&'static [&'static str]),
    /// Says a process exited with code 137 (SIGKILL).
    Exit137,
}

impl Pattern {
    fn matches(self, line: &str, lower: &str) -> bool {
        match self {
            Self::Text(text) => lower.contains(text),
            Self::Word(word) => contains_word(line, word),
            Self::All(texts) => texts.iter().all(|t| lower.contains(t)),
            Self::Exit137 => {
                contains_word(lower, "137")
                    && (lower.contains("exit")
                        || lower.contains("code")
                        || lower.contains("status"))
            }
        }
    }
}

/// Whether `word` occurs in `line` between non-alphanumeric characters.
fn contains_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

struct Rule {
    rule: &'static str,
    patterns: &'static [(Pattern, f64)],
    explain: fn(&[&str]) -> (String, Vec<String>),
}

const RULES: &[Rule] = &[
    Rule {
        rule: "port_in_use",
        patterns: &[
            (Pattern::Text("eaddrinuse"), 0.95),
            (Pattern::Text("port is already allocated"), 0.95),
            (Pattern::Text("address already in use"), 0.9),
            (Pattern::All(&["port", "already in use"]), 0.85),
        ],
        explain: port_in_use,
    },
    Rule {
        rule: "out_of_memory",
        patterns: &[
            (Pattern::Text("oomkilled"), 0.95),
            (Pattern::Text("javascript heap out of memory"), 0.95),
            (Pattern::Text("outofmemoryerror"), 0.95),
            (Pattern::Text("out of memory"), 0.9),
            (Pattern::Text("oom-kill"), 0.9),
            (Pattern::Text("cannot allocate memory"), 0.8),
            (Pattern::Word("MemoryError"), 0.8),
            (Pattern::Exit137, 0.7),
            (Pattern::Word("Killed"), 0.6),
        ],
        explain: out_of_memory,
    },
    Rule {
        rule: "missing_module",
        patterns: &[
            (Pattern::Text("modulenotfounderror"), 0.95),
            (Pattern::Text("no module named"), 0.95),
            (Pattern::Text("cannot find module"), 0.95),
            (Pattern::Text("err_module_not_found"), 0.95),
            (Pattern::Text("cannot load such file"), 0.85),
        ],
        explain: missing_module,
    },
    Rule {
        rule: "connection_refused",
        patterns: &[
            (Pattern::Text("econnrefused"), 0.9),
            (Pattern::Text("connection refused"), 0.85),
            (Pattern::Text("could not connect to server"), 0.85),
            (Pattern::Text("can't connect to mysql server"), 0.8),
        ],
        explain: connection_refused,
    },
    Rule {
        rule: "image_not_found",
        patterns: &[
            (Pattern::Text("pull access denied"), 0.95),
            (Pattern::Text("manifest unknown"), 0.95),
            (Pattern::All(&["manifest for", "not found"]), 0.95),
            (Pattern::Text("not found: manifest"), 0.9),
            (Pattern::Text("repository does not exist"), 0.9),
            (Pattern::Text("errimagepull"), 0.85),
            (Pattern::Text("imagepullbackoff"), 0.85),
        ],
        explain: image_not_found,
    },
    Rule {
        rule: "permission_denied",
        patterns: &[
            (Pattern::Text("eacces"), 0.9),
            (Pattern::Text("permission denied"), 0.85),
            (Pattern::Text("read-only file system"), 0.85),
            (Pattern::Text("operation not permitted"), 0.8),
            (Pattern::Word("EPERM"), 0.8),
        ],
        explain: permission_denied,
    },
];

/// The causes a log shows, most likely first; an empty list when none is recognized.
pub fn troubleshoot(log: &str) -> Vec<Diagnosis> {
    let lines: Vec<(&str, String)> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| (l, l.to_lowercase()))
        .collect();
    let mut diagnoses: Vec<Diagnosis> = RULES
        .iter()
        .filter_map(|rule| {
            let mut strongest = 0.0_f64;
            let mut matched: Vec<&str> = Vec::new();
            for (line, lower) in &lines {
                let weight = rule
                    .patterns
                    .iter()
                    .filter(|(p, _)| p.matches(line, lower))
                    .map(|(_, w)| *w)
                    .fold(0.0, f64::max);
                if weight > 0.0 {
                    strongest = strongest.max(weight);
                    matched.push(line);
                }
            }
            if matched.is_empty() {
                return None;
            }
            let more = (matched.len() - 1).min(10) as f64 * 0.01;
            let confidence = ((strongest + more).min(0.99) * 100.0).round() / 100.0;
            let (cause, fixes) = (rule.explain)(&matched);
            let mut evidence: Vec<String> = Vec::new();
            for line in &matched {
                let cut: String = line.chars().take(MAX_EVIDENCE_CHARS).collect();
                if !evidence.contains(&cut) {
                    evidence.push(cut);
                }
                if evidence.len() == MAX_EVIDENCE {
                    break;
                }
            }
            Some(Diagnosis {
                cause,
                rule: rule.rule.to_owned(),
                evidence,
                fixes,
                confidence,
            })
        })
        .collect();
    // Stable: equal confidences keep the rules' order.
    diagnoses.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    diagnoses
}

/// The port a line names: `:3000`, `port 5432`, `('0.0.0.0', 8000)`; the last one found.
fn port_in(line: &str) -> Option<u16> {
    let bytes = line.as_bytes();
    let lower = line.to_ascii_lowercase();
    let mut found = None;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let before = &lower[..start];
        let after = bytes.get(i).copied();
        let named = before.ends_with(':')
            || before.ends_with("port ")
            || (before.ends_with(", ") && after == Some(b')'));
        // Not a piece of an address such as `127.0.0.1` (a dot and a digit follow); a dot that
        // ends a sentence (`redis:6379. Connection refused`) still ends the port.
        let ends = !(after == Some(b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit));
        if named
            && ends
            && let Ok(port) = line[start..i].parse::<u16>()
            && port > 0
        {
            found = Some(port);
        }
    }
    found
}

/// The first quoted text (`'…'` or `"…"`) of a line after `from`.
fn quoted_after<'a>(line: &'a str, from: &str) -> Option<&'a str> {
    let lower = line.to_ascii_lowercase();
    let start = lower.find(from)? + from.len();
    let rest = &line[start..];
    let open = rest.find(['\'', '"', '`'])?;
    let quote = rest[open..].chars().next()?;
    let inner = &rest[open + 1..];
    let close = inner.find(quote)?;
    Some(&inner[..close]).filter(|s| !s.is_empty())
}

fn port_in_use(lines: &[&str]) -> (String, Vec<String>) {
    match lines.iter().find_map(|l| port_in(l)) {
        Some(port) => (
            format!("Port {port} is already in use"),
            vec![
                format!(
                    "find what holds port {port} on the host (`ss -ltnp 'sport = :{port}'` or \
                     `lsof -i :{port}`) and stop it"
                ),
                format!(
                    "or publish the service on another host port: \"{}:{port}\" in its ports \
                     (the container keeps listening on {port})",
                    port.saturating_add(1)
                ),
                "if an old container of this stack still holds it, `docker compose down` \
                 before starting again"
                    .to_owned(),
            ],
        ),
        None => (
            "A port is already in use".to_owned(),
            vec![
                "find what holds the port on the host (`ss -ltnp`) and stop it".to_owned(),
                "or publish the service on another host port".to_owned(),
            ],
        ),
    }
}

fn out_of_memory(lines: &[&str]) -> (String, Vec<String>) {
    let all = lines.join("\n").to_lowercase();
    let mut fixes = Vec::new();
    let cause = if all.contains("javascript heap out of memory") {
        fixes.push(
            "Node.js stops at its own heap size before the container's limit: set \
             NODE_OPTIONS=--max-old-space-size to about 75% of the memory limit, in MB"
                .to_owned(),
        );
        "Node.js ran out of heap memory"
    } else if all.contains("outofmemoryerror") {
        fixes.push(
            "the JVM's heap is too small for the load: size it from the limit \
             (JAVA_TOOL_OPTIONS=-XX:MaxRAMPercentage=75) and raise the limit if needed"
                .to_owned(),
        );
        "The JVM ran out of heap memory"
    } else {
        "The process ran out of memory and was killed"
    };
    fixes.push(
        "raise the service's memory limit (deploy.resources.limits.memory) above its peak: \
         `docker stats` shows the usage"
            .to_owned(),
    );
    fixes.push(
        "if usage grows until the kill whatever the limit, look for a leak (caches without \
         bounds, too many workers for the memory)"
            .to_owned(),
    );
    if all.contains("137") || all.contains("killed") {
        fixes.push(
            "exit code 137 is SIGKILL: `docker inspect --format '{{.State.OOMKilled}}' \
             <container>` says whether the memory limit did it"
                .to_owned(),
        );
    }
    (cause.to_owned(), fixes)
}

/// Python modules whose distribution has another name.
const PYTHON_DISTRIBUTIONS: &[(&str, &str)] = &[
    ("yaml", "PyYAML"),
    ("cv2", "opencv-python"),
    ("PIL", "Pillow"),
    ("sklearn", "scikit-learn"),
    ("bs4", "beautifulsoup4"),
    ("dotenv", "python-dotenv"),
    ("jwt", "PyJWT"),
    ("psycopg2", "psycopg2-binary"),
    ("MySQLdb", "mysqlclient"),
    ("dateutil", "python-dateutil"),
];

fn missing_module(lines: &[&str]) -> (String, Vec<String>) {
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if let Some(module) = quoted_after(line, "no module named") {
            let top = module.split('.').next().unwrap_or(module);
            let distribution = PYTHON_DISTRIBUTIONS
                .iter()
                .find(|(m, _)| *m == top)
                .map_or(top, |(_, d)| d);
            return (
                format!("Python module {module} is missing"),
                vec![
                    format!(
                        "add {distribution} to requirements.txt (or pyproject.toml) and rebuild \
                         the image: `docker compose build`"
                    ),
                    "if it is listed, the image runs another Python than pip installed into: \
                     check the Dockerfile's pip and the command"
                        .to_owned(),
                ],
            );
        }
        if lower.contains("cannot find module") || lower.contains("err_module_not_found") {
            let Some(module) = quoted_after(line, "module") else {
                continue;
            };
            if module.starts_with('.') || module.starts_with('/') {
                return (
                    format!("File {module} is missing"),
                    vec![
                        format!(
                            "{module} is not in the image: check the Dockerfile's COPY, the \
                             working_dir and the command"
                        ),
                        "in development, a bind mount over the app replaces what the image \
                         holds: mount the source where the command expects it"
                            .to_owned(),
                    ],
                );
            }
            // `@scope/name/sub` → `@scope/name`; `name/sub` → `name`.
            let mut parts = module.split('/');
            let package = match (parts.next(), parts.next()) {
                (Some(scope), Some(name)) if scope.starts_with('@') => format!("{scope}/{name}"),
                (Some(name), _) => name.to_owned(),
                _ => module.to_owned(),
            };
            return (
                format!("Node.js module {package} is missing"),
                vec![
                    format!(
                        "`npm install {package}` so that it is in package.json's dependencies \
                         (not devDependencies if production installs omit them), then rebuild \
                         the image"
                    ),
                    "in development, a bind mount over /app hides the image's node_modules: \
                     add an anonymous volume for /app/node_modules"
                        .to_owned(),
                ],
            );
        }
        if let Some(start) = lower.find("cannot load such file -- ") {
            let file = line[start + "cannot load such file -- ".len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_end_matches([')', ',']);
            let gem = file.split('/').next().unwrap_or(file);
            return (
                format!("Ruby library {file} is missing"),
                vec![format!(
                    "add the gem that provides {gem} to the Gemfile, `bundle install`, and \
                     rebuild the image"
                )],
            );
        }
    }
    (
        "A module is missing".to_owned(),
        vec![
            "install the missing dependency in the image (requirements.txt, package.json, \
             Gemfile…) and rebuild it"
                .to_owned(),
        ],
    )
}

fn connection_refused(lines: &[&str]) -> (String, Vec<String>) {
    let port = lines.iter().find_map(|l| port_in(l));
    let loopback = lines.iter().any(|l| {
        let lower = l.to_ascii_lowercase();
        lower.contains("127.0.0.1") || lower.contains("localhost") || lower.contains("[::1]")
    });
    let service = port.and_then(catalog::by_port);
    let target = match (service, port) {
        (Some(s), Some(p)) => format!("{} ({}:{p})", s.key, s.key),
        (None, Some(p)) => format!("the service on port {p}"),
        _ => "the service it connects to".to_owned(),
    };
    let mut fixes = Vec::new();
    if loopback {
        fixes.push(format!(
            "inside a container, localhost is the container itself: reach {target} by its \
             service name"
        ));
    }
    fixes.push(format!(
        "make the app wait until {target} is ready: depends_on with condition: \
         service_healthy, and a health check on it"
    ));
    fixes.push(format!(
        "check that {target} is running, listens on that port on all interfaces, and shares \
         a network with the app"
    ));
    (format!("Connection refused by {target}"), fixes)
}

fn image_not_found(lines: &[&str]) -> (String, Vec<String>) {
    let image = lines.iter().find_map(|line| {
        let lower = line.to_ascii_lowercase();
        for marker in ["pull access denied for ", "manifest for "] {
            if let Some(at) = lower.find(marker) {
                let rest = &line[at + marker.len()..];
                let end = rest.find([',', ' ']).unwrap_or(rest.len());
                return Some(rest[..end].to_owned()).filter(|s| !s.is_empty());
            }
        }
        quoted_after(line, "reference").map(str::to_owned)
    });
    let mut fixes = Vec::new();
    let cause = match &image {
        Some(image) => {
            fixes.push(format!(
                "check the image's name and tag: {image} does not exist, or is private"
            ));
            let reference = super::document::ImageRef::parse(image);
            if let Some(tag) = catalog::stable_tag(reference.repository()) {
                fixes.push(format!("a tag that exists: {}:{tag}", reference.name));
            }
            format!("Image {image} was not found or is not accessible")
        }
        None => {
            fixes.push("check the image's name and tag".to_owned());
            "An image was not found or is not accessible".to_owned()
        }
    };
    fixes.push(
        "for a private registry, `docker login <registry>` on the machine that pulls".to_owned(),
    );
    fixes.push(
        "an image the stack builds (build:) must be built first (`docker compose build`), and \
         pushed before `docker stack deploy`"
            .to_owned(),
    );
    (cause, fixes)
}

fn permission_denied(lines: &[&str]) -> (String, Vec<String>) {
    let all = lines.join("\n").to_lowercase();
    // Binding a low port without the capability.
    if let Some(port) = lines
        .iter()
        .filter(|l| l.to_ascii_lowercase().contains("bind"))
        .find_map(|l| port_in(l))
        .filter(|p| *p < 1024)
    {
        return (
            format!("Binding port {port} was denied"),
            vec![
                format!(
                    "ports below 1024 need NET_BIND_SERVICE: add it to cap_add, or listen on a \
                     port above 1024 and publish \"{port}:<that port>\""
                ),
                "running as non-root: use the image's unprivileged variant if it has one"
                    .to_owned(),
            ],
        );
    }
    let path = lines.iter().find_map(|line| {
        for quote in ['\'', '"'] {
            let mut rest = *line;
            while let Some(open) = rest.find(quote) {
                let inner = &rest[open + 1..];
                let Some(close) = inner.find(quote) else {
                    break;
                };
                if inner[..close].starts_with('/') {
                    return Some(inner[..close].to_owned());
                }
                rest = &inner[close + 1..];
            }
        }
        // `/path: Permission denied`
        let lower = line.to_ascii_lowercase();
        let at = lower
            .find(": permission denied")
            .or_else(|| lower.find(": read-only file system"))?;
        line[..at]
            .rsplit([' ', ':'])
            .next()
            .filter(|p| p.starts_with('/'))
            .map(str::to_owned)
    });
    let place = path.clone().unwrap_or_else(|| "the path".to_owned());
    if all.contains("read-only file system") {
        let dir = path.as_deref().map_or_else(
            || "the directory it writes to".to_owned(),
            |p| match p.rsplit_once('/') {
                Some((parent, file)) if file.contains('.') && !parent.is_empty() => {
                    parent.to_owned()
                }
                _ => p.to_owned(),
            },
        );
        return (
            format!("The root filesystem is read-only where the process writes {place}"),
            vec![
                format!("add a tmpfs for {dir} (tmpfs: [{dir}]), or a volume if it must persist"),
                "keep read_only: true: only the paths the process writes need to be writable"
                    .to_owned(),
            ],
        );
    }
    let mut fixes = vec![
        format!(
            "the container's user cannot use {place}: give the volume or directory to that user \
             (chown it to the user's uid in the Dockerfile or an init step), or run as its owner"
        ),
        "a bind mount keeps the host's owners: match the container's user to them (user: \
         \"<uid>:<gid>\")"
            .to_owned(),
    ];
    if all.contains("operation not permitted") || all.contains("eperm") {
        fixes.push(
            "a dropped capability or no-new-privileges stops it (switching users, changing \
             owners): add back the one capability it needs (CHOWN, SETUID, SETGID…)"
                .to_owned(),
        );
    }
    (format!("Permission denied on {place}"), fixes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(log: &str, rule: &str) -> Diagnosis {
        let diagnoses = troubleshoot(log);
        assert!(!diagnoses.is_empty(), "nothing found in {log:?}");
        assert_eq!(diagnoses[0].rule, rule, "{diagnoses:#?}");
        diagnoses[0].clone()
    }

    #[test]
    fn a_node_port_in_use_names_the_port_in_a_fix() {
        let d = only(
            "> app@1.0.0 start\nError: listen EADDRINUSE: address already in use :::3000\n    at Server.setupListenHandle",
            "port_in_use",
        );
        assert_eq!(d.cause, "Port 3000 is already in use");
        assert!(d.fixes.iter().any(|f| f.contains("3000")), "{:?}", d.fixes);
        assert!(
            d.fixes.iter().any(|f| f.contains("\"3001:3000\"")),
            "{:?}",
            d.fixes
        );
        assert_eq!(
            d.evidence,
            ["Error: listen EADDRINUSE: address already in use :::3000"]
        );
        assert!(d.confidence >= 0.9);
    }

    #[test]
    fn docker_and_go_port_messages_name_their_ports() {
        let docker = only(
            "Error response from daemon: driver failed programming external connectivity on endpoint web: Bind for 0.0.0.0:5432 failed: port is already allocated",
            "port_in_use",
        );
        assert_eq!(docker.cause, "Port 5432 is already in use");
        let go = only(
            "2024/05/01 12:00:01 listen tcp 0.0.0.0:8080: bind: address already in use",
            "port_in_use",
        );
        assert_eq!(go.cause, "Port 8080 is already in use");
        let python = only(
            "ERROR:    [Errno 98] error while attempting to bind on address ('0.0.0.0', 8000): address already in use",
            "port_in_use",
        );
        assert_eq!(python.cause, "Port 8000 is already in use");
    }

    #[test]
    fn an_oom_kill_is_out_of_memory() {
        for log in [
            "web-1 exited with code 137",
            "State: OOMKilled=true",
            "Killed",
            "fatal error: runtime: out of memory",
        ] {
            let d = only(log, "out_of_memory");
            assert!(d.fixes.iter().any(|f| f.contains("limits.memory")), "{log}");
        }
        let node = only(
            "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
            "out_of_memory",
        );
        assert_eq!(node.cause, "Node.js ran out of heap memory");
        assert!(node.fixes[0].contains("--max-old-space-size"));
    }

    #[test]
    fn a_missing_python_module_names_its_distribution() {
        let d = only(
            "Traceback (most recent call last):\n  File \"/app/manage.py\", line 3\nModuleNotFoundError: No module named 'yaml'",
            "missing_module",
        );
        assert_eq!(d.cause, "Python module yaml is missing");
        assert!(d.fixes[0].contains("PyYAML"), "{:?}", d.fixes);
        let dotted = only(
            "ImportError: No module named 'django.contrib.foo'",
            "missing_module",
        );
        assert!(
            dotted.fixes[0].contains("add django to"),
            "{:?}",
            dotted.fixes
        );
    }

    #[test]
    fn a_missing_node_module_names_its_package() {
        let d = only(
            "Error: Cannot find module 'express'\nRequire stack:\n- /app/server.js",
            "missing_module",
        );
        assert_eq!(d.cause, "Node.js module express is missing");
        assert!(d.fixes[0].contains("npm install express"));
        let scoped = only(
            "Error: Cannot find module '@nestjs/core/dist/x'",
            "missing_module",
        );
        assert!(scoped.fixes[0].contains("npm install @nestjs/core"));
        let file = only(
            "Error: Cannot find module '/app/server.js'",
            "missing_module",
        );
        assert_eq!(file.cause, "File /app/server.js is missing");
    }

    #[test]
    fn a_refused_connection_to_localhost_says_to_use_the_service_name() {
        let d = only(
            "psycopg2.OperationalError: connection to server at \"localhost\" (127.0.0.1), port 5432 failed: Connection refused",
            "connection_refused",
        );
        assert_eq!(d.cause, "Connection refused by postgres (postgres:5432)");
        assert!(d.fixes[0].contains("localhost is the container itself"));
        let node = only(
            "Error: Redis connection to redis:6379 failed - connect ECONNREFUSED",
            "connection_refused",
        );
        assert_eq!(node.cause, "Connection refused by redis (redis:6379)");
        assert!(node.fixes[0].contains("service_healthy"));
        // redis-py's form: the port ends a sentence.
        let python = only(
            "redis.exceptions.ConnectionError: Error 111 connecting to redis:6379. Connection refused.",
            "connection_refused",
        );
        assert_eq!(python.cause, "Connection refused by redis (redis:6379)");
        only(
            "could not connect to server: No such file or directory",
            "connection_refused",
        );
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_named() {
        let d = only(
            "Error response from daemon: pull access denied for acme/web, repository does not exist or may require 'docker login'",
            "image_not_found",
        );
        assert_eq!(d.cause, "Image acme/web was not found or is not accessible");
        let known = only(
            "Error response from daemon: manifest for postgres:99 not found: manifest unknown: manifest unknown",
            "image_not_found",
        );
        assert!(
            known.fixes.iter().any(|f| f.contains("postgres:16.4")),
            "{:?}",
            known.fixes
        );
    }

    #[test]
    fn permission_denied_names_the_path_or_the_low_port() {
        let d = only(
            "mkdir: cannot create directory '/data/db': Permission denied",
            "permission_denied",
        );
        assert_eq!(d.cause, "Permission denied on /data/db");
        assert!(d.fixes[0].contains("chown"));
        let nginx = only(
            "nginx: [emerg] bind() to 0.0.0.0:80 failed (13: Permission denied)",
            "permission_denied",
        );
        assert_eq!(nginx.cause, "Binding port 80 was denied");
        let read_only = only(
            "nginx: [emerg] open() \"/var/run/nginx.pid\" failed (30: Read-only file system)",
            "permission_denied",
        );
        assert!(
            read_only.fixes[0].contains("tmpfs for /var/run"),
            "{:?}",
            read_only.fixes
        );
        only(
            "Error: EACCES: permission denied, open '/app/data.json'",
            "permission_denied",
        );
        only(
            "chown: /var/lib/x: Operation not permitted",
            "permission_denied",
        );
    }

    #[test]
    fn an_unrelated_log_gives_no_diagnosis() {
        assert!(troubleshoot("").is_empty());
        assert!(
            troubleshoot(
                "Starting development server at http://0.0.0.0:8000/\nWatching for file changes with StatReloader\nGET / 200 12ms\nworker killed nobody"
            )
            .is_empty()
        );
    }

    #[test]
    fn several_causes_are_ordered_by_confidence_with_at_most_three_lines_each() {
        let log = "Connection refused\nConnection refused\nConnection refused\nConnection refused\nError: listen EADDRINUSE: address already in use :::3000";
        let diagnoses = troubleshoot(log);
        let rules: Vec<&str> = diagnoses.iter().map(|d| d.rule.as_str()).collect();
        assert_eq!(rules, ["port_in_use", "connection_refused"]);
        assert_eq!(diagnoses[1].evidence, ["Connection refused"]);
        assert!(diagnoses[0].confidence > diagnoses[1].confidence);
        let many: String = (0..10)
            .map(|i| format!("web-{i} exited with code 137\n"))
            .collect();
        assert_eq!(troubleshoot(&many)[0].evidence.len(), 3);
    }
}
